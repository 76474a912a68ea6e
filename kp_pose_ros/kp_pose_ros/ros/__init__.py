"""Conversions between ROS messages and the arrays ``core`` works on, and builders for the messages nodes publish."""
