"""Command-line tools (ROS-free): classify, plot, similarity, caption, bag, search, export."""
