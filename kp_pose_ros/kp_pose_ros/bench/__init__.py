"""Benchmarks (`kp-pose bench <name>`, `make bench`): speed and accuracy figures written to results/<name>.json."""
