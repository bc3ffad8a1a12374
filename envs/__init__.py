"""MuJoCo systems, ground-truth dynamics, tasks and environments for gndesign."""

import os

# Headless by default: dm_control and MuJoCo pick their GL backend at import time.
os.environ.setdefault("MUJOCO_GL", "egl")
