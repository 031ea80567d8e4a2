"""Helpers for scenarios written with envs first ([E, ...] arrays): small worlds where layout hardly matters."""

from __future__ import annotations

import numpy as np

from maddpg.envs.batched.core import norm
from maddpg.envs.batched.scenarios.base import ObsGroup


def rel(targets: np.ndarray, origins: np.ndarray) -> np.ndarray:
    """[E, O, T, 2]: target t's position relative to origin o; targets [E, T, 2], origins [E, O, 2]."""
    return targets[:, None, :, :] - origins[:, :, None, :]


def dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[E, A, B] distances between every a and every b."""
    return norm(rel(b, a))


def flat(x: np.ndarray) -> np.ndarray:
    """[E, G, K, d] -> [E, G, K*d], the layout of a concatenated list of vectors."""
    return x.reshape(x.shape[0], x.shape[1], -1)


def concat(parts: list[np.ndarray]) -> np.ndarray:
    """Concatenates [E, G, k] blocks along the last axis."""
    return np.concatenate(parts, axis=-1)


def group(agents, values: np.ndarray) -> ObsGroup:
    """An ObsGroup from [E, G, D] observations (a transposed view; no copy)."""
    return ObsGroup(np.asarray(agents), values.transpose(1, 2, 0))
