"""Property tests of the wire format: whatever arrives, decode returns a well-typed message or raises
ProtocolError, and every valid message survives the round trip."""

import math
from typing import get_type_hints

import msgpack
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from maddpg.transport.codec import (MAX_INT, ProtocolError, chunk_problem, decode, decode_blob, encode, encode_blob,
                                    request_problem)
from maddpg.types import (Ack, Chunk, Error, Hello, InferenceReply, InferenceRequest, Stop, Transition,
                          Welcome)

TYPES = {"hello": Hello, "welcome": Welcome, "infer": InferenceRequest, "reply": InferenceReply, "chunk": Chunk,
         "ack": Ack, "stop": Stop, "error": Error}
MESSAGE_TYPES = tuple(TYPES.values())
DTYPES = ("<f4", "|b1", "<i4")
FIELD_NAMES = sorted({name for cls in MESSAGE_TYPES for name in cls._fields} | {"n"})
# Sized for the whole file to run in well under 20 s on two cores; the database stays off (no files written).
FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_SLOW = settings(FUZZ, max_examples=150)  # eleven arrays drawn per example

SCALARS = {str: st.text(max_size=12), int: st.integers(-MAX_INT, MAX_INT), bool: st.booleans(),
           float: st.floats(allow_nan=False, allow_infinity=False)}
ARRAYS = hnp.arrays(st.sampled_from([np.float32, np.bool_, np.int32]),
                    hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
# Any msgpack value, of any type: what a hostile or buggy peer may put anywhere in a header.
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats() | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=8)


@st.composite
def messages(draw):
    """A valid message of any type; its scalar fields come from the annotations in maddpg.types."""
    cls = draw(st.sampled_from(MESSAGE_TYPES))
    fields = {name: draw(SCALARS[kind]) for name, kind in get_type_hints(cls).items() if kind in SCALARS}
    n = draw(st.integers(1, 3))
    per_agent = st.lists(ARRAYS, min_size=n, max_size=n)
    if cls is InferenceRequest:
        return cls(**fields, obs=draw(per_agent), reward=draw(ARRAYS), done=draw(ARRAYS))
    if cls is InferenceReply:
        return cls(**fields, actions=draw(st.lists(ARRAYS, max_size=3)))
    if cls is Chunk:
        t = Transition(draw(per_agent), draw(per_agent), draw(ARRAYS), draw(per_agent), draw(ARRAYS))
        return cls(**fields, transitions=t, episode_rewards=draw(ARRAYS), episode_lengths=draw(ARRAYS))
    return cls(**fields)


def _same(a, b) -> bool:
    """Equal values, dtypes and shapes; NaN equals NaN (compares the bytes)."""
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _leaves(value) -> list:
    """The arrays of an array field: a list of arrays, a Transition (a tuple of lists and arrays) or an array."""
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


def _assert_well_typed(msg) -> None:
    """Every field has its annotated type, and the learner's checks can look at the message without raising."""
    assert type(msg) in MESSAGE_TYPES
    for name, kind in get_type_hints(type(msg)).items():
        value = getattr(msg, name)
        if kind in SCALARS:
            assert type(value) is kind, (name, value)
            assert kind is not int or abs(value) <= MAX_INT
            assert kind is not float or math.isfinite(value)
        else:
            assert all(isinstance(a, np.ndarray) for a in _leaves(value)), name
    problem = None
    if isinstance(msg, InferenceRequest):  # the server reads obs[0], then runs its checks
        assert msg.obs
        code_problem = request_problem(msg, [2, 3], 4)
        assert code_problem is None or code_problem[0] in ("bad_shape", "bad_value")
        problem = None if code_problem is None else code_problem[1]
    if isinstance(msg, Chunk):
        assert msg.transitions.obs
        problem = chunk_problem(msg, [2, 3], [1, 2])
    assert problem is None or isinstance(problem, str)


def _decodes_or_refuses(frames) -> None:
    try:
        msg = decode(frames)
    except ProtocolError:
        return
    _assert_well_typed(msg)


# ---------------------------------------------------------------- (1) random frames
@FUZZ
@given(st.lists(st.binary(max_size=64), max_size=6))
def test_random_frames_decode_or_raise_a_protocol_error(frames):
    _decodes_or_refuses(frames)


def _mostly(draw, good):
    """A value of `good` seven times in eight, else any msgpack value: deep enough to pass most checks and
    then fail one."""
    return draw(VALUES) if draw(st.integers(0, 7)) == 0 else draw(good)


def _fits(dtype, dims) -> bool:
    return dtype in DTYPES and isinstance(dims, list) and all(type(d) is int and 0 <= d <= 4 for d in dims)


@st.composite
def near_valid_frames(draw):
    """A random header close to a valid one (each part right, random or missing) and frames that mostly
    fit its array specs."""
    name = draw(st.sampled_from(sorted(TYPES)))
    cls = TYPES[name]
    fields = {field: _mostly(draw, SCALARS[kind]) for field, kind in get_type_hints(cls).items()
              if kind in SCALARS and draw(st.integers(0, 15))}
    n = _mostly(draw, st.integers(1, 3))
    if name in ("infer", "chunk") and draw(st.integers(0, 15)):
        fields["n"] = n
    if not draw(st.integers(0, 15)):
        fields[draw(st.sampled_from(["n", "extra"]))] = draw(VALUES)
    count = {"infer": n + 2, "chunk": 3 * n + 4}.get(name, 0) if type(n) is int and 0 <= n <= 4 else 0
    count = draw(st.integers(0, 8)) if name == "reply" or not draw(st.integers(0, 7)) else count
    specs = [[_mostly(draw, st.sampled_from(DTYPES)), _mostly(draw, st.lists(st.integers(0, 4), max_size=3))]
             for _ in range(count)]
    frames = [bytes(np.dtype(t).itemsize * math.prod(d)) if _fits(t, d) and draw(st.integers(0, 15))
              else draw(st.binary(max_size=16)) for t, d in specs]
    header = {"v": _mostly(draw, st.just(2)), "t": _mostly(draw, st.just(name)), "f": _mostly(draw, st.just(fields)),
              "a": _mostly(draw, st.just(specs))}
    return [msgpack.packb(header), *frames]


@FUZZ
@given(near_valid_frames())
def test_near_valid_headers_with_frames_decode_or_raise_a_protocol_error(frames):
    _decodes_or_refuses(frames)


# ---------------------------------------------------------------- (2) mutated valid messages
def _mutate_header(draw, header: dict) -> None:
    """One change to a header: a field, a key or an array spec gets a random value, or dims are swapped."""
    where = draw(st.sampled_from(["field", "key", "spec", "swap"]))
    if where == "field":
        header["f"][draw(st.sampled_from(FIELD_NAMES) | st.text(max_size=4))] = draw(VALUES)
    elif where == "key":
        header[draw(st.sampled_from(["v", "t", "f", "a", "x"]))] = draw(VALUES)
    elif header["a"] and where == "spec":
        spec = header["a"][draw(st.integers(0, len(header["a"]) - 1))]
        spec[draw(st.integers(0, 1))] = draw(VALUES)
    elif header["a"]:
        spec = header["a"][draw(st.integers(0, len(header["a"]) - 1))]
        spec[1] = spec[1][::-1] if draw(st.booleans()) else spec[1] + [draw(st.integers(0, 2**64 - 1))]


def _mutate_frames(draw, frames: list[bytes]) -> None:
    """One change to the frames: a flipped byte, a cut or added frame end, a frame added or removed."""
    what = draw(st.sampled_from(["flip", "cut", "extend", "add", "remove"]))
    i = draw(st.integers(0, len(frames) - 1))
    if what == "flip" and frames[i]:
        pos = draw(st.integers(0, len(frames[i]) - 1))
        frames[i] = frames[i][:pos] + bytes([frames[i][pos] ^ draw(st.integers(1, 255))]) + frames[i][pos + 1:]
    elif what == "cut":
        frames[i] = frames[i][:draw(st.integers(0, len(frames[i])))]
    elif what == "extend":
        frames[i] += draw(st.binary(min_size=1, max_size=8))
    elif what == "add":
        frames.insert(i, draw(st.binary(max_size=16)))
    else:
        del frames[i]


@st.composite
def mutated_frames(draw):
    """The frames of a valid message after a header change and/or up to three changes to the raw frames."""
    frames = [bytes(f) for f in encode(draw(messages()))]
    if draw(st.booleans()):
        header = msgpack.unpackb(frames[0])
        _mutate_header(draw, header)
        frames[0] = msgpack.packb(header)
    for _ in range(draw(st.integers(0, 3))):
        if frames:  # a removal may have taken the last one
            _mutate_frames(draw, frames)
    return frames


@FUZZ
@given(mutated_frames())
def test_mutated_messages_decode_well_typed_or_raise_a_protocol_error(frames):
    _decodes_or_refuses(frames)


# ---------------------------------------------------------------- (3) round trip
@FUZZ
@given(messages())
def test_every_valid_message_survives_the_round_trip(msg):
    for frames in (encode(msg), [bytes(f) for f in encode(msg)]):  # as sent and as received
        back = decode(frames)
        assert type(back) is type(msg) and _same(list(back), list(msg))
    _assert_well_typed(back)


# ---------------------------------------------------------------- (4) blobs
@FUZZ
@given(st.binary(max_size=96))
def test_random_blobs_decode_or_raise_a_protocol_error(blob):
    try:
        _assert_well_typed(decode_blob(blob))
    except ProtocolError:
        pass


@FUZZ
@given(messages(), st.lists(st.tuples(st.sampled_from(["flip", "cut", "extend"]), st.integers(0, 2**16),
                                      st.integers(1, 255)), max_size=3))
def test_valid_blobs_survive_and_mutated_ones_decode_or_raise(msg, changes):
    blob = encode_blob(msg)
    assert _same(list(decode_blob(blob)), list(msg))
    for what, pos, byte in changes:
        pos %= max(len(blob), 1)
        if what == "flip" and blob:
            blob = blob[:pos] + bytes([blob[pos] ^ byte]) + blob[pos + 1:]
        else:
            blob = blob[:pos] if what == "cut" else blob + bytes([byte])
    try:
        _assert_well_typed(decode_blob(blob))
    except ProtocolError:
        pass


# ---------------------------------------------------------------- the value checks against a slow loop
OBS_DIMS, ACT_DIMS, ROWS = [2, 3], [1, 2], 3
FLOATS = st.sampled_from([0.0, 1.0, -2.5, 1e6, -1e6, 1.5e6, np.nan, np.inf, -np.inf])


def _floats(shape):
    return hnp.arrays(np.float32, shape, elements=FLOATS)


@st.composite
def fitting_chunks(draw):
    """Chunks of the right shapes whose values may be anything a broken explorer sends."""
    k = draw(st.integers(0, 2))
    t = Transition([draw(_floats((ROWS, d))) for d in OBS_DIMS], [draw(_floats((ROWS, a))) for a in ACT_DIMS],
                   draw(_floats((ROWS, 2))), [draw(_floats((ROWS, d))) for d in OBS_DIMS],
                   draw(hnp.arrays(np.float32, (ROWS, 2), elements=st.sampled_from([0.0, 1.0, 0.5, np.nan]))))
    return Chunk("e", "r", 1, t, draw(_floats((k, 2))), draw(hnp.arrays(np.int32, (k,), elements=st.integers(-2, 5))))


def _fine(values) -> bool:
    return all(math.isfinite(v) and abs(v) <= 1e6 for v in np.asarray(values).ravel().tolist())


@FUZZ_SLOW
@given(fitting_chunks())
def test_chunk_problem_agrees_with_a_slow_loop(chunk):
    t = chunk.transitions
    fine = (all(_fine(a) for a in [*t.obs, *t.action, t.reward, *t.next_obs, chunk.episode_rewards])
            and all(v in (0.0, 1.0) for v in t.done.ravel().tolist())
            and all(n >= 0 for n in chunk.episode_lengths.tolist()))
    assert (chunk_problem(chunk, OBS_DIMS, ACT_DIMS) is None) == fine


@FUZZ
@given(_floats((ROWS, 2)), _floats((ROWS, 3)), _floats((ROWS, 2)))
def test_request_problem_agrees_with_a_slow_loop(obs0, obs1, reward):
    request = InferenceRequest("e", "r", 1, [obs0, obs1], reward, np.zeros(ROWS, bool))
    fine = _fine(obs0) and _fine(obs1) and _fine(reward)
    assert (request_problem(request, OBS_DIMS, ROWS) is None) == fine
