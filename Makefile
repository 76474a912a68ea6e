# Every target installs what it needs first (scripts/setup.sh is idempotent and fast on a ready machine).
RUN := scripts/run.sh
PYTEST := $(RUN) python -m pytest

.PHONY: setup test demo sim bench dataset clean

setup:
	@bash scripts/setup.sh

test: setup
	$(PYTEST) kp_pose_ros/test -q

clean:
	rm -rf build .venv demo_output
