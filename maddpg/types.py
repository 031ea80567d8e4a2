"""Records passed between the env, the agent and the replay buffer (numpy only, no TF, zmq or redis)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Step(NamedTuple):
    """The result of stepping E env copies once (every agent acts once in every env).

    Lists hold one array per agent, in the env spec's order.
    """

    next_obs: list[np.ndarray]  # [E, obs_dim_i] the observation that followed the action (terminal ones too)
    reward: np.ndarray  # [E, N] float32
    terminated: np.ndarray  # [E] bool, the scenario ended the episode
    truncated: np.ndarray  # [E] bool, max_episode_len was reached
    obs: list[np.ndarray]  # [E, obs_dim_i] what to act on next: next_obs, or the reset obs where an episode ended


class Transition(NamedTuple):
    """A batch of joint transitions, as stored in and sampled from the replay buffer."""

    obs: list[np.ndarray]  # [B, obs_dim_i]
    action: list[np.ndarray]  # [B, act_dim_i] the policy's action vectors
    reward: np.ndarray  # [B, N]
    next_obs: list[np.ndarray]  # [B, obs_dim_i]
    done: np.ndarray  # [B, N] float32, terminations only (time limits bootstrap, as in the original)
