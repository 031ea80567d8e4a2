"""S3 checkpoints on a real SeaweedFS (`weed server -s3` with an -s3.config of test credentials, so a wrong
secret is refused), started on free loopback ports: the store, failures mid-upload, the CLI, a whole run."""

import os
import subprocess

import numpy as np
import pytest

from maddpg import checkpoint
from maddpg.envs.spaces import AgentSpec, EnvSpec
from maddpg.runspec import RunSpec
from maddpg.storage import StoreError
from maddpg.storage.s3 import S3Store
from tests.s3_server import SeaweedServer, s3_env
from tests.integration.cli import MADDPG

BUCKET = "maddpg"
TINY = ["--scenario", "simple", "--num-episodes", "12", "--learning-starts", "50", "--batch-size", "32",
        "--update-every", "10", "--num-units", "16", "--save-rate", "5", "--quiet"]


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory):
    """The server, and the environment pointing boto3 at it (as a user configures `maddpg`)."""
    with SeaweedServer(tmp_path_factory.mktemp("seaweed")) as server, pytest.MonkeyPatch.context() as mp:
        for key, value in s3_env(server).items():
            mp.setenv(key, value)
        server.make_bucket(BUCKET)
        yield server


@pytest.fixture
def parts():
    spec = RunSpec(scenario="simple")
    env_spec = EnvSpec("simple", (AgentSpec("agent_0", 4, "discrete", 5, (5,)),))
    rng = np.random.default_rng(1)
    arrays = {"agent_0/actor/w0": rng.normal(size=(4, 64)).astype(np.float32),
              "agent_0/critic/w0": rng.normal(size=(600, 512)).astype(np.float32),  # 1.2 MB: a real body
              "rng": np.array([2**63 - 1, 7], dtype=np.int64)}
    return spec, env_spec, arrays


def _store(server, prefix, **kwargs):
    return S3Store(BUCKET, prefix, endpoint_url=server.endpoint_url, access_key=server.access_key,
                   secret_key=server.secret_key, **kwargs)


def _counters(updates):
    return {"updates": updates, "episodes": updates, "env_steps": 25 * updates}


def _maddpg(*args, env, timeout=120):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "SDL_VIDEODRIVER": "dummy", **env}
    return subprocess.run([MADDPG, *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_write_list_read_back_bit_exact_and_prune(seaweed, parts):
    spec, env_spec, arrays = parts
    store = _store(seaweed, "store/checkpoints")
    for updates in (1, 2, 3, 4):
        where = checkpoint.save(store, spec, env_spec, {k: v + updates for k, v in arrays.items()},
                                _counters(updates), keep=3)
    assert store.list() == [f"ckpt-{u:010d}-{u:08d}" for u in (2, 3, 4)]
    ckpt = checkpoint.Checkpoint(f"s3://{BUCKET}/store")  # a run prefix: its checkpoints/, the newest
    assert ckpt.path == where and ckpt.counters == _counters(4)
    for key, value in arrays.items():
        assert ckpt.arrays[key].dtype == value.dtype and ckpt.arrays[key].tobytes() == (value + 4).tobytes()
    assert store.prune(1) == ["ckpt-0000000002-00000002", "ckpt-0000000003-00000003"]
    assert store.list() == ["ckpt-0000000004-00000004"]


def test_wrong_credentials_are_refused_with_a_clear_error(seaweed, parts):
    spec, env_spec, arrays = parts
    good = _store(seaweed, "creds")
    checkpoint.save(good, spec, env_spec, arrays, _counters(1))
    for access_key, secret_key in ((seaweed.access_key, "wrong-secret"), ("nobody", seaweed.secret_key)):
        bad = S3Store(BUCKET, "creds", endpoint_url=seaweed.endpoint_url, access_key=access_key,
                      secret_key=secret_key)
        with pytest.raises(StoreError) as info:
            checkpoint.save(bad, spec, env_spec, arrays, _counters(2))
        message = str(info.value)
        assert "refused the credentials" in message and f"'{BUCKET}'" in message
        assert "AWS_SECRET_ACCESS_KEY" in message and not info.value.transient
    assert good.list() == ["ckpt-0000000001-00000001"]


def test_a_missing_bucket_is_named(seaweed):
    with pytest.raises(StoreError, match="bucket 'absent' does not exist at .* create it"):
        S3Store("absent", "x", endpoint_url=seaweed.endpoint_url, access_key=seaweed.access_key,
                secret_key=seaweed.secret_key).list()


def test_a_server_stopped_mid_upload_leaves_the_previous_checkpoint_readable(seaweed, parts):
    spec, env_spec, arrays = parts
    store = _store(seaweed, "crash", max_attempts=2, manifest_attempts=2, backoff_s=0.1)
    first = checkpoint.save(store, spec, env_spec, arrays, _counters(1))

    def kill_before_the_manifest(params, **_):
        if params.get("Key", "").endswith("/manifest.json"):
            seaweed.stop(grace_s=0)  # the objects are up; the server dies before the manifest

    store.client.meta.events.register("before-parameter-build.s3.PutObject", kill_before_the_manifest)
    try:
        with pytest.raises(StoreError) as info:
            checkpoint.save(store, spec, env_spec, {k: v + 1 for k, v in arrays.items()}, _counters(2))
    finally:
        seaweed.start()  # the same folder and ports: what was stored survives
    assert "ckpt-0000000002-00000002 not written (the previous ones are untouched)" in str(info.value)
    assert "cannot be reached" in str(info.value) and info.value.transient

    again = _store(seaweed, "crash")
    assert again.list() == ["ckpt-0000000001-00000001"]
    ckpt = checkpoint.Checkpoint(f"s3://{BUCKET}/crash")
    assert ckpt.path == first
    for key, value in arrays.items():
        assert ckpt.arrays[key].tobytes() == value.tobytes()
    checkpoint.save(again, spec, env_spec, arrays, _counters(3), keep=1)  # the half-written one goes too
    assert again.list(complete=False) == ["ckpt-0000000003-00000003"]


def test_checkpoints_cli_lists_shows_and_prunes_s3_and_folders(seaweed, parts, tmp_path):
    spec, env_spec, arrays = parts
    env = s3_env(seaweed)
    for target in (f"s3://{BUCKET}/cli", str(tmp_path / "cli")):
        for updates in (1, 2, 3):
            checkpoint.save(target, spec, env_spec, arrays, _counters(updates), keep=5)
        listed = _maddpg("checkpoints", "list", target, env=env)
        assert listed.returncode == 0, listed.stderr
        assert "3 complete checkpoints" in listed.stdout and "ckpt-0000000002-00000002" in listed.stdout
        shown = _maddpg("checkpoints", "show", target, env=env)
        assert shown.returncode == 0, shown.stderr
        assert "updates=3 episodes=3" in shown.stdout and "scenario: simple" in shown.stdout
        pruned = _maddpg("checkpoints", "prune", target, "--keep", "1", env=env)
        assert pruned.returncode == 0, pruned.stderr
        assert pruned.stdout.count("deleted ") == 2 and "kept 1 checkpoint, newest ckpt-0000000003" in pruned.stdout
    for args, words in ((["list", f"s3://{BUCKET}/empty"], "no complete checkpoint in"),
                        (["show", "s3://no-such-bucket/x"], "bucket 'no-such-bucket' does not exist"),
                        (["list", str(tmp_path / "nowhere")], "does not exist")):
        result = _maddpg("checkpoints", *args, env=env)
        assert result.returncode == 2 and words in result.stderr and "Traceback" not in result.stderr
    refused = _maddpg("checkpoints", "list", f"s3://{BUCKET}/cli", env={**env, "AWS_SECRET_ACCESS_KEY": "wrong"})
    assert refused.returncode == 2 and "refused the credentials" in refused.stderr


def test_train_writes_its_checkpoints_to_s3_and_evaluate_reads_them(seaweed, tmp_path):
    uri = f"s3://{BUCKET}/runs/tiny"
    env = {**s3_env(seaweed), "MADDPG_CHECKPOINT_URI": uri}
    trained = _maddpg("train", *TINY, "--run-dir", str(tmp_path / "run"), env=env)
    assert trained.returncode == 0, trained.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
    names = _store(seaweed, "runs/tiny").list()
    assert names[-1].endswith("-00000012") and len(names) == 3  # after 5 and 10 episodes, and the final one
    evaluated = _maddpg("evaluate", uri, "--episodes", "2", "--quiet", env=env)
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"checkpoint: {uri}/{names[-1]}" in evaluated.stdout and "2 episodes" in evaluated.stdout


def test_train_stops_at_once_when_the_store_refuses_it(seaweed, tmp_path):
    env = {**s3_env(seaweed), "AWS_SECRET_ACCESS_KEY": "wrong", "MADDPG_CHECKPOINT_URI": f"s3://{BUCKET}/runs/x"}
    result = _maddpg("train", *TINY, "--run-dir", str(tmp_path / "run"), env=env)
    assert result.returncode == 2 and "refused the credentials" in result.stderr
    assert "Traceback" not in result.stderr
    assert _store(seaweed, "runs/x").list(complete=False) == []  # nothing was written
