"""`maddpg checkpoints list|show|prune URI`: inspect and trim a checkpoint store from the console."""

from __future__ import annotations

import argparse
import datetime as dt
import json

from maddpg.storage.base import MANIFEST, CheckpointError
from maddpg.storage.uri import find_store, locate

URI_HELP = ("a run folder, a folder of checkpoints, one ckpt-* checkpoint, file:///path or s3://bucket/prefix "
            "(S3: AWS_ENDPOINT_URL and AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY from the environment)")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_parser(subparsers) -> None:
    """Adds `checkpoints` with its actions `list`, `show` and `prune` to the console script's subparsers."""
    p = subparsers.add_parser("checkpoints", help="list, show or prune the checkpoints of a store (folder or S3)",
                              description="Inspect a checkpoint store. Only complete checkpoints (those whose "
                                          "manifest was written) are listed.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = actions.add_parser("list", help="the complete checkpoints, oldest first, with their counters")
    q.add_argument("uri", metavar="URI", help=URI_HELP)
    q.set_defaults(func=cmd_list)
    q = actions.add_parser("show", help="one checkpoint's manifest (default: the newest)")
    q.add_argument("uri", metavar="URI", help=URI_HELP)
    q.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    q.set_defaults(func=cmd_show)
    q = actions.add_parser("prune", help="delete all but the newest K checkpoints (and half-written older ones)")
    q.add_argument("uri", metavar="URI", help=URI_HELP)
    q.add_argument("--keep", type=_positive, default=3, metavar="K", help="checkpoints to keep (default: 3)")
    q.set_defaults(func=cmd_prune)


def _manifest(store, name: str) -> dict:
    try:
        return json.loads(store.get(name, MANIFEST))
    except ValueError as e:
        raise CheckpointError(f"{store.location(name)}: unreadable manifest: {e}") from None


def _counters(manifest: dict) -> str:
    c = manifest.get("counters", {})
    return " ".join(f"{k}={c[k]}" for k in ("updates", "episodes", "env_steps") if k in c)


def _created(manifest: dict) -> str:
    created = manifest.get("created")
    if created is None:
        return "?"
    return dt.datetime.fromtimestamp(created, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def cmd_list(ns: argparse.Namespace) -> int:
    store = find_store(ns.uri)
    names = store.list()
    print(f"{store.uri}: {len(names)} complete checkpoint{'s' if len(names) != 1 else ''}")
    for name in names:
        manifest = _manifest(store, name)
        size = sum(o.get("bytes", 0) for o in manifest.get("objects", {}).values())
        print(f"  {name}  {_counters(manifest)}  {size / 1e6:.2f} MB  {_created(manifest)}")
    return 0


def cmd_show(ns: argparse.Namespace) -> int:
    store, name = locate(ns.uri)
    manifest = _manifest(store, name)
    if ns.json:
        print(json.dumps(manifest, indent=2))
        return 0
    spec = manifest.get("spec", {})
    print(f"checkpoint: {store.location(name)}")
    print(f"  created: {_created(manifest)}   format: {manifest.get('format')}")
    print(f"  counters: {_counters(manifest)}")
    print(f"  scenario: {spec.get('scenario')}   seed: {spec.get('seed')}")
    for agent in manifest.get("agents", []):
        print(f"    {agent.get('name', '?'):18s} obs {agent.get('obs_dim', '?')}  "
              f"action {agent.get('action_kind', '?')}({agent.get('action_size', '?')})")
    for key, info in manifest.get("objects", {}).items():
        print(f"  {key}: {info.get('bytes', 0):,} bytes  sha256 {info.get('sha256', '?')[:16]}...")
    return 0


def cmd_prune(ns: argparse.Namespace) -> int:
    store = find_store(ns.uri)
    deleted = store.prune(ns.keep)
    for name in deleted:
        print(f"deleted {store.location(name)}")
    kept = store.list()
    print(f"{store.uri}: kept {len(kept)} checkpoint{'s' if len(kept) != 1 else ''}"
          + (f", newest {kept[-1]}" if kept else ""))
    return 0
