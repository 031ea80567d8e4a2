"""Every message type through the wire format, and every way a frame can be wrong."""

from typing import NamedTuple, get_type_hints

import msgpack
import numpy as np
import pytest

from maddpg.transport.codec import (MAX_AGENTS, MAX_ARRAYS, MAX_HEADER_BYTES, VERSION, ProtocolError, _scalar_fields,
                                    chunk_problem, decode, decode_blob, encode, encode_blob, request_problem)
from maddpg.types import (Ack, Chunk, Error, Hello, InferenceReply, InferenceRequest, Stop, Transition,
                          Welcome)

RNG = np.random.default_rng(0)


def _f32(*shape):
    return RNG.normal(size=shape).astype(np.float32)


def _request(obs_dims=(4, 7), e=3):
    return InferenceRequest("explorer-1", "run-a", 9, [_f32(e, d) for d in obs_dims], _f32(e, len(obs_dims)),
                            np.array([True, False, True][:e]))


def _chunk(obs_dims=(4, 7), act_dims=(5, 2), rows=6):
    n = len(obs_dims)
    t = Transition([_f32(rows, d) for d in obs_dims], [_f32(rows, a) for a in act_dims], _f32(rows, n),
                   [_f32(rows, d) for d in obs_dims], np.zeros((rows, n), np.float32))
    return Chunk("explorer-1", "run-a", 4, t, _f32(2, n), np.array([25, 25], np.int32))


def _wire(msg):
    return [bytes(f) for f in encode(msg)]  # what arrives: plain bytes per frame


def _equal(a, b):
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("msg", [
    Hello("explorer-1", "run-a", 16), Welcome('{"scenario": "simple"}'), _request(), _request((18,), 1),
    InferenceReply(3, [_f32(3, 5), _f32(3, 20)]), _chunk(), _chunk((3, 11), (3, 5), 1), Ack(7), Stop("done"),
    Error(2, "bad_shape", "obs of agent 0"),
], ids=lambda m: type(m).__name__)
def test_round_trip_of_every_message_type(msg):
    back = decode(_wire(msg))
    assert type(back) is type(msg)
    assert _equal(list(back), list(msg))


def test_agents_with_different_observation_sizes_keep_their_shapes():
    back = decode(_wire(_request((8, 10, 10), 2)))
    assert [o.shape for o in back.obs] == [(2, 8), (2, 10), (2, 10)]
    assert back.done.dtype == np.bool_ and back.reward.shape == (2, 3)


def test_arrays_travel_without_copies():
    msg = _request()
    frames = encode(msg)
    assert all(isinstance(f, memoryview) for f in frames[1:])
    assert np.shares_memory(np.frombuffer(frames[1], np.float32), msg.obs[0])


def _header(frames):
    return msgpack.unpackb(frames[0])


@pytest.mark.parametrize("mutate, code", [
    (lambda f: [b"\xc1garbage"] + f[1:], "bad_header"),
    (lambda f: [msgpack.packb([1, 2])] + f[1:], "bad_header"),
    (lambda f: [msgpack.packb({**_header(f), "v": VERSION + 1})] + f[1:], "bad_version"),
    (lambda f: [msgpack.packb({**_header(f), "t": "launch"})] + f[1:], "bad_type"),
    (lambda f: f[:-1], "bad_frames"),
    (lambda f: [f[0], f[1][:-4]] + f[2:], "bad_shape"),
    (lambda f: [msgpack.packb({**_header(f), "a": [["<f8", [3, 4]]] + _header(f)["a"][1:]})] + f[1:], "bad_dtype"),
    (lambda f: [msgpack.packb({**_header(f), "a": [["<f4", [3, -4]]] + _header(f)["a"][1:]})] + f[1:], "bad_shape"),
    (lambda f: [msgpack.packb({**_header(f), "f": {**_header(f)["f"], "n": 5}})] + f[1:], "bad_fields"),
    (lambda f: [msgpack.packb({**_header(f), "f": {"seq": 1}})] + f[1:], "bad_fields"),
    (lambda f: [], "empty"),
])
def test_malformed_frames_raise_a_protocol_error_with_a_code(mutate, code):
    with pytest.raises(ProtocolError) as info:
        decode(mutate(_wire(_request())))
    assert info.value.code == code


# ---------------------------------------------------------------- hostile headers (operator findings)
def _rewrite(frames, **changes):
    """The frames with header keys replaced."""
    return [msgpack.packb({**_header(frames), **changes}), *frames[1:]]


def _code(frames):
    with pytest.raises(ProtocolError) as info:
        decode(frames)
    return info.value.code


def _with_spec(frames, spec, frame=None):
    """The request's frames with the first array's spec (and frame) replaced."""
    f = _rewrite(frames, a=[spec] + _header(frames)["a"][1:])
    return [f[0], f[1] if frame is None else frame, *f[2:]]


def test_a_huge_shape_is_refused_without_overflow():
    assert _code(_with_spec(_wire(_request()), ["<f4", [2**62 + 1, 4]])) == "bad_shape"
    assert _code(_with_spec(_wire(_request()), ["<f4", [2**31, 2**31, 2**31]])) == "bad_shape"


def test_a_bool_dim_is_refused():
    assert _code(_with_spec(_wire(_request()), ["<f4", [True, 2]], bytes(8))) == "bad_shape"


@pytest.mark.parametrize("spec, code", [
    (["<f4"], "bad_header"), ("<f4", "bad_header"), (["<f4", [3, 4], 0], "bad_header"),
    ([["<f4"], [3, 4]], "bad_dtype"), (["<f8", [3, 4]], "bad_dtype"), ([None, [3, 4]], "bad_dtype"),
    (["<f4", "3x4"], "bad_shape"), (["<f4", [3.0, 4]], "bad_shape"), (["<f4", [1] * 9], "bad_shape"),
    (["<f4", [[3], 4]], "bad_shape"),
])
def test_an_array_spec_that_is_not_dtype_and_dims_is_refused(spec, code):
    assert _code(_with_spec(_wire(_request()), spec)) == code


def _wrong_values(kind):
    return [v for v in ([1], {"a": 1}, b"x", None, 1.5, True, 7, "7", float("nan")) if type(v) is not kind]


_SCALAR_CASES = [(msg, name, bad) for msg in (Hello("e", "r", 4), Welcome("{}"), _request(), InferenceReply(1, []),
                                              _chunk(), Ack(1), Stop("x"), Error(1, "c", "m"))
                 for name, kind in get_type_hints(type(msg)).items() if kind in (str, int, bool, float)
                 for bad in _wrong_values(kind)]


@pytest.mark.parametrize("msg, name, bad", _SCALAR_CASES,
                         ids=[f"{type(m).__name__}.{n}={b!r}" for m, n, b in _SCALAR_CASES])
def test_every_scalar_field_must_have_its_annotated_type(msg, name, bad):
    """Hello(explorer_id=[...]) once got through and crashed the server thread as a dict key."""
    frames = _wire(msg)
    assert _code(_rewrite(frames, f={**_header(frames)["f"], name: bad})) == "bad_fields"


@pytest.mark.parametrize("fields", [
    {"explorer_id": "e" * 257}, {"seq": 2**62 + 1}, {"seq": -2**63}, {"seq": 2**64 - 1}, {"extra": 1}, {b"seq": 1},
])
def test_long_strings_out_of_range_ints_and_unknown_fields_are_refused(fields):
    frames = _wire(_request())
    assert _code(_rewrite(frames, f={**_header(frames)["f"], **fields})) == "bad_fields"


def test_free_text_fields_may_be_long_but_not_unbounded():
    assert decode(_wire(Welcome("x" * 100_000))).spec_json == "x" * 100_000
    assert decode(_wire(Error(1, "c", "m" * (1 << 20)))).message == "m" * (1 << 20)
    assert _code(_wire(Welcome("x" * ((1 << 20) + 1)))) == "bad_fields"


def test_a_missing_field_takes_its_default_or_is_refused():
    frames = _wire(Hello("e", "r", 4, 9))
    header = _header(frames)
    del header["f"]["oldest_chunk"]
    assert decode([msgpack.packb(header)]) == Hello("e", "r", 4)
    del header["f"]["num_envs"]
    assert _code([msgpack.packb(header)]) == "bad_fields"


@pytest.mark.parametrize("n", [0, -1, MAX_AGENTS + 1, True, 2.0, "2", None])
def test_the_agent_count_must_be_an_int_in_range(n):
    frames = _wire(_request((4, 7)))
    assert _code(_rewrite(frames, f={**_header(frames)["f"], "n": n})) == "bad_fields"


@pytest.mark.parametrize("changes, code", [
    ({"f": [1]}, "bad_header"), ({"f": None}, "bad_header"), ({"a": {"x": 1}}, "bad_header"),
    ({"extra": 1}, "bad_header"), ({"t": ["infer"]}, "bad_type"), ({"t": None}, "bad_type"),
    ({"v": float(VERSION)}, "bad_version"), ({"v": str(VERSION)}, "bad_version"), ({"v": [VERSION]}, "bad_version"),
])
def test_header_keys_of_the_wrong_type_are_refused(changes, code):
    assert _code(_rewrite(_wire(_request()), **changes)) == code


def test_wrong_frame_counts_are_refused():
    frames = _wire(_request())
    assert _code(frames + [b""]) == "bad_frames"
    assert _code(_wire(Ack(1)) + [b""]) == "bad_frames"
    hello = _header(_wire(Hello("e", "r", 4)))
    assert _code([msgpack.packb({**hello, "a": [["<f4", [0]]]}), b""]) == "bad_frames"


@pytest.mark.parametrize("frame", ["text", 7, None, [b"x"], np.zeros((4, 4), np.float32)[:, ::2]],
                         ids=["str", "int", "None", "list", "strided"])
def test_a_frame_that_is_not_contiguous_bytes_is_refused(frame):
    frames = _wire(_request())
    assert _code([frames[0], frame, *frames[2:]]) == "bad_frames"
    assert _code([frame, *frames[1:]]) == "bad_frames"


def test_frames_of_any_contiguous_buffer_are_read_as_bytes():
    msg, frames = _request(), _wire(_request())
    frames[1] = msg.obs[0].copy()  # a 2-D float32 buffer: read as its raw bytes
    assert np.array_equal(decode(frames).obs[0], msg.obs[0])


def test_invalid_utf8_in_a_string_is_refused():
    header = msgpack.packb({"v": VERSION, "t": "stop", "f": {"reason": "done"}, "a": []})
    assert _code([header.replace(b"done", b"d\xffne")]) == "bad_header"


def test_too_many_arrays_or_a_huge_header_are_refused():
    frames = _wire(Ack(1))
    assert _code(_rewrite(frames, a=[["<f4", [0]]] * (MAX_ARRAYS + 1))) == "too_large"
    assert _code([bytes(MAX_HEADER_BYTES + 1)]) == "too_large"


# ---------------------------------------------------------------- blobs (Redis stream entries)
def test_blob_round_trip():
    msg = _chunk()
    assert _equal(list(decode_blob(encode_blob(msg))), list(msg))


@pytest.mark.parametrize("mutate", [
    lambda b: b[:3], lambda b: b[:-1], lambda b: b + b"\0", lambda b: b"\xff\xff\xff\xff" + b[4:],
    lambda b: b[:4] + b"\xff\xff\xff\x7f" + b[8:], lambda b: b"\0\0\0\0", lambda b: "text", lambda b: None,
    lambda b: np.frombuffer(b, np.uint8)[::2],
], ids=["cut_count", "cut", "extended", "huge_count", "huge_length", "no_frames", "str", "None", "strided"])
def test_a_malformed_blob_raises_a_protocol_error(mutate):
    with pytest.raises(ProtocolError) as info:
        decode_blob(mutate(encode_blob(_chunk())))
    assert info.value.code in ("bad_blob", "empty")


# ---------------------------------------------------------------- values the learner must not train on
OBS_DIMS, ACT_DIMS = [4, 7], [5, 2]


def test_a_fitting_chunk_has_no_problem():
    assert chunk_problem(_chunk(), OBS_DIMS, ACT_DIMS) is None
    assert chunk_problem(decode(_wire(_chunk(rows=0))), OBS_DIMS, ACT_DIMS) is None


def _poke(array, index, value):
    array[index] = value


@pytest.mark.parametrize("spoil, problem", [
    (lambda c: _poke(c.transitions.obs[1], (2, 3), np.nan), "obs of agent 1 holds NaN or inf"),
    (lambda c: _poke(c.transitions.next_obs[0], (0, 0), -np.inf), "next_obs of agent 0 holds NaN or inf"),
    (lambda c: _poke(c.transitions.action[1], (5, 1), 2e6), "action of agent 1 holds a value beyond +-1e+06"),
    (lambda c: _poke(c.transitions.reward, (3, 1), np.inf), "reward of agent 1 holds NaN or inf"),
    (lambda c: _poke(c.episode_rewards, (1, 0), np.nan), "episode_rewards of agent 0 holds NaN or inf"),
    (lambda c: _poke(c.transitions.done, (0, 1), 0.5), "done holds a value other than 0 and 1"),
    (lambda c: _poke(c.transitions.done, (0, 1), np.nan), "done holds a value other than 0 and 1"),
    (lambda c: _poke(c.episode_lengths, 1, -3), "episode_lengths holds a negative length"),
])
def test_a_chunk_with_values_the_learner_must_not_train_on_has_a_problem(spoil, problem):
    chunk = _chunk()
    spoil(chunk)
    assert chunk_problem(chunk, OBS_DIMS, ACT_DIMS) == problem


def test_the_bound_on_chunk_values_is_a_keyword():
    chunk = _chunk()
    chunk.transitions.obs[0][0, 0] = 50.0
    assert chunk_problem(chunk, OBS_DIMS, ACT_DIMS) is None
    assert chunk_problem(chunk, OBS_DIMS, ACT_DIMS, max_abs=10.0) == "obs of agent 0 holds a value beyond +-10"


def test_a_chunk_of_other_dtypes_has_a_problem():
    chunk = _chunk()
    assert chunk_problem(chunk._replace(episode_rewards=chunk.episode_rewards.astype(np.float64)), OBS_DIMS,
                         ACT_DIMS) == "episode_rewards must be float32[K, N] and episode_lengths int32[K]"


def test_a_fitting_request_has_no_problem():
    assert request_problem(decode(_wire(_request())), OBS_DIMS, 3) is None


@pytest.mark.parametrize("spoil, num_envs, problem", [
    (lambda r: r, 4, ("bad_shape", "obs of agent 0: float32[3, 4], expected float32[4, 4]")),
    (lambda r: r._replace(obs=r.obs[:1]), 3, ("bad_shape", "1 observation arrays for 2 agents")),
    (lambda r: r._replace(reward=r.reward.astype(np.float64)), 3,
     ("bad_shape", "reward: float64[3, 2], expected float32[3, 2]")),
    (lambda r: r._replace(done=r.done.astype(np.float32)), 3, ("bad_shape", "done: float32[3], expected bool[3]")),
    (lambda r: _poke(r.obs[1], (1, 6), np.inf) or r, 3, ("bad_value", "obs of agent 1 holds NaN or inf")),
    (lambda r: _poke(r.reward, (2, 1), -1e7) or r, 3,
     ("bad_value", "reward of agent 1 holds a value beyond +-1e+06")),
])
def test_a_request_that_does_not_fit_or_holds_bad_values_has_a_problem(spoil, num_envs, problem):
    assert request_problem(spoil(_request()), OBS_DIMS, num_envs) == problem


def test_a_message_field_the_codec_cannot_carry_fails_at_import():
    class Tagged(NamedTuple):
        seq: int
        tags: list[str] = []

    with pytest.raises(TypeError, match="tags"):
        _scalar_fields(Tagged)
