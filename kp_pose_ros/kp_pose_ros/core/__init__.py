"""Pure array code: no rclpy, no messages. Everything here is testable with numpy arrays."""
