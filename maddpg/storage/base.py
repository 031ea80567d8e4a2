"""The checkpoint store interface: a checkpoint is a few named objects plus a manifest written last."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path

from maddpg.errors import UserError

MANIFEST = "manifest.json"
PREFIX = "ckpt-"


class CheckpointError(UserError):
    """A checkpoint is missing, unreadable or does not fit the run."""


class StoreError(CheckpointError):
    """A store cannot be reached or refused a request; the message names the store and the fix.

    `transient` is True for errors that may pass on their own (server down, 5xx), worth retrying.
    """

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


def checkpoint_name(updates: int, episodes: int) -> str:
    """`ckpt-<updates:010d>-<episodes:08d>`: names sort in the order they were written."""
    return f"{PREFIX}{updates:010d}-{episodes:08d}"


def check_key(key: str) -> None:
    if not key or "/" in key or key == MANIFEST or key.startswith("."):
        raise ValueError(f"bad object name {key!r}: a plain file name other than {MANIFEST}")


class CheckpointStore(ABC):
    """Where checkpoints live: each is a name (`ckpt-...`) holding a few objects and a manifest.

    A writer calls `put(name, objects, manifest)`: the objects are stored first and the manifest last, so a
    checkpoint is visible only once whole; then `prune(keep)`. A reader calls `list()` (complete checkpoints,
    those with a manifest, oldest first) and `get(name, key)` for the manifest and the objects it names.
    """

    uri: str  # where the store is, for messages: a folder or s3://bucket/prefix

    @abstractmethod
    def put(self, name: str, objects: Mapping[str, bytes], manifest: bytes) -> None:
        """Stores the objects, then the manifest. Raises StoreError; a failure leaves other checkpoints as they were."""

    @abstractmethod
    def list(self, complete: bool = True) -> list[str]:
        """Checkpoint names, oldest first: only those with a manifest, or (`complete=False`) every one begun."""

    @abstractmethod
    def get(self, name: str, key: str) -> bytes:
        """One object of a checkpoint (`MANIFEST` or a name the manifest lists). Raises StoreError."""

    @abstractmethod
    def delete(self, name: str) -> None:
        """Removes a checkpoint: its manifest first (readers stop seeing it), then its objects."""

    @abstractmethod
    def child(self, name: str) -> CheckpointStore:
        """The store one level below this one (e.g. a run folder's `checkpoints`)."""

    @abstractmethod
    def location(self, name: str) -> Path | str:
        """Where one checkpoint is: a folder for a file store, a URI otherwise."""

    def prune(self, keep: int) -> list[str]:
        """Deletes all but the newest `keep` complete checkpoints, and any half-written one older than those.

        Returns the names deleted, oldest first.
        """
        if keep < 1:
            raise ValueError(f"keep must be at least 1, not {keep}")
        kept = self.list()[-keep:]
        if not kept:
            return []
        doomed = [n for n in self.list(complete=False) if n < kept[-1] and n not in kept]
        for name in doomed:
            self.delete(name)
        return doomed
