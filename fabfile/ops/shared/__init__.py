"""The small layer the steps share: facts and helpers that more than one step (or check) needs, one concept
per module, none of them a step.

Steps are siblings: an ops module imports core, this layer and libraries, never another step, so a step
can be read, changed or left out alone (tests/unit/test_layout.py holds every module to it). What two
steps both need lives here instead of in one of them: the node's env file, the ports and secrets, the
share's paths, the training python and the versions in Ray's venv, the download machinery, the
IB/GPU/NCCL facts, image references.

It sits under ops/ rather than beside core/ because it is ops' own knowledge (paths on a node, what a
GPU node looks like) that core must not hold: core knows no step, and this layer knows what steps leave
on a node. It imports core and itself only, never a step.
"""
