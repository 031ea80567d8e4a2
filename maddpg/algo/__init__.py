"""MADDPG: networks, action distributions, exploration, learner. Import submodules explicitly: `policy` and
`exploration` are numpy-only, the rest import TensorFlow (the numpy policy heads are in `maddpg.acting`)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out of user output
