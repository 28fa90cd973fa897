"""Thin rclpy adapters around the ROS-free core."""
