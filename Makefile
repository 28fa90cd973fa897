# Two commands on a fresh Debian 12 / Python 3.11 machine with no ROS install:
#   make test   set up the venv (pinned), build av_scene_vlm_msgs into it, add the launch system, run the suite
#   make demo   set up, then run the classifier node on the bundled drive and summarise what it published
# ROS 2 comes from PyPI wheels: Kilted by default (.venv); `make test ROS_DISTRO=jazzy` runs Jazzy (.venv-jazzy).
# Set-up steps are stamped per venv: a second run skips them and reaches pytest within seconds.

PYTHON     ?= python3
ROS_DISTRO ?= kilted
DISTROS    := kilted jazzy
ifeq ($(filter $(ROS_DISTRO),$(DISTROS)),)
$(error ROS_DISTRO=$(ROS_DISTRO): this venv route has ROS 2 PyPI wheels for $(DISTROS) only \
  (e.g. make test ROS_DISTRO=jazzy); with a ROS install use the colcon workspace in README.md)
endif
export ROS_DISTRO
VENV_kilted := .venv
VENV_jazzy  := .venv-jazzy
VENV   ?= $(VENV_$(ROS_DISTRO))
STAMPS := $(VENV)/.stamps
PY     := $(VENV)/bin/python
ACT    := . $(VENV)/bin/activate &&
# launch, launch_testing and the `ros2` verbs are not on PyPI: a kit beside the checkout (developers, CI).
LAUNCH_KIT ?= ../shared/ros-launch
# Exact versions: constraints.txt (Kilted), with constraints-<distro>.txt laid over it for another distro.
CONSTRAINTS := requirements/constraints.txt $(wildcard requirements/constraints-$(ROS_DISTRO).txt)
# DDS stays on this machine, on a domain of its own (override ROS_DOMAIN_ID to run in parallel).
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export ROS_DOMAIN_ID ?= 42
export HF_HUB_DISABLE_TELEMETRY := 1
PYTEST_ARGS ?=

.PHONY: test demo setup lint bench lock clean

setup: $(STAMPS)/launch

$(STAMPS)/venv:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade 'pip>=24'
	mkdir -p $(STAMPS) && touch $@

$(VENV)/constraints.txt: $(STAMPS)/venv scripts/constraints.py $(CONSTRAINTS)
	$(PY) scripts/constraints.py merge $(CONSTRAINTS) > $@

$(STAMPS)/deps: $(VENV)/constraints.txt requirements/ros-$(ROS_DISTRO).txt requirements/dev.txt
	$(PY) -m pip install -q -r requirements/ros-$(ROS_DISTRO).txt -r requirements/dev.txt -c $(VENV)/constraints.txt
	touch $@

$(STAMPS)/msgs: $(STAMPS)/deps scripts/build_msgs.sh av_scene_vlm_msgs/CMakeLists.txt av_scene_vlm_msgs/package.xml $(wildcard av_scene_vlm_msgs/msg/*.msg av_scene_vlm_msgs/action/*.action)
	$(ACT) BUILD_DIR=$(CURDIR)/$(VENV)/build/av_scene_vlm_msgs scripts/build_msgs.sh
	touch $@

# Editable install, plus the venv as an ament prefix (ros2 run / launch / pkg find the package).
$(STAMPS)/package: $(STAMPS)/msgs av_scene_vlm/setup.py scripts/venv_ament_index.sh
	$(PY) -m pip install -q --no-deps --no-build-isolation --config-settings editable_mode=compat -e av_scene_vlm
	scripts/venv_ament_index.sh $(VENV)
	touch $@

# The launch system: a ROS install's where the venv's Python already imports it, else the kit.
$(STAMPS)/launch: $(STAMPS)/package $(wildcard $(LAUNCH_KIT)/SHA256SUMS $(LAUNCH_KIT)/install.sh)
	@if $(PY) -c 'import sys, launch_ros; sys.exit(launch_ros.__file__.startswith(sys.prefix))' 2>/dev/null; then \
	  echo "launch: from the ROS install on PYTHONPATH"; \
	elif [ -f $(LAUNCH_KIT)/install.sh ]; then \
	  bash $(LAUNCH_KIT)/install.sh $(VENV); \
	else \
	  echo "launch: none ($(LAUNCH_KIT) not found, no ROS install): the launch tests will be skipped"; \
	fi
	touch $@

test: setup
	@$(PY) scripts/ros_env.py
	$(ACT) python -m pytest $(PYTEST_ARGS)

lint: setup
	$(ACT) ruff check . && ruff format --check .

demo: setup
	$(ACT) python -m av_scene_vlm.demo

bench: setup
	$(ACT) python benchmarks/bench_engine.py --json benchmarks/results/engine_cpu.json

# Writes constraints.txt (Kilted) or constraints-<distro>.txt (only what differs from constraints.txt).
lock: $(STAMPS)/deps
	$(PY) -m pip freeze --exclude-editable | $(PY) scripts/constraints.py lock $(ROS_DISTRO)

clean:
	rm -rf $(VENV) build install log
