# Every target installs what it needs first (scripts/setup.sh is idempotent: seconds on a ready machine).
RUN := scripts/run.sh
PYTEST := $(RUN) python -m pytest

.PHONY: setup setup-jazzy test test-jazzy lint demo demo-objects demo-articulated sim sim-check bench dataset clean

setup:
	@bash scripts/setup.sh

## make setup-jazzy: the second venv, .venv-jazzy, on Jazzy's ROS wheels and numpy 1.26 (scripts/requirements-jazzy.txt).
setup-jazzy:
	@KP_POSE_STACK=jazzy bash scripts/setup.sh

## make test: the whole test suite (real rclpy, real pybullet renders).
test: setup
	$(PYTEST) kp_pose_ros/test -q -p no:cacheprovider

## make test-jazzy: the same suite on the Jazzy stack.
test-jazzy: setup-jazzy
	KP_POSE_STACK=jazzy $(PYTEST) kp_pose_ros/test -q -p no:cacheprovider

## make lint: ruff (rules and settings in ruff.toml).
lint: setup
	$(RUN) ruff check .

## make demo: the main job on the built-in synthetic camera.
demo: setup
	$(RUN) kp-pose demo

## make demo-objects: known-object poses (object_pose graph, lmo models) on the synthetic camera's table-top scenes,
## scored per object against its ground truth (needs the LINEMOD meshes in ../shared/data/lmo/models).
demo-objects: setup
	$(RUN) kp-pose demo objects

## make demo-articulated: per-part poses and joint states of articulated objects (articulated_pose graph, PAGE voting
## network in models/articulated/) on the synthetic camera's articulated scenes (TEST-split instances), scored per
## category, part and joint against its ground truth.
demo-articulated: setup
	$(RUN) kp-pose demo articulated

## make sim: the synthetic RGB-D camera in the foreground (Ctrl-C stops); inspect it from another shell with
##   scripts/run.sh kp-pose topics    and    scripts/run.sh kp-pose hz /camera/camera/color/image_raw
sim: setup
	$(RUN) kp-pose run sim_camera

## make sim-check: start the camera in the background, inspect it from a second process, stop it.
sim-check: setup
	$(RUN) bash -c 'kp-pose run sim_camera --duration 25 & pid=$$!; \
	  kp-pose topics --wait 4 && kp-pose hz /camera/camera/color/image_raw --duration 5 --wait 15; rc=$$?; \
	  kill -INT $$pid; wait $$pid; exit $$rc'

## make bench: speed and accuracy benchmarks, written to results/*.json (robot_calib: ~10 min on 2 cores;
## throughput: ~1 min, the robot_calib graph one process per node fed a 30 Hz bag, rendered once to build/bench/;
## object_throughput: the same for object_pose with 3 and 8 objects in view, needs ../shared/data/lmo/models).
bench: setup
	$(RUN) kp-pose bench sim_camera
	$(RUN) kp-pose bench robot_calib
	$(RUN) kp-pose bench throughput
	$(RUN) kp-pose bench object_throughput

## make dataset: a small training set from the synthetic camera (see kp_pose_ros/sim/dataset.py for the layout).
dataset: setup
	$(RUN) python -m kp_pose_ros.sim.dataset --out build/dataset --frames 200 --seed 0 --camera realsense_d435

clean:
	rm -rf build .venv .venv-jazzy demo_output
