"""FileStore and checkpoint.py on it: atomic manifests, listing, reading, retention, damaged checkpoints."""

import json
from pathlib import Path

import numpy as np
import pytest

from maddpg import checkpoint
from maddpg.storage import MANIFEST, CheckpointError, FileStore, StoreError, find_store, locate, open_store
from tests.unit.storage.conftest import counters


def test_put_list_get_round_trip(tmp_path):
    store = FileStore(tmp_path / "ckpts")
    assert store.list() == []
    store.put("ckpt-0000000001-00000001", {"variables.npz": b"abc"}, b"{}")
    store.put("ckpt-0000000002-00000002", {"variables.npz": b"def"}, b"{}")
    assert store.list() == ["ckpt-0000000001-00000001", "ckpt-0000000002-00000002"]
    assert store.get("ckpt-0000000002-00000002", "variables.npz") == b"def"
    assert store.location("ckpt-0000000002-00000002") == tmp_path / "ckpts" / "ckpt-0000000002-00000002"
    assert not [p for p in (tmp_path / "ckpts").rglob("*") if ".tmp" in p.name]


def test_a_crash_between_objects_and_manifest_leaves_no_visible_checkpoint(tmp_path, parts):
    spec, env_spec, arrays = parts
    root = tmp_path / "ckpts"
    checkpoint.save(root, spec, env_spec, arrays, counters(10, 2))
    # What a writer killed after its objects and before its manifest leaves behind:
    name, objects, _ = checkpoint.encode(spec, env_spec, {k: v + 1 for k, v in arrays.items()}, counters(20, 4))
    (root / name).mkdir()
    (root / name / "variables.npz").write_bytes(objects["variables.npz"])

    store = FileStore(root)
    assert store.list() == ["ckpt-0000000010-00000002"]
    assert store.list(complete=False) == ["ckpt-0000000010-00000002", name]
    ckpt = checkpoint.Checkpoint(root)
    assert ckpt.counters["updates"] == 10
    np.testing.assert_array_equal(ckpt.arrays["agent_0/actor/w0"], arrays["agent_0/actor/w0"])
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        checkpoint.Checkpoint(root / name)


def test_save_and_load_are_bit_exact_through_paths_and_uris(tmp_path, parts):
    spec, env_spec, arrays = parts
    where = checkpoint.save(tmp_path / "run" / "checkpoints", spec, env_spec, arrays, counters(7, 3))
    assert where == tmp_path / "run" / "checkpoints" / "ckpt-0000000007-00000003"
    for target in (tmp_path / "run", tmp_path / "run" / "checkpoints", where, f"file://{tmp_path}/run",
                   Path(f"file://{where}")):  # a URI through argparse's Path loses a slash
        ckpt = checkpoint.Checkpoint(target)
        assert ckpt.path == where and ckpt.counters == counters(7, 3) and ckpt.spec == spec
        assert set(ckpt.arrays) == set(arrays)
        for key, value in arrays.items():
            assert ckpt.arrays[key].dtype == value.dtype and ckpt.arrays[key].tobytes() == value.tobytes()
    assert checkpoint.resolve(tmp_path / "run") == where
    assert checkpoint.list_checkpoints(tmp_path / "run" / "checkpoints") == [where]


def test_retention_keeps_the_newest_and_clears_older_half_written_ones(tmp_path, parts):
    spec, env_spec, arrays = parts
    root = tmp_path / "ckpts"
    (root / "ckpt-0000000000-00000000").mkdir(parents=True)  # an old crash: objects, no manifest
    for updates in range(1, 6):
        checkpoint.save(root, spec, env_spec, arrays, counters(updates), keep=2)
    (root / "ckpt-0000000099-00000000").mkdir()  # a write in progress, newer than every complete one
    store = FileStore(root)
    assert store.list() == ["ckpt-0000000004-00000000", "ckpt-0000000005-00000000"]
    assert store.prune(1) == ["ckpt-0000000004-00000000"]
    assert store.list(complete=False) == ["ckpt-0000000005-00000000", "ckpt-0000000099-00000000"]
    with pytest.raises(ValueError):
        store.prune(0)


def test_rewriting_a_name_hides_it_until_its_new_manifest_is_written(tmp_path):
    store = FileStore(tmp_path)
    store.put("ckpt-1", {"variables.npz": b"old"}, b"{}")

    class Cut(Exception):
        pass

    class Failing(dict):  # objects whose second one cannot be produced: the write stops half-way
        def items(self):
            yield "variables.npz", b"new"
            raise Cut

    with pytest.raises(Cut):
        store.put("ckpt-1", Failing(), b"{}")
    assert store.list() == []  # never the old manifest beside new objects


def test_a_changed_object_is_refused(tmp_path, parts):
    spec, env_spec, arrays = parts
    where = checkpoint.save(tmp_path, spec, env_spec, arrays, counters(1))
    data = bytearray((where / "variables.npz").read_bytes())
    data[-30] ^= 0xFF
    (where / "variables.npz").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match its manifest"):
        checkpoint.Checkpoint(where)


def test_a_checkpoint_written_before_stores_still_loads(tmp_path, parts):
    spec, env_spec, arrays = parts
    where = checkpoint.save(tmp_path, spec, env_spec, arrays, counters(1))
    manifest = json.loads((where / MANIFEST).read_text())
    del manifest["objects"]  # the manifests of the folder checkpoints had no object list
    (where / MANIFEST).write_text(json.dumps(manifest))
    assert checkpoint.Checkpoint(where).arrays.keys() == arrays.keys()


def test_errors_name_the_place(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint.Checkpoint(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no complete checkpoint in"):
        locate(tmp_path / "empty")
    with pytest.raises(StoreError, match="does not exist"):
        FileStore(tmp_path).get("ckpt-1", "variables.npz")
    with pytest.raises(StoreError, match="unknown store scheme"):
        open_store("ftp://host/x")
    with pytest.raises(StoreError, match="needs a bucket"):
        open_store("s3:///prefix")


def test_a_run_folder_means_its_checkpoints(tmp_path, parts):
    spec, env_spec, arrays = parts
    checkpoint.save(tmp_path / "run" / "checkpoints", spec, env_spec, arrays, counters(1))
    assert find_store(tmp_path / "run").root == tmp_path / "run" / "checkpoints"
    assert isinstance(open_store(f"file://{tmp_path}"), FileStore)


def test_a_checkpoint_whose_spec_holds_retired_mode_fields_still_reads(tmp_path, parts):
    """Checkpoints written while restore/benchmark/display were run spec fields load, and their run resumes."""
    spec, env_spec, arrays = parts
    where = Path(checkpoint.save(tmp_path / "ckpts", spec, env_spec, arrays, counters(10, 2)))
    manifest = json.loads((where / MANIFEST).read_text())
    manifest["spec"].update(restore="/runs/other", benchmark=False, benchmark_iters=100_000, display=False)
    (where / MANIFEST).write_text(json.dumps(manifest))
    ckpt = checkpoint.Checkpoint(tmp_path / "ckpts")
    assert ckpt.spec == spec and spec.resume_conflicts(ckpt.spec) == []
