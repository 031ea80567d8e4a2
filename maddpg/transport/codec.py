"""The wire format: a msgpack header frame plus one raw little-endian frame per array (zero copy).

Header: {"v": VERSION, "t": type, "f": {scalar fields}, "a": [[dtype, shape], ...]}. Arrays travel in the
order the message type lists them. `decode` checks the version, the type, the array count, every dtype and
that every frame's size matches its declared shape, and raises ProtocolError otherwise. Nothing else in the
project encodes or decodes messages.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgpack
import numpy as np

from maddpg.types import (Ack, Chunk, Error, Hello, InferenceReply, InferenceRequest, Stop, Transition,
                          Welcome)

VERSION = 2
MAX_ARRAYS = 1024


class ProtocolError(ValueError):
    """A message that cannot be decoded or does not follow the protocol."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code


_TYPES = {"hello": Hello, "welcome": Welcome, "infer": InferenceRequest, "reply": InferenceReply,
          "chunk": Chunk, "ack": Ack, "stop": Stop, "error": Error}
_NAMES = {cls: name for name, cls in _TYPES.items()}
_ALLOWED_DTYPES = {"<f4", "|b1", "<i4"}


def _arrays(msg) -> tuple[dict, list[np.ndarray]]:
    """Splits a message into scalar fields and its arrays (in a fixed order)."""
    if isinstance(msg, InferenceRequest):
        fields = {"explorer_id": msg.explorer_id, "run_id": msg.run_id, "seq": msg.seq, "n": len(msg.obs)}
        return fields, [*msg.obs, msg.reward, msg.done]
    if isinstance(msg, InferenceReply):
        return {"seq": msg.seq, "durable_chunk": msg.durable_chunk}, list(msg.actions)
    if isinstance(msg, Chunk):
        t = msg.transitions
        fields = {"explorer_id": msg.explorer_id, "run_id": msg.run_id, "seq": msg.seq, "n": len(t.obs)}
        return fields, [*t.obs, *t.action, t.reward, *t.next_obs, t.done, msg.episode_rewards, msg.episode_lengths]
    return msg._asdict(), []


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


def decode(frames: Sequence[bytes | memoryview]):
    """The message in `frames`; raises ProtocolError with a code naming what is wrong."""
    if not frames:
        raise ProtocolError("empty", "no frames")
    try:
        header = msgpack.unpackb(bytes(frames[0]))
    except Exception as e:  # msgpack raises several unrelated types on garbage
        raise ProtocolError("bad_header", f"header is not msgpack: {e}") from None
    if not isinstance(header, dict):
        raise ProtocolError("bad_header", "header is not a map")
    if header.get("v") != VERSION:
        raise ProtocolError("bad_version", f"protocol version {header.get('v')!r}, this side speaks {VERSION}")
    kind = header.get("t")
    if kind not in _TYPES:
        raise ProtocolError("bad_type", f"unknown message type {kind!r}")
    fields, specs = header.get("f"), header.get("a")
    if not isinstance(fields, dict) or not isinstance(specs, list) or len(specs) > MAX_ARRAYS:
        raise ProtocolError("bad_header", "header needs a field map 'f' and an array list 'a'")
    if len(specs) != len(frames) - 1:
        raise ProtocolError("bad_frames", f"header names {len(specs)} arrays but {len(frames) - 1} frames came")
    arrays = [_array(spec, frame) for spec, frame in zip(specs, frames[1:])]
    try:
        return _build(_TYPES[kind], fields, arrays)
    except (TypeError, KeyError, ValueError) as e:
        raise ProtocolError("bad_fields", f"{kind}: {e}") from None


def _array(spec, frame) -> np.ndarray:
    if (not isinstance(spec, list) or len(spec) != 2 or spec[0] not in _ALLOWED_DTYPES
            or not isinstance(spec[1], list) or not all(isinstance(d, int) and d >= 0 for d in spec[1])):
        raise ProtocolError("bad_dtype", f"array spec {spec!r}: dtype must be one of {sorted(_ALLOWED_DTYPES)}")
    dtype = np.dtype(spec[0])
    expected = dtype.itemsize * int(np.prod(spec[1], dtype=np.int64))
    buf = memoryview(frame)
    if buf.nbytes != expected:
        raise ProtocolError("bad_shape", f"frame of {buf.nbytes} bytes for shape {spec[1]} {spec[0]}")
    return np.frombuffer(buf, dtype=dtype).reshape(spec[1])


def _build(cls, fields: dict, arrays: list[np.ndarray]):
    if cls is InferenceRequest:
        n = int(fields["n"])
        if len(arrays) != n + 2:
            raise ValueError(f"expected {n + 2} arrays for {n} agents, got {len(arrays)}")
        return InferenceRequest(str(fields["explorer_id"]), str(fields["run_id"]), int(fields["seq"]),
                                arrays[:n], arrays[n], arrays[n + 1])
    if cls is InferenceReply:
        return InferenceReply(int(fields["seq"]), arrays, int(fields.get("durable_chunk", 0)))
    if cls is Chunk:
        n = int(fields["n"])
        if len(arrays) != 3 * n + 4:
            raise ValueError(f"expected {3 * n + 4} arrays for {n} agents, got {len(arrays)}")
        t = Transition(arrays[:n], arrays[n:2 * n], arrays[2 * n], arrays[2 * n + 1:3 * n + 1], arrays[3 * n + 1])
        return Chunk(str(fields["explorer_id"]), str(fields["run_id"]), int(fields["seq"]), t,
                     arrays[3 * n + 2], arrays[3 * n + 3])
    if arrays:
        raise ValueError(f"{cls.__name__} carries no arrays")
    return cls(**fields)


def encode_blob(msg) -> bytes:
    """One byte string holding a message's frames (for stores that take single values, e.g. Redis streams):
    a little-endian uint32 frame count, one uint32 length per frame, then the frames."""
    frames = [bytes(f) for f in encode(msg)]
    lengths = np.array([len(frames), *map(len, frames)], "<u4").tobytes()
    return lengths + b"".join(frames)


def decode_blob(blob: bytes):
    """The message in a blob of `encode_blob`; raises ProtocolError if it is cut or malformed."""
    view = memoryview(blob)
    if view.nbytes < 4:
        raise ProtocolError("bad_blob", "blob shorter than its frame count")
    count = int(np.frombuffer(view[:4], "<u4")[0])
    if count > MAX_ARRAYS + 1 or view.nbytes < 4 * (count + 1):
        raise ProtocolError("bad_blob", f"blob of {view.nbytes} bytes cannot hold {count} frames")
    lengths = np.frombuffer(view[4:4 * (count + 1)], "<u4").astype(np.int64)
    if 4 * (count + 1) + int(lengths.sum()) != view.nbytes:
        raise ProtocolError("bad_blob", "frame lengths do not add up to the blob's size")
    frames, offset = [], 4 * (count + 1)
    for n in lengths:
        frames.append(view[offset:offset + n])
        offset += int(n)
    return decode(frames)


def chunk_problem(msg: Chunk, obs_dims: list[int], act_dims: list[int]) -> str | None:
    """Why a decoded chunk does not fit the agents' observation and action sizes, or None if it does."""
    t, n = msg.transitions, len(obs_dims)
    rows = t.reward.shape[0] if t.reward.ndim == 2 else -1
    expected = ([(rows, d) for d in obs_dims] + [(rows, a) for a in act_dims] + [(rows, n)]
                + [(rows, d) for d in obs_dims] + [(rows, n)])
    got = [*t.obs, *t.action, t.reward, *t.next_obs, t.done]
    if len(got) != len(expected) or any(a.shape != s or a.dtype != np.float32 for a, s in zip(got, expected)):
        return "chunk arrays do not match the agents' observation and action sizes"
    k = msg.episode_lengths.shape[0] if msg.episode_lengths.ndim == 1 else -1
    if msg.episode_rewards.shape != (k, n) or msg.episode_lengths.dtype != np.int32:
        return "episode_rewards must be float32[K, N] and episode_lengths int32[K]"
    return None
