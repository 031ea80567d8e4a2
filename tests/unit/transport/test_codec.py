"""Every message type through the wire format, and every way a frame can be wrong."""

import msgpack
import numpy as np
import pytest

from maddpg.transport.codec import VERSION, ProtocolError, decode, encode
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
    (lambda f: [msgpack.packb({**_header(f), "a": [["<f4", [3, -4]]] + _header(f)["a"][1:]})] + f[1:], "bad_dtype"),
    (lambda f: [msgpack.packb({**_header(f), "f": {**_header(f)["f"], "n": 5}})] + f[1:], "bad_fields"),
    (lambda f: [msgpack.packb({**_header(f), "f": {"seq": 1}})] + f[1:], "bad_fields"),
    (lambda f: [], "empty"),
])
def test_malformed_frames_raise_a_protocol_error_with_a_code(mutate, code):
    with pytest.raises(ProtocolError) as info:
        decode(mutate(_wire(_request())))
    assert info.value.code == code
