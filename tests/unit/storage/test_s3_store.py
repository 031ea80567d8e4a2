"""S3Store against moto's S3 server (real HTTP on a loopback port): layout, listing, retention, errors."""

import numpy as np
import pytest

from maddpg import checkpoint
from maddpg.storage import CheckpointError, StoreError, find_store, locate, open_store
from maddpg.storage.s3 import S3Store
from tests.s3_server import free_ports
from tests.unit.storage.conftest import counters


def _store(server, bucket, prefix="run/checkpoints", **kwargs):
    return S3Store(bucket, prefix, endpoint_url=server.endpoint_url, access_key="test", secret_key="test",
                   **kwargs)


def test_objects_then_manifest_under_the_prefix(moto_server, bucket, parts):
    spec, env_spec, arrays = parts
    store = _store(moto_server, bucket)
    where = checkpoint.save(store, spec, env_spec, arrays, counters(12, 3))
    assert where == f"s3://{bucket}/run/checkpoints/ckpt-0000000012-00000003"
    keys = sorted(o["Key"] for o in moto_server.client().list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["run/checkpoints/ckpt-0000000012-00000003/manifest.json",
                    "run/checkpoints/ckpt-0000000012-00000003/variables.npz"]
    ckpt = checkpoint.Checkpoint(where)
    assert ckpt.counters == counters(12, 3)
    for key, value in arrays.items():
        assert ckpt.arrays[key].tobytes() == value.tobytes()


def test_half_written_checkpoints_are_invisible_and_pruned(moto_server, bucket, parts):
    spec, env_spec, arrays = parts
    store = _store(moto_server, bucket)
    name, objects, _ = checkpoint.encode(spec, env_spec, arrays, counters(0))
    moto_server.client().put_object(Bucket=bucket, Key=f"run/checkpoints/{name}/variables.npz",
                                    Body=objects["variables.npz"])  # a writer that died before its manifest
    assert store.list() == [] and store.list(complete=False) == [name]
    for updates in (1, 2, 3):
        checkpoint.save(store, spec, env_spec, arrays, counters(updates), keep=2)
    assert store.list() == ["ckpt-0000000002-00000000", "ckpt-0000000003-00000000"]
    assert store.list(complete=False) == store.list()
    assert store.prune(1) == ["ckpt-0000000002-00000000"]
    assert locate(f"s3://{bucket}/run")[1] == "ckpt-0000000003-00000000"  # a run prefix means its checkpoints


def test_uris_pick_the_store_and_the_checkpoint(moto_server, bucket, parts):
    spec, env_spec, arrays = parts
    first = checkpoint.save(f"s3://{bucket}/p", spec, env_spec, arrays, counters(1))
    checkpoint.save(f"s3://{bucket}/p", spec, env_spec, arrays, counters(2))
    store = open_store(f"s3://{bucket}/p/")
    assert isinstance(store, S3Store) and store.prefix == "p" and store.endpoint_url == moto_server.endpoint_url
    assert checkpoint.resolve(f"s3://{bucket}/p") == f"s3://{bucket}/p/ckpt-0000000002-00000000"
    assert checkpoint.Checkpoint(first).counters["updates"] == 1
    assert find_store(f"s3://{bucket}/p").uri == f"s3://{bucket}/p"
    with pytest.raises(CheckpointError, match="no complete checkpoint in"):
        checkpoint.Checkpoint(f"s3://{bucket}/elsewhere")
    with pytest.raises(StoreError, match="no such object"):
        store.get("ckpt-9", "manifest.json")


def test_a_missing_bucket_is_named_with_the_fix(moto_server, parts):
    store = _store(moto_server, "no-such-bucket")
    with pytest.raises(StoreError) as info:
        store.list()
    assert "'no-such-bucket' does not exist" in str(info.value) and "create it" in str(info.value)


def test_an_unreachable_server_is_reported_and_nothing_is_half_written(parts):
    spec, env_spec, arrays = parts
    port = free_ports(1)[0]  # nothing listens there
    store = S3Store("b", "p", endpoint_url=f"http://127.0.0.1:{port}", access_key="x", secret_key="y",
                    max_attempts=2, manifest_attempts=1)
    with pytest.raises(StoreError) as info:
        checkpoint.save(store, spec, env_spec, arrays, counters(1))
    message = str(info.value)
    assert "cannot be reached" in message and f"127.0.0.1:{port}" in message and "'b'" in message
    assert "previous ones are untouched" in message and info.value.transient


def test_arrays_of_every_dtype_survive(moto_server, bucket, parts):
    spec, env_spec, _ = parts
    arrays = {"f64": np.linspace(0, 1, 7), "i8": np.arange(-3, 3, dtype=np.int8), "empty": np.zeros((0, 3)),
              "u64": np.array([2**64 - 1], dtype=np.uint64), "bool": np.array([True, False])}
    where = checkpoint.save(_store(moto_server, bucket), spec, env_spec, arrays, counters(1))
    back = checkpoint.Checkpoint(where).arrays
    for key, value in arrays.items():
        assert back[key].dtype == value.dtype and back[key].shape == value.shape
        assert back[key].tobytes() == value.tobytes()
