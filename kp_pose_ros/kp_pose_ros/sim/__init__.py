"""The data engine: pybullet scenes (robot arm, BOP objects on tables, procedural category and articulated
instances) drawn by a PBR renderer with real-photo randomisation, depth sensor and colour camera models, and the
writers that turn them into training data; the sim_camera node publishes from the same scenes."""
