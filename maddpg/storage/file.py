"""Checkpoints in a local folder: `<root>/ckpt-.../<object>` and `manifest.json`, each written atomically."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from maddpg.storage.base import MANIFEST, PREFIX, CheckpointStore, StoreError, check_key


def _write_atomic(path: Path, data: bytes) -> None:
    """Writes a temporary file beside `path`, syncs it and renames it into place: never half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _sync_folder(path: Path) -> None:
    """Makes the renames inside `path` durable (a crash of the machine, not only of the process)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileStore(CheckpointStore):
    """A folder of checkpoints.

    Args:
      root: the folder (created on the first write).
    """

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.uri = str(self.root)

    def put(self, name: str, objects: Mapping[str, bytes], manifest: bytes) -> None:
        folder = self.root / name
        try:
            # Rewriting a name: drop its manifest first, so no reader pairs it with the new objects.
            (folder / MANIFEST).unlink(missing_ok=True)
            folder.mkdir(parents=True, exist_ok=True)
            for key, data in objects.items():
                check_key(key)
                _write_atomic(folder / key, data)
            _write_atomic(folder / MANIFEST, manifest)
            _sync_folder(folder)
        except OSError as e:
            raise StoreError(f"cannot write checkpoint {name} to {self.root}: {e}") from None

    def list(self, complete: bool = True) -> list[str]:
        if not self.root.is_dir():
            return []
        try:
            return sorted(p.name for p in self.root.iterdir() if p.name.startswith(PREFIX) and p.is_dir()
                          and (not complete or (p / MANIFEST).is_file()))
        except OSError as e:
            raise StoreError(f"cannot list checkpoints in {self.root}: {e}") from None

    def get(self, name: str, key: str) -> bytes:
        path = self.root / name / key
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise StoreError(f"{path} does not exist") from None
        except OSError as e:
            raise StoreError(f"cannot read {path}: {e}") from None

    def delete(self, name: str) -> None:
        folder = self.root / name
        try:
            (folder / MANIFEST).unlink(missing_ok=True)
            shutil.rmtree(folder, ignore_errors=False)
        except FileNotFoundError:
            return
        except OSError as e:
            raise StoreError(f"cannot delete {folder}: {e}") from None

    def child(self, name: str) -> FileStore:
        return FileStore(self.root / name)

    def location(self, name: str) -> Path:
        return self.root / name

    def __repr__(self) -> str:
        return f"FileStore({str(self.root)!r})"
