"""From a URI or a path to a store and a checkpoint: `s3://bucket/prefix`, `file:///path` or a plain path."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlparse

from maddpg.storage.base import MANIFEST, PREFIX, CheckpointError, CheckpointStore, StoreError
from maddpg.storage.file import FileStore

RUN_CHECKPOINTS = "checkpoints"  # a run folder keeps its checkpoints here


def _text(target: str | Path) -> str:
    text = str(target)
    # A URI that went through pathlib lost its double slash ("s3://b/p" -> "s3:/b/p"): put it back.
    text = re.sub(r"^s3:/(?!/)", "s3://", text)
    return re.sub(r"^file:/(?!/)", "file:///", text)


def open_store(uri: str | Path, **s3_options) -> CheckpointStore:
    """The store at `uri`: `s3://bucket/prefix` (an S3Store; `s3_options` go to it), `file:///path` or a path.

    Raises:
      StoreError: an unknown scheme or an S3 URI without a bucket.
    """
    text = _text(uri)
    if "://" not in text:
        return FileStore(Path(text))
    parsed = urlparse(text)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise StoreError(f"{text}: a file:// URI names a local path (file:///path), not host {parsed.netloc!r}")
        return FileStore(Path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StoreError(f"{text}: an S3 URI needs a bucket: s3://bucket/prefix")
        from maddpg.storage.s3 import S3Store

        return S3Store(parsed.netloc, parsed.path, **s3_options)
    raise StoreError(f"{text}: unknown store scheme {parsed.scheme!r}; use s3://bucket/prefix, file:///path "
                     f"or a folder")


def find_store(target: str | Path | CheckpointStore) -> CheckpointStore:
    """The store of checkpoints meant by `target`: itself, or a run folder's `checkpoints/`.

    Raises:
      CheckpointError: neither holds a complete checkpoint (StoreError: the store cannot be read).
    """
    store = target if isinstance(target, CheckpointStore) else open_store(target)
    inner = store.child(RUN_CHECKPOINTS)
    for candidate in (inner, store):
        if candidate.list():
            return candidate
    if isinstance(store, FileStore) and not store.root.exists():
        raise CheckpointError(f"{store.root} does not exist")
    raise CheckpointError(f"no complete checkpoint in {store.uri} (expected a run folder, a folder of "
                          f"checkpoints or a {PREFIX}* checkpoint)")


def locate(target: str | Path | CheckpointStore) -> tuple[CheckpointStore, str]:
    """The store and name of the checkpoint meant by `target`: one checkpoint, or the newest in a store or
    a run folder.

    Raises:
      CheckpointError: no complete checkpoint there (StoreError: the store cannot be read).
    """
    if not isinstance(target, CheckpointStore):
        text = _text(target)
        if "://" not in text and (Path(text) / MANIFEST).is_file():  # a checkpoint folder, whatever its name
            return FileStore(Path(text).parent), Path(text).name
        parent, _, last = text.rstrip("/").rpartition("/")
        if last.startswith(PREFIX) and parent and not parent.endswith(":/"):
            store = open_store(parent)
            if last in store.list():
                return store, last
            if store.list(complete=False).count(last):
                raise CheckpointError(f"{store.location(last)} is not a complete checkpoint (it has no manifest)")
    store = find_store(target)
    return store, store.list()[-1]
