"""BatchedMPEEnv against mpe2 through MPEEnv: same initial states and actions give the same episodes."""

import numpy as np
import pytest

from maddpg.envs.batched import BatchedMPEEnv
from maddpg.envs.mpe import MPEEnv
from maddpg.envs.scenarios import SCENARIOS

COPIES = 4  # copy k is seeded with seed + k: four seeds per run
F64, F32 = 1e-5, 1e-4  # tolerances on float64 internals and on float32 outputs


def random_actions(spec, rng, e):
    """Uniform actions; Box ones reach past [0, 1] so that clipping is exercised too."""
    out = []
    for agent in spec.agents:
        if agent.action_kind == "discrete":
            out.append(rng.integers(0, agent.action_size, e))
        else:
            out.append(rng.uniform(-0.2, 1.2, (e, agent.action_size)).astype(np.float32))
    return out


def raws(mpe: MPEEnv):
    return [env.unwrapped for env in mpe._envs]


def assert_close(a, b, atol, what):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=0, atol=atol,
                               err_msg=what)


def assert_same_worlds(bat: BatchedMPEEnv, mpe: MPEEnv, when: str) -> None:
    """Positions, velocities, messages and step counters (float64) of every copy, and float64 observations."""
    state, obs64 = bat.get_state(), bat.observe64()
    for k, raw in enumerate(raws(mpe)):
        world = raw.world
        assert_close(state.pos[k], [e.state.p_pos for e in world.entities], F64, f"pos of copy {k} {when}")
        assert_close(state.vel[k], [e.state.p_vel for e in world.entities], F64, f"vel of copy {k} {when}")
        if world.dim_c:
            assert_close(state.comm[k], [a.state.c for a in world.agents], F64, f"comm of copy {k} {when}")
        assert state.steps[k] == raw.steps, when
        for i, agent in enumerate(world.agents):
            assert_close(obs64[i][k], raw.scenario.observation(agent, world), F64,
                         f"float64 obs of {agent.name} in copy {k} {when}")


def assert_same_step(sb, sm, bat: BatchedMPEEnv, mpe: MPEEnv, t: int) -> None:
    np.testing.assert_array_equal(sb.terminated, sm.terminated, err_msg=f"terminated at step {t}")
    np.testing.assert_array_equal(sb.truncated, sm.truncated, err_msg=f"truncated at step {t}")
    assert sb.reward.dtype == np.float32 and sb.reward.shape == sm.reward.shape
    assert_close(sb.reward, sm.reward, F32, f"reward at step {t}")
    for field in ("next_obs", "obs"):
        for i, (x, y) in enumerate(zip(getattr(sb, field), getattr(sm, field), strict=True)):
            assert x.dtype == np.float32 and x.shape == y.shape and x.flags.c_contiguous
            assert_close(x, y, F32, f"{field} of agent {i} at step {t}")
    # Float64 rewards: mpe2 keeps them until its auto-reset, so only where the episode goes on.
    for k, raw in enumerate(raws(mpe)):
        if not (sm.terminated[k] or sm.truncated[k]):
            expected = [raw.rewards[name] for name in mpe.spec.agent_ids]
            assert_close(bat.last_reward64[k], expected, F64, f"float64 reward of copy {k} at step {t}")


def run_side_by_side(bat: BatchedMPEEnv, mpe: MPEEnv, steps: int, seed: int) -> dict[str, int]:
    """Steps both engines with the same random actions, comparing everything after every step."""
    rng = np.random.default_rng(seed)
    counts = {"terminated": 0, "truncated": 0}
    for t in range(steps):
        actions = random_actions(bat.spec, rng, bat.num_envs)
        sb, sm = bat.step(actions), mpe.step(actions)
        assert_same_step(sb, sm, bat, mpe, t)
        assert_same_worlds(bat, mpe, f"after step {t}")
        counts["terminated"] += int(sm.terminated.sum())
        counts["truncated"] += int(sm.truncated.sum())
    return counts


def make_pair(name, kwargs=None, *, copies=COPIES, max_cycles=25, continuous=False, render_mode=None):
    make = dict(num_envs=copies, max_cycles=max_cycles, continuous_actions=continuous, render_mode=render_mode)
    mpe, bat = MPEEnv(name, kwargs, **make), BatchedMPEEnv(name, kwargs, **make)
    assert bat.spec == mpe.spec
    return bat, mpe


def seeded_pair(name, kwargs=None, *, seed, **make):
    bat, mpe = make_pair(name, kwargs, **make)
    for x, y in zip(bat.reset(seed=seed), mpe.reset(seed=seed), strict=True):
        assert x.dtype == np.float32 and x.shape == y.shape
        assert_close(x, y, F32, "reset observation")
    assert_same_worlds(bat, mpe, "after the seeded reset")
    return bat, mpe


@pytest.mark.parametrize("continuous", [False, True], ids=["discrete", "continuous"])
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_200_random_steps_equal_mpe2(name, continuous):
    seed = 100 * list(SCENARIOS).index(name) + 7
    bat, mpe = seeded_pair(name, seed=seed, continuous=continuous)
    counts = run_side_by_side(bat, mpe, steps=200, seed=seed)
    assert counts == {"terminated": 0, "truncated": COPIES * 200 // 25}  # 8 episodes per copy


KWARG_CASES = [
    ("simple_spread", {"N": 6, "local_ratio": 0.3, "num_agent_neighbors": 2, "num_landmark_neighbors": 3}, False),
    ("simple_spread", {"N": 2, "num_agent_neighbors": 3, "num_landmark_neighbors": 5}, True),  # zero padding
    ("simple_spread", {"curriculum": True}, True),
    ("simple_adversary", {"N": 4, "num_agent_neighbors": 2, "num_landmark_neighbors": 1}, True),
    ("simple_tag", {"num_good": 2, "num_adversaries": 4, "num_obstacles": 3, "curriculum": True,
                    "num_agent_neighbors": 3, "num_landmark_neighbors": 2}, False),
    ("simple_tag", {"num_good": 3, "num_adversaries": 1, "num_obstacles": 0}, True),
    ("simple_world_comm", {"num_good": 3, "num_adversaries": 2, "num_obstacles": 2, "num_food": 3,
                           "num_forests": 3}, False),
    ("collect_treasure", {"num_collectors": 4, "num_deposits": 3, "num_treasures": 8}, True),
    ("simple_formation", {"N": 7}, False),  # beyond brute force: the per-env scipy assignment
    ("simple_line", {"N": 2}, True),
    ("simple_reference", {"local_ratio": 0.9}, False),
]


@pytest.mark.parametrize("name,kwargs,continuous", KWARG_CASES,
                         ids=[f"{n}-{'-'.join(map(str, k.values()))}" for n, k, _ in KWARG_CASES])
def test_scenario_arguments_equal_mpe2(name, kwargs, continuous):
    bat, mpe = seeded_pair(name, kwargs, seed=11, continuous=continuous, max_cycles=20)
    counts = run_side_by_side(bat, mpe, steps=60, seed=11)
    assert counts["truncated"] == COPIES * 3


def _finish_first(name: str, raw) -> None:
    """Edits copy 0's world so that its task is solved before the first step moves anything."""
    world = raw.world
    agents, landmarks = world.agents, world.landmarks
    if name == "simple_spread":
        for a, lm in zip(agents, landmarks):
            a.state.p_pos = lm.state.p_pos.copy()
    elif name == "simple_tag":
        prey = [a for a in agents if not a.adversary]
        for p in prey:
            p.state.p_pos = agents[0].state.p_pos + 0.01
    elif name == "simple_formation":
        n, lm = len(agents), landmarks[0].state.p_pos
        for i, a in enumerate(agents):
            angle = 0.3 + i * 2 * np.pi / n
            a.state.p_pos = lm + 0.5 * np.array([np.cos(angle), np.sin(angle)])
    elif name == "simple_line":
        for a, slot in zip(agents, raw.scenario._expected_positions):
            a.state.p_pos = slot.copy()


@pytest.mark.parametrize("name", ["simple_spread", "simple_tag", "simple_formation", "simple_line"])
def test_finished_envs_reset_inside_the_batch_while_others_go_on(name):
    """Copy 0 terminates at step 1, copy 1 truncates at step 3, copy 2 at step 12; copy 3 runs normally."""
    bat, mpe = make_pair(name, {"terminate_on_success": True}, max_cycles=20)
    mpe.reset(seed=5)
    envs = raws(mpe)
    _finish_first(name, envs[0])
    envs[1].steps, envs[2].steps = 17, 8  # episodes that started earlier
    for k, env in enumerate(mpe._envs):
        bat.load_mpe2(k, env)  # world, step counter and generator
    assert_same_worlds(bat, mpe, "after loading mpe2's states")
    rng = np.random.default_rng(5)
    ends = []
    for t in range(45):
        actions = random_actions(bat.spec, rng, bat.num_envs)
        sb, sm = bat.step(actions), mpe.step(actions)
        assert_same_step(sb, sm, bat, mpe, t)
        assert_same_worlds(bat, mpe, f"after step {t}")
        ends += [(t + 1, k, "term" if sb.terminated[k] else "trunc")
                 for k in np.flatnonzero(sb.terminated | sb.truncated)]
    assert (1, 0, "term") in ends and (3, 1, "trunc") in ends and (12, 2, "trunc") in ends
    assert (20, 3, "trunc") in ends and (40, 3, "trunc") in ends
    assert not any(t == 1 and k != 0 for t, k, _ in ends)


def test_collect_treasure_pickups_deliveries_and_respawns():
    bat, mpe = make_pair("collect_treasure", copies=2)
    mpe.reset(seed=21)
    world = raws(mpe)[0].world
    collectors, treasures = world.agents[:6], world.landmarks
    collectors[0].state.p_pos = treasures[0].state.p_pos.copy()  # picks treasure 0
    treasures[2].state.p_pos = treasures[1].state.p_pos.copy()  # two treasures on collector 2:
    collectors[2].state.p_pos = treasures[1].state.p_pos.copy()  # it takes only the first
    collectors[1].holding = 1
    collectors[1].state.p_pos = world.agents[6 + 1].state.p_pos.copy()  # delivers at deposit_1
    for k, env in enumerate(mpe._envs):
        bat.load_mpe2(k, env)
    rng = np.random.default_rng(21)
    for t in range(30):
        actions = random_actions(bat.spec, rng, bat.num_envs)
        sb, sm = bat.step(actions), mpe.step(actions)
        assert_same_step(sb, sm, bat, mpe, t)
        assert_same_worlds(bat, mpe, f"after step {t}")
        if t == 0:
            x = bat.get_state().extra
            assert list(x["holding"][0, :3]) == [x["ttype"][0, 0], -1, x["ttype"][0, 1]]
            assert sb.reward[0, -1] > 10  # deposits share +5 per pickup (2) and delivery (1)
            assert not x["alive"][0, :2].any() and x["alive"][0, 2]
        if t == 1:
            assert bat.get_state().extra["alive"][0].all()  # respawned from mpe2's world generator


def test_state_round_trip_replays_the_same_episodes():
    env = BatchedMPEEnv("simple_world_comm", num_envs=3, max_cycles=10, continuous_actions=True)
    env.reset(seed=2)
    saved = env.get_state()
    rng = np.random.default_rng(0)
    actions = [random_actions(env.spec, rng, 3) for _ in range(25)]
    first = [env.step(a) for a in actions]  # crosses two resets drawn from the generators
    env.set_state(saved)
    again = [env.step(a) for a in actions]
    for x, y in zip(first, again, strict=True):
        np.testing.assert_array_equal(x.reward, y.reward)
        for o, p in zip(x.obs, y.obs, strict=True):
            np.testing.assert_array_equal(o, p)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_store_mpe2_writes_a_state_mpe2_observes_identically(name):
    bat, mpe = make_pair(name, copies=1)
    bat.reset(seed=3)
    rng = np.random.default_rng(3)
    for _ in range(5):
        bat.step(random_actions(bat.spec, rng, 1))
    mpe.reset(seed=99)
    bat.store_mpe2(0, mpe._envs[0])
    raw = raws(mpe)[0]
    for i, agent in enumerate(raw.world.agents):
        assert_close(bat.observe64()[i][0], raw.scenario.observation(agent, raw.world), F64, agent.name)


def test_render_draws_the_same_picture_as_mpe2():
    bat, mpe = make_pair("simple_adversary", copies=2, render_mode="rgb_array")
    bat.reset(seed=4), mpe.reset(seed=4)
    rng = np.random.default_rng(4)
    for _ in range(3):
        actions = random_actions(bat.spec, rng, 2)
        bat.step(actions), mpe.step(actions)
    np.testing.assert_array_equal(bat.render(), mpe.render())
    bat.close(), mpe.close()


def test_invalid_arguments_and_actions_are_rejected():
    with pytest.raises(ValueError, match="no keyword argument"):
        BatchedMPEEnv("simple_spread", {"num_good": 2})
    with pytest.raises(ValueError, match="benchmark_data"):
        BatchedMPEEnv("simple_spread", {"benchmark_data": True})
    with pytest.raises(ValueError, match="num_agent_neighbors"):
        BatchedMPEEnv("simple_tag", {"num_agent_neighbors": 0})
    env = BatchedMPEEnv("simple_reference", num_envs=2)
    with pytest.raises(RuntimeError, match="reset"):
        env.step([np.zeros(2, int)] * 2)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"\[0, 50\)"):
        env.step([np.array([0, 50]), np.array([1, 2])])
    with pytest.raises(ValueError, match="2 action arrays"):
        env.step([np.array([0, 1])])
