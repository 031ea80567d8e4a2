"""Checkpoint stores: a folder or S3 (any S3-compatible server), with manifests written last and retention."""

from maddpg.storage.background import BackgroundCheckpointer, CheckpointStats
from maddpg.storage.base import MANIFEST, CheckpointError, CheckpointStore, StoreError, checkpoint_name
from maddpg.storage.file import FileStore
from maddpg.storage.uri import find_store, locate, open_store

__all__ = ["MANIFEST", "BackgroundCheckpointer", "CheckpointError", "CheckpointStats", "CheckpointStore",
           "FileStore", "StoreError", "checkpoint_name", "find_store", "locate", "open_store"]
