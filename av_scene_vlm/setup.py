"""ament_python package av_scene_vlm (nodes, ROS-free core, CLI)."""

from setuptools import find_packages, setup

PACKAGE = "av_scene_vlm"

# Installed to share/<pkg>/...; listed explicitly so a missing file is a test failure, not a silent skip.
DATA_FILES = [
    ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
    ("share/" + PACKAGE, ["package.xml"]),
    ("share/" + PACKAGE + "/config", ["config/scene_vlm.yaml", "config/fastdds_local_large_frames.xml"]),
    ("share/" + PACKAGE + "/launch", ["launch/scene_vlm.launch.py", "launch/bag_replay.launch.py"]),
    ("share/" + PACKAGE + "/rviz", ["rviz/scene_vlm.rviz"]),
]

CONSOLE_SCRIPTS = [
    "av-scene-vlm = av_scene_vlm.cli.main:main",
    "clip_node = av_scene_vlm.ros.clip_node:main",
    "caption_node = av_scene_vlm.ros.caption_node:main",
    "scene_vlm = av_scene_vlm.ros.scene_vlm:main",
]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    # The random-weight models' architectures (tests, demo, benchmarks) are data files.
    package_data={PACKAGE + ".random_weights": ["model_configs/*.json"]},
    data_files=DATA_FILES,
    python_requires=">=3.10",  # Humble (Ubuntu 22.04) runs Python 3.10; test_python_compat.py
    # Loose ranges: a vehicle brings its own CUDA/Jetson torch; dev/CI pins live in
    # requirements/constraints.txt at the repository root.
    install_requires=[
        "numpy>=1.24",
        "torch>=2.1",
        "transformers>=4.49",
        "pillow>=9",
        "opencv-python-headless>=4.6",
        "pyyaml>=6",
        "matplotlib>=3.6",
        "tqdm>=4.60",
        "rosbags>=0.10",
    ],
    extras_require={"test": ["pytest"], "caption": ["torchvision>=0.16"]},
    zip_safe=True,
    maintainer="av_scene_vlm maintainers",
    maintainer_email="maintainers@av-scene-vlm.dev",
    description="CLIP zero-shot scene classification, similarity, heatmaps and Qwen2.5-VL captions (ROS 2).",
    license="Apache-2.0",
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
)
