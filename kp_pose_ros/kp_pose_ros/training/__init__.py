"""Training code (torch). Never imported by a node."""
