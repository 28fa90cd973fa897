"""ament_python package av_scene_vlm (nodes, ROS-free core, CLI)."""

from setuptools import find_packages, setup

PACKAGE = "av_scene_vlm"

# Installed to share/<pkg>/...; listed explicitly so a missing file is a test failure, not a silent skip.
DATA_FILES = [
    ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
    ("share/" + PACKAGE, ["package.xml"]),
    (
        "share/" + PACKAGE + "/config",
        ["config/scene_vlm.yaml", "config/scene_events.yaml", "config/fastdds_local_large_frames.xml"],
    ),
    ("share/" + PACKAGE + "/launch", ["launch/scene_vlm.launch.py", "launch/bag_replay.launch.py"]),
    ("share/" + PACKAGE + "/rviz", ["rviz/scene_vlm.rviz"]),
]

CONSOLE_SCRIPTS = [
    "av-scene-vlm = av_scene_vlm.cli.main:main",
    # Nodes enter through `signals` so that SIGINT/SIGTERM are handled from before their imports.
    "clip_node = av_scene_vlm.ros.signals:clip_node",
    "caption_node = av_scene_vlm.ros.signals:caption_node",
    "scene_vlm = av_scene_vlm.ros.signals:scene_vlm",
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
    # requirements/constraints.txt at the repository root. Each minimum is a version the code was run
    # with: scripts/check_dependency_floors.sh installs exactly these and runs the ROS-free tests
    # (README, "Dependencies"). Why each is what it is:
    install_requires=[
        "numpy>=1.24",
        "torch>=2.4",  # transformers 5's Qwen2.5-VL calls torch.is_autocast_enabled(device) (2.4)
        "torchvision>=0.19",  # torch 2.4's pair; Qwen2.5-VL's processor needs it (captions are on)
        "transformers>=5.0",  # from_pretrained(dtype=...) (4.56); the random-weight builders (demo
        # fallback, tests, benchmarks) build tokenizers from in-memory vocabularies (5.0)
        "huggingface_hub>=1.3",  # imported directly (cache lookup); transformers 5.0's own minimum;
        # installs the `hf` command the error messages name
        "tokenizers>=0.22.1",  # imported by the random-weight builders; 0.22.0 needs huggingface_hub < 1
        "pillow>=10.0.1",  # transformers' image processors (its vision minimum)
        "opencv-python-headless>=4.6.0.66",  # the first 4.6 wheel (its versions have a 4th part)
        "pyyaml>=6.0.1",  # first release with Python 3.11 wheels
        "matplotlib>=3.6",  # Axes.set_yticks(ticks, labels) (3.5); first with Python 3.11 wheels
        "tqdm>=4.60",
        "rosbags>=0.11.1",  # StoragePlugin and Writer(storage_plugin=) (0.10.9); reading on the
        # prefetch thread (0.11.1: 0.11.0 and older tie the sqlite3 connection to the opening thread)
    ],
    extras_require={
        "test": ["pytest"],
        # `av-scene-vlm index` / `search --db` (LanceDB) and `index --ray` (Ray Data).
        "fleet": ["lancedb>=0.25", "pyarrow>=16", "ray[data]>=2.40"],
        # The onnxruntime image-tower backend and `av-scene-vlm export` (onnxruntime-gpu for CUDA/TensorRT).
        # Floors are the versions it was run with (torch 2.14); where export fails, backend auto stays torch.
        "onnx": ["onnxruntime>=1.31", "onnx>=1.23", "onnxscript>=0.7"],
    },
    zip_safe=True,
    maintainer="av_scene_vlm maintainers",
    maintainer_email="maintainers@av-scene-vlm.dev",
    description="CLIP zero-shot scene classification, similarity, heatmaps and Qwen2.5-VL captions (ROS 2).",
    license="Apache-2.0",
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
)
