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


# ---------------------------------------------------------------- wire messages (encoded by transport/codec.py)
class Hello(NamedTuple):
    """An explorer announces itself; a new `run_id` means it restarted and its old state must be dropped.

    `oldest_chunk` is the seq of the oldest chunk it still holds (or of its next chunk when it holds none): a
    learner that expects an older one counts the chunks in between as lost instead of waiting for them.
    """

    explorer_id: str
    run_id: str
    num_envs: int
    oldest_chunk: int = 1


class Welcome(NamedTuple):
    """The learner's answer to Hello: the run spec (JSON) every explorer of the run uses, and where its
    replay queue is ("local": chunks go to the learner over ZeroMQ; or a redis:// URL and the run id that
    names the stream)."""

    spec_json: str
    queue: str = "local"
    run_id: str = ""
    next_chunk: int = 1  # the chunk seq the learner expects next from this explorer life (resend from there)


class InferenceRequest(NamedTuple):
    """One round of an explorer: every env's observations plus the reward and done of the last step."""

    explorer_id: str
    run_id: str
    seq: int
    obs: list[np.ndarray]  # [E, obs_dim_i] float32 per agent
    reward: np.ndarray  # [E, N] float32, zeros at the first request
    done: np.ndarray  # [E] bool: the last step ended the episode (obs is the next episode's first)


class InferenceReply(NamedTuple):
    seq: int
    actions: list[np.ndarray]  # [E, act_dim_i] float32 policy action vectors per agent
    durable_chunk: int = 0  # chunks of this explorer life up to this seq are in a written checkpoint


class Chunk(NamedTuple):
    """Transitions of one explorer for the replay queue, with the episodes that ended inside it.

    `seq` numbers the chunks of one explorer life (`run_id`) 1, 2, 3, ... without gaps: the learner consumes
    them in that order, skips any it already holds and counts a gap as lost chunks (exactly-once intake).
    """

    explorer_id: str
    run_id: str
    seq: int
    transitions: Transition  # rows: T steps x E envs
    episode_rewards: np.ndarray  # [K, N] float32, per-agent totals of the K episodes that ended
    episode_lengths: np.ndarray  # [K] int32


class Ack(NamedTuple):
    """A chunk (this seq) is in the learner's replay queue."""

    seq: int


class Stop(NamedTuple):
    """The run is over: the explorer should exit."""

    reason: str


class Error(NamedTuple):
    """A request (or, with `chunk`, the chunk of that seq) was refused; the sender may fix it and try again."""

    seq: int
    code: str
    message: str
    chunk: bool = False
