"""Acting, in numpy only: how the actors' outputs become actions for many envs at once.

- `heads`: action distributions per agent (sample, mode, uniform, to the env's action).
- `noise`: Ornstein-Uhlenbeck and Gaussian exploration processes.
- `policy`: the actors' forward pass on a numpy copy of their weights.
- `actor`: per-env exploration state, warm-up and the env-step count, for a batch that mixes envs of many
  streams (the explorers of a distributed run, or one single-process loop).

The learner's inference, the single-process loop and `maddpg evaluate` all act through `Actor`; nothing here
imports TensorFlow, so acting costs microseconds, not a TensorFlow call's dispatch (DESIGN.md section 7).
"""
