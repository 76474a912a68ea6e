"""One definition per pipeline (nodes, parameters, remappings), shared by launch files and the in-process runner."""
