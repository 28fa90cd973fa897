# Two commands on a fresh Debian 12 / Python 3.11 machine with no ROS install:
#   make test   set up .venv (pinned), build av_scene_vlm_msgs into it, run the whole test suite
#   make demo   set up, then run the classifier node on the bundled drive and summarise what it published
# Set-up steps are stamped: a second run skips them and reaches pytest within seconds.

PYTHON ?= python3
VENV   ?= .venv
STAMPS := $(VENV)/.stamps
PY     := $(VENV)/bin/python
ACT    := . $(VENV)/bin/activate &&
# DDS stays on this machine, on a domain of its own (override ROS_DOMAIN_ID to run in parallel).
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export ROS_DOMAIN_ID ?= 42
export HF_HUB_DISABLE_TELEMETRY := 1
PYTEST_ARGS ?=

.PHONY: test demo setup lint bench lock clean

setup: $(STAMPS)/package

$(STAMPS)/venv:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade 'pip>=24'
	mkdir -p $(STAMPS) && touch $@

$(STAMPS)/deps: $(STAMPS)/venv requirements/dev.txt requirements/constraints.txt
	$(VENV)/bin/python -m pip install -q -r requirements/dev.txt -c requirements/constraints.txt
	touch $@

$(STAMPS)/msgs: $(STAMPS)/deps scripts/build_msgs.sh av_scene_vlm_msgs/CMakeLists.txt av_scene_vlm_msgs/package.xml $(wildcard av_scene_vlm_msgs/msg/*.msg)
	$(ACT) scripts/build_msgs.sh
	touch $@

$(STAMPS)/package: $(STAMPS)/msgs av_scene_vlm/setup.py
	$(VENV)/bin/python -m pip install -q --no-deps --no-build-isolation --config-settings editable_mode=compat -e av_scene_vlm
	touch $@

test: setup
	$(ACT) python -m pytest $(PYTEST_ARGS)

lint: setup
	$(ACT) ruff check . && ruff format --check .

demo: setup
	$(ACT) python -m av_scene_vlm.demo

bench: setup
	$(ACT) python benchmarks/bench_engine.py --json benchmarks/results/engine_cpu.json

lock: $(STAMPS)/deps
	{ head -2 requirements/constraints.txt; $(VENV)/bin/python -m pip freeze --exclude-editable | grep -v "^av_scene_vlm"; } > requirements/constraints.txt.new
	mv requirements/constraints.txt.new requirements/constraints.txt

clean:
	rm -rf $(VENV) build install log
