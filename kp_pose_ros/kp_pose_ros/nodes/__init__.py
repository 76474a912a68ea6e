"""Thin rclpy nodes: messages in, ``core`` calls, messages out."""
