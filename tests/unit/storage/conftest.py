"""Fixtures for the store tests: a small checkpoint's parts and moto's S3 server on a free loopback port."""

import numpy as np
import pytest

from maddpg.envs.spaces import AgentSpec, EnvSpec
from maddpg.runspec import RunSpec
from tests.s3_server import MotoServer, s3_env


@pytest.fixture(scope="session")
def moto_server():
    with MotoServer() as server:
        yield server


@pytest.fixture
def bucket(moto_server, request, monkeypatch):
    """A fresh bucket; the environment points boto3 at the server, as `maddpg` is configured by a user."""
    for key, value in s3_env(moto_server).items():
        monkeypatch.setenv(key, value)
    name = "t-" + request.node.name.lower().replace("_", "-")[:50]
    moto_server.make_bucket(name)
    return name


@pytest.fixture
def parts():
    """A run spec, an env spec and arrays as a learner's checkpoint holds them (no TensorFlow needed)."""
    spec = RunSpec(scenario="simple")
    env_spec = EnvSpec("simple", (AgentSpec("agent_0", 4, "discrete", 5, (5,)),))
    rng = np.random.default_rng(0)
    arrays = {"agent_0/actor/w0": rng.normal(size=(4, 16)).astype(np.float32),
              "agent_0/actor/b0": rng.normal(size=16).astype(np.float32),
              "agent_0/actor/w1": rng.normal(size=(16, 5)).astype(np.float32),
              "agent_0/actor/b1": rng.normal(size=5).astype(np.float32),
              "rng/state": np.arange(4, dtype=np.int64)}
    return spec, env_spec, arrays


def counters(updates, episodes=0):
    return {"updates": updates, "episodes": episodes, "env_steps": 25 * episodes}
