"""ROS-free core: model loading, preprocessing, zero-shot engine, captioner, visualisation.

Nothing under this package imports rclpy, so it runs from the source tree
(`PYTHONPATH=av_scene_vlm`) on machines without ROS.
"""
