"""The memory a learner may use: a container's cgroup limit wins over the machine's memory, and a run that does
not fit is refused naming the option to lower and the most it may be."""

import pytest

from maddpg import memory
from maddpg.envs.spaces import AgentSpec
from maddpg.runspec import RunSpec

AGENTS = tuple(AgentSpec(f"agent_{i}", 18, "discrete", 5, (5,)) for i in range(3))


def test_the_replay_buffer_is_sized_from_the_agents():
    estimate = memory.estimate_memory(RunSpec(scenario="simple_spread", replay_size=10_000), AGENTS)
    assert estimate.floats_per_transition == 3 * (2 * 18 + 5) + 2 * 3
    assert estimate.replay == 10_000 * estimate.floats_per_transition * memory.FLOAT_BYTES


def test_a_cgroup_limit_below_the_machine_is_the_limit(tmp_path, monkeypatch):
    limit = tmp_path / "memory.max"
    limit.write_text("1073741824\n")
    real = memory.Path

    def fake(path):
        return limit if str(path) == "/sys/fs/cgroup/memory.max" else real(path)

    monkeypatch.setattr(memory, "Path", fake)
    assert memory.machine_memory() == (2**30, "the container's memory limit", "/sys/fs/cgroup/memory.max")
    limit.write_text("max\n")  # no limit: the machine's memory
    assert memory.machine_memory()[1] == "this machine's memory"


def test_a_run_that_does_not_fit_is_refused_with_the_most_that_fits(monkeypatch):
    monkeypatch.setattr(memory, "machine_memory", lambda: (4 * 2**30, "this machine's memory", ""))
    spec = RunSpec(scenario="simple_spread", replay_size=50_000_000, num_episodes=10_000_000)
    with pytest.raises(memory.RunTooLarge, match=r"lower replay_size to at most [\d,]+ \(--replay-size\)") as e:
        memory.check_fits_machine(spec, AGENTS)
    most = int(str(e.value).split("at most ")[1].split(" ")[0].replace(",", ""))
    memory.check_fits_machine(spec.model_copy(update={"replay_size": most}), AGENTS)  # the most given does fit


@pytest.mark.parametrize("critic", ["joint", "pooled"])
def test_the_networks_estimate_counts_the_learner_s_own_weights(critic):
    """Adversaries and good agents of other sizes (two kinds of encoder), ddpg good agents (local critics)."""
    from maddpg.acting.heads import make_heads
    from maddpg.algo.learning import MADDPGLearner
    from maddpg.envs.mpe import make_env
    from maddpg.trainer import agent_policies

    spec = RunSpec(scenario="simple_tag", continuous_actions=True, good_policy="ddpg", num_units=16, critic=critic)
    env_spec = make_env(spec, num_envs=1).spec
    learner = MADDPGLearner(env_spec, make_heads(env_spec, spec.resolved_action_dist), agent_policies(spec, env_spec),
                            num_units=16, jit=False, critic=critic)
    held = sum(v.shape.num_elements() for name, v in learner.variables().items()
               if name not in ("updates", "rng_state"))
    # The learner holds weights, targets and Adam's two moments (4 copies); the estimate adds the gradients.
    assert memory.estimate_memory(spec, env_spec.agents).networks == held // 4 * 5 * memory.FLOAT_BYTES
