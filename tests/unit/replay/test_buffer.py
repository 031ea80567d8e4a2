import numpy as np

from maddpg.replay.buffer import ReplayBuffer
from maddpg.types import Transition


def _batch(start, count, obs_dims=(2, 3), act_dims=(1, 4)):
    ids = np.arange(start, start + count, dtype=np.float32)
    return Transition(
        obs=[np.repeat(ids[:, None], d, 1) + 0.1 * i for i, d in enumerate(obs_dims)],
        action=[np.repeat(ids[:, None], d, 1) + 0.2 * i for i, d in enumerate(act_dims)],
        reward=np.stack([ids, -ids], 1),
        next_obs=[np.repeat(ids[:, None] + 1, d, 1) + 0.1 * i for i, d in enumerate(obs_dims)],
        done=np.zeros((count, 2), np.float32),
    )


def test_exact_capacity_and_wrap_around():
    buf = ReplayBuffer(10, [2, 3], [1, 4])
    buf.add(_batch(0, 7))
    assert len(buf) == 7
    buf.add(_batch(7, 6))  # 13 transitions in a buffer of 10: the 3 oldest are gone
    assert len(buf) == 10 and buf.added == 13
    kept = sorted(buf.gather(np.arange(10)).reward[:, 0].tolist())
    assert kept == list(range(3, 13))


def test_a_batch_larger_than_capacity_keeps_the_newest():
    buf = ReplayBuffer(4, [2, 3], [1, 4])
    buf.add(_batch(0, 9))
    assert sorted(buf.gather(np.arange(4)).reward[:, 0].tolist()) == [5, 6, 7, 8]
    assert buf.added == 9


def test_sampling_is_aligned_across_agents_and_fields():
    buf = ReplayBuffer(50, [2, 3], [1, 4])
    buf.add(_batch(0, 30))
    rng = np.random.default_rng(0)
    idx = buf.sample_indices(rng, (3, 64))
    assert idx.shape == (3, 64) and idx.max() < 30
    t = buf.gather(idx)
    ident = t.reward[..., 0]  # [3, 64]
    np.testing.assert_allclose(t.obs[0][..., 0], ident)
    np.testing.assert_allclose(t.obs[1][..., 0], ident + 0.1, rtol=1e-6)
    np.testing.assert_allclose(t.action[1][..., 2], ident + 0.2, rtol=1e-6)
    np.testing.assert_allclose(t.next_obs[0][..., 1], ident + 1)
    np.testing.assert_allclose(t.reward[..., 1], -ident)
    assert t.obs[1].shape == (3, 64, 3)


def test_stored_rows_are_copies():
    buf = ReplayBuffer(5, [2, 3], [1, 4])
    batch = _batch(0, 2)
    buf.add(batch)
    batch.obs[0][:] = 99.0
    assert buf.gather(np.array([0])).obs[0][0, 0] == 0.0
