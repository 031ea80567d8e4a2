"""The wire format: a msgpack header frame plus one raw little-endian frame per array (zero copy).

Header: {"v": VERSION, "t": type, "f": {scalar fields}, "a": [[dtype, shape], ...]}. Arrays travel in the
order the message type lists them. The scalar fields are those of the NamedTuple in maddpg.types annotated
str, int, bool or float, so a field added there travels (and is checked) without a change here.

`decode` and `decode_blob` take bytes from the network or Redis: any malformed input raises ProtocolError
(never another exception), and nothing is allocated for a size that is declared but not actually present.
Nothing else in the project encodes or decodes messages.
"""

from __future__ import annotations

import math
import reprlib
import struct
from collections.abc import Sequence
from typing import get_type_hints

import msgpack
import numpy as np

from maddpg.types import (Ack, Chunk, Error, Hello, InferenceReply, InferenceRequest, Stop, Transition,
                          Welcome)

VERSION = 2
MAX_AGENTS = 1024  # the header field `n` of requests and chunks
MAX_ARRAYS = 3 * MAX_AGENTS + 4  # a chunk of MAX_AGENTS agents
MAX_NDIM = 8
MAX_DIM = 2**31
MAX_INT = 2**62  # every int field lies in [-MAX_INT, MAX_INT]
MAX_ID = 256  # characters of a str field (ids, codes)...
MAX_TEXT = 1 << 20  # ...except the free-text ones below
MAX_HEADER_BYTES = 8 << 20  # MAX_TEXT characters of up to 4 UTF-8 bytes, plus the array specs
MAX_MESSAGE_BYTES = 1 << 31  # all frames together

_TEXT_FIELDS = {"spec_json", "message", "reason", "queue"}  # run spec, error text, stop reason, Redis URL


class ProtocolError(ValueError):
    """A message that cannot be decoded or does not follow the protocol."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code


_TYPES = {"hello": Hello, "welcome": Welcome, "infer": InferenceRequest, "reply": InferenceReply,
          "chunk": Chunk, "ack": Ack, "stop": Stop, "error": Error}
_NAMES = {cls: name for name, cls in _TYPES.items()}
_DTYPES = {s: np.dtype(s) for s in ("<f4", "|b1", "<i4")}  # np.dtype objects made once: decode is hot
_ARRAY_FIELDS = {InferenceRequest: {"obs", "reward", "done"}, InferenceReply: {"actions"},
                 Chunk: {"transitions", "episode_rewards", "episode_lengths"}}
_COUNTED = {InferenceRequest, Chunk}  # their header also carries `n`, the number of agents
_HEADER_KEYS = {"v", "t", "f", "a"}


def _scalar_fields(cls) -> dict[str, type]:
    """Field name -> annotated type of the fields of `cls` that travel in the header map.

    Raises TypeError at import when maddpg.types gains a field this module cannot carry.
    """
    hints = get_type_hints(cls)
    scalars = {name: hints[name] for name in cls._fields if hints[name] in (str, int, bool, float)}
    others = set(cls._fields) - scalars.keys()
    if others != _ARRAY_FIELDS.get(cls, set()):
        raise TypeError(f"the codec cannot carry {cls.__name__} fields {sorted(others)}")
    return scalars


_SCALARS = {cls: _scalar_fields(cls) for cls in _TYPES.values()}


# ---------------------------------------------------------------- encode
def _arrays(msg) -> tuple[dict, list[np.ndarray]]:
    """Splits a message into scalar fields and its arrays (in a fixed order)."""
    fields = {name: getattr(msg, name) for name in _SCALARS[type(msg)]}
    if isinstance(msg, InferenceRequest):
        fields["n"] = len(msg.obs)
        return fields, [*msg.obs, msg.reward, msg.done]
    if isinstance(msg, InferenceReply):
        return fields, list(msg.actions)
    if isinstance(msg, Chunk):
        t = msg.transitions
        fields["n"] = len(t.obs)
        return fields, [*t.obs, *t.action, t.reward, *t.next_obs, t.done, msg.episode_rewards, msg.episode_lengths]
    return fields, []


def encode(msg) -> list[bytes | memoryview]:
    """Frames of a message: the header, then each array's raw buffer (no copy for contiguous arrays)."""
    fields, arrays = _arrays(msg)
    frames: list[bytes | memoryview] = []
    specs = []
    for a in arrays:
        a = np.asarray(a)
        if a.dtype.byteorder == ">" or not a.flags.c_contiguous:
            a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
        specs.append([a.dtype.str, list(a.shape)])
        frames.append(memoryview(a).cast("B") if a.size else b"")
    header = msgpack.packb({"v": VERSION, "t": _NAMES[type(msg)], "f": fields, "a": specs})
    return [header, *frames]


def encode_blob(msg) -> bytes:
    """One byte string holding a message's frames (for stores that take single values, e.g. Redis streams):
    a little-endian uint32 frame count, one uint32 length per frame, then the frames."""
    frames = encode(msg)
    lengths = [memoryview(f).nbytes for f in frames]
    return struct.pack(f"<{len(frames) + 1}I", len(frames), *lengths) + b"".join(frames)


# ---------------------------------------------------------------- decode
def decode(frames: Sequence[bytes | memoryview]):
    """The message in `frames`.

    Raises:
      ProtocolError: with a code naming what is wrong; decode raises nothing else, whatever the input.
    """
    if not frames:
        raise ProtocolError("empty", "no frames")
    views = [_view(f) for f in frames]
    size = sum(v.nbytes for v in views)
    if size > MAX_MESSAGE_BYTES or views[0].nbytes > MAX_HEADER_BYTES:
        raise ProtocolError("too_large", f"message of {size} bytes, header of {views[0].nbytes}")
    cls, fields, specs = _header(views[0])
    if len(specs) != len(views) - 1:
        raise ProtocolError("bad_frames", f"header names {len(specs)} arrays but {len(views) - 1} frames came")
    return _build(cls, fields, [_array(spec, v) for spec, v in zip(specs, views[1:])])


def _view(frame) -> memoryview:
    """A flat byte view of a frame; anything that is not contiguous bytes is refused, never copied."""
    try:
        view = memoryview(frame)
        if not view.c_contiguous:
            raise ProtocolError("bad_frames", "a frame is not contiguous memory")
        return view if view.ndim == 1 and view.format == "B" else view.cast("B")
    except (TypeError, ValueError) as e:  # not a buffer, a released one, or one cast cannot flatten
        raise ProtocolError("bad_frames", f"a frame is not a byte buffer: {e}") from None


def _header(view: memoryview) -> tuple[type, dict, list]:
    """The message type, its checked scalar fields and its array specs."""
    try:
        header = msgpack.unpackb(view)
    except Exception as e:  # msgpack raises several unrelated types on garbage (bad UTF-8 included)
        raise ProtocolError("bad_header", f"header is not msgpack: {e}") from None
    if type(header) is not dict:
        raise ProtocolError("bad_header", "header is not a map")
    version = header.get("v")
    if type(version) is not int or version != VERSION:
        raise ProtocolError("bad_version", f"protocol version {reprlib.repr(version)}, this side speaks {VERSION}")
    if header.keys() != _HEADER_KEYS:
        raise ProtocolError("bad_header", f"header keys {reprlib.repr(sorted(map(str, header)))}")
    kind = header["t"]
    cls = _TYPES.get(kind) if type(kind) is str else None
    if cls is None:
        raise ProtocolError("bad_type", f"unknown message type {reprlib.repr(kind)}")
    fields, specs = header["f"], header["a"]
    if type(fields) is not dict or type(specs) is not list:
        raise ProtocolError("bad_header", "header needs a field map 'f' and an array list 'a'")
    if len(specs) > MAX_ARRAYS:
        raise ProtocolError("too_large", f"{len(specs)} arrays, at most {MAX_ARRAYS}")
    return cls, _fields(cls, fields), specs


def _fields(cls, raw: dict) -> dict:
    """The scalar fields of a `cls` message (plus `n`), each of its annotated type; a missing one takes the
    NamedTuple's default, and is refused when there is none."""
    types = _SCALARS[cls]
    unknown = raw.keys() - types.keys() - ({"n"} if cls in _COUNTED else set())
    if unknown:
        raise ProtocolError("bad_fields", f"{cls.__name__} has no fields {reprlib.repr(sorted(map(str, unknown)))}")
    fields = {}
    for name, kind in types.items():
        if name in raw:
            fields[name] = _scalar(name, kind, raw[name])
        elif name in cls._field_defaults:
            fields[name] = cls._field_defaults[name]
        else:
            raise ProtocolError("bad_fields", f"{cls.__name__} needs field {name!r}")
    if cls in _COUNTED:
        n = raw.get("n")
        if type(n) is not int or not 1 <= n <= MAX_AGENTS:
            raise ProtocolError("bad_fields", f"n must be an int in 1..{MAX_AGENTS}, got {reprlib.repr(n)}")
        fields["n"] = n
    return fields


def _scalar(name: str, kind: type, value):
    """`value` if it is exactly of type `kind` and within bounds (a bool is no int, an int no str)."""
    if type(value) is not kind:
        raise ProtocolError("bad_fields", f"{name} must be {kind.__name__}, got {type(value).__name__}")
    if kind is int and not -MAX_INT <= value <= MAX_INT:
        raise ProtocolError("bad_fields", f"{name} = {value} is out of range")
    if kind is float and not math.isfinite(value):
        raise ProtocolError("bad_fields", f"{name} = {value} is not finite")
    if kind is str and len(value) > (MAX_TEXT if name in _TEXT_FIELDS else MAX_ID):
        raise ProtocolError("bad_fields", f"{name} of {len(value)} characters is too long")
    return value


def _array(spec, view: memoryview) -> np.ndarray:
    """The array a frame holds, once its spec [dtype, [dims]] is checked and matches the frame's size
    (sizes are Python ints: no overflow, and nothing is allocated before the check)."""
    if type(spec) is not list or len(spec) != 2:
        raise ProtocolError("bad_header", f"array spec {reprlib.repr(spec)} is not [dtype, shape]")
    dtype, shape = spec
    dtype = _DTYPES.get(dtype) if type(dtype) is str else None
    if dtype is None:
        raise ProtocolError("bad_dtype", f"array spec {reprlib.repr(spec)}: dtype must be one of {sorted(_DTYPES)}")
    if (type(shape) is not list or len(shape) > MAX_NDIM
            or not all(type(d) is int and 0 <= d <= MAX_DIM for d in shape)):  # bool is an int: type(), not isinstance
        raise ProtocolError("bad_shape", f"array spec {reprlib.repr(spec)}: shape must be up to {MAX_NDIM} "
                                         f"ints in 0..{MAX_DIM}")
    if dtype.itemsize * math.prod(shape) != view.nbytes:
        raise ProtocolError("bad_shape", f"frame of {view.nbytes} bytes for shape {shape} {spec[0]}")
    return np.frombuffer(view, dtype=dtype).reshape(shape)


def _build(cls, fields: dict, arrays: list[np.ndarray]):
    """The message of type `cls` from its checked fields and arrays."""
    if cls is InferenceReply:
        return InferenceReply(**fields, actions=arrays)
    if cls not in _COUNTED:
        if arrays:
            raise ProtocolError("bad_frames", f"{cls.__name__} carries no arrays, got {len(arrays)}")
        return cls(**fields)
    n = fields.pop("n")
    expected = n + 2 if cls is InferenceRequest else 3 * n + 4
    if len(arrays) != expected:
        raise ProtocolError("bad_fields", f"expected {expected} arrays for {n} agents, got {len(arrays)}")
    if cls is InferenceRequest:
        return InferenceRequest(**fields, obs=arrays[:n], reward=arrays[n], done=arrays[n + 1])
    t = Transition(arrays[:n], arrays[n:2 * n], arrays[2 * n], arrays[2 * n + 1:3 * n + 1], arrays[3 * n + 1])
    return Chunk(**fields, transitions=t, episode_rewards=arrays[3 * n + 2], episode_lengths=arrays[3 * n + 3])


def decode_blob(blob: bytes):
    """The message in a blob of `encode_blob`.

    Raises:
      ProtocolError: if the blob is cut or malformed; decode_blob raises nothing else, whatever the input.
    """
    try:
        view = _view(blob)
    except ProtocolError as e:
        raise ProtocolError("bad_blob", str(e)) from None
    if view.nbytes < 4:
        raise ProtocolError("bad_blob", "blob shorter than its frame count")
    count = int.from_bytes(view[:4], "little")
    start = 4 * (count + 1)
    if count > MAX_ARRAYS + 1 or view.nbytes < start:
        raise ProtocolError("bad_blob", f"blob of {view.nbytes} bytes cannot hold {count} frames")
    lengths = struct.unpack(f"<{count}I", view[4:start])
    if start + sum(lengths) != view.nbytes:
        raise ProtocolError("bad_blob", "frame lengths do not add up to the blob's size")
    frames = []
    for n in lengths:
        frames.append(view[start:start + n])
        start += n
    return decode(frames)


# ---------------------------------------------------------------- checks against the run's agents
def _value_problem(name: str, a: np.ndarray, max_abs: float, agent: int | None = None) -> str | None:
    """Why float array `a` of one agent (or, with agent None, [rows, N] of all agents) holds a value the
    learner must not train on, or None. One reduction on the fast path: NaN fails `<=` like inf does (and
    `max(initial=...)` would cost more than the reduction itself, hence the size test)."""
    if not a.size or np.abs(a).max() <= max_abs:
        return None
    if agent is None:  # only now, on the slow path: the first agent column with a bad value
        agent = int(np.argmax(~(np.abs(a) <= max_abs).all(axis=0)))
        a = a[:, agent]
    what = "NaN or inf" if not np.isfinite(a).all() else f"a value beyond +-{max_abs:g}"
    return f"{name} of agent {agent} holds {what}"


def _agent_values_problem(name: str, arrays: list[np.ndarray], max_abs: float) -> str | None:
    """The first problem of `_value_problem` among one array per agent."""
    for i, a in enumerate(arrays):
        problem = _value_problem(name, a, max_abs, i)
        if problem:
            return problem
    return None


def chunk_problem(msg: Chunk, obs_dims: list[int], act_dims: list[int], *, max_abs: float = 1e6) -> str | None:
    """Why a decoded chunk does not fit the agents' observation and action sizes, or holds values the
    learner must not train on (NaN, inf, beyond `max_abs`, a done other than 0/1, a negative episode
    length); None if it is fine."""
    t, n = msg.transitions, len(obs_dims)
    rows = t.reward.shape[0] if t.reward.ndim == 2 else -1
    expected = ([(rows, d) for d in obs_dims] + [(rows, a) for a in act_dims] + [(rows, n)]
                + [(rows, d) for d in obs_dims] + [(rows, n)])
    got = [*t.obs, *t.action, t.reward, *t.next_obs, t.done]
    if len(got) != len(expected) or any(a.shape != s or a.dtype != np.float32 for a, s in zip(got, expected)):
        return "chunk arrays do not match the agents' observation and action sizes"
    k = msg.episode_lengths.shape[0] if msg.episode_lengths.ndim == 1 else -1
    if (msg.episode_rewards.shape != (k, n) or msg.episode_rewards.dtype != np.float32
            or msg.episode_lengths.dtype != np.int32):
        return "episode_rewards must be float32[K, N] and episode_lengths int32[K]"
    if not ((t.done == 0) | (t.done == 1)).all():
        return "done holds a value other than 0 and 1"
    if msg.episode_lengths.size and msg.episode_lengths.min() < 0:
        return "episode_lengths holds a negative length"
    return (_agent_values_problem("obs", t.obs, max_abs) or _agent_values_problem("action", t.action, max_abs)
            or _value_problem("reward", t.reward, max_abs)
            or _agent_values_problem("next_obs", t.next_obs, max_abs)
            or _value_problem("episode_rewards", msg.episode_rewards, max_abs))


def request_problem(msg: InferenceRequest, obs_dims: list[int], num_envs: int, *,
                    max_abs: float = 1e6) -> tuple[str, str] | None:
    """Why a decoded request does not fit the agents' observation sizes and the explorer's env count
    ("bad_shape"), or holds an observation or reward that is NaN, inf or beyond `max_abs` ("bad_value"), as
    (error code, message); None if it is fine."""
    e, n = num_envs, len(obs_dims)
    if len(msg.obs) != n:
        return "bad_shape", f"{len(msg.obs)} observation arrays for {n} agents"
    for i, (o, d) in enumerate(zip(msg.obs, obs_dims)):
        if o.dtype != np.float32 or o.shape != (e, d):
            return "bad_shape", f"obs of agent {i}: {o.dtype}{list(o.shape)}, expected float32[{e}, {d}]"
    if msg.reward.dtype != np.float32 or msg.reward.shape != (e, n):
        return "bad_shape", f"reward: {msg.reward.dtype}{list(msg.reward.shape)}, expected float32[{e}, {n}]"
    if msg.done.dtype != np.bool_ or msg.done.shape != (e,):
        return "bad_shape", f"done: {msg.done.dtype}{list(msg.done.shape)}, expected bool[{e}]"
    problem = _agent_values_problem("obs", msg.obs, max_abs) or _value_problem("reward", msg.reward, max_abs)
    return None if problem is None else ("bad_value", problem)
