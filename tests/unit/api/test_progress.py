"""Progress of runs whose run folder is elsewhere (kubernetes): read from the newest checkpoint, cached."""

from __future__ import annotations

from maddpg import checkpoint
from maddpg.envs.spaces import AgentSpec, EnvSpec
from maddpg.runspec import RunSpec
from services.api.progress import ProgressReader
from services.api.registry import RunRecord

ENV_SPEC = EnvSpec("simple", (AgentSpec("agent_0", 4, "discrete", 5, (5,)),))


def _record(run_id: str, uri: str | None, status: str = "running") -> RunRecord:
    return RunRecord(id=run_id, status=status, spec={}, run_dir="",
                     endpoints={"checkpoints": uri} if uri else {})


def _save(uri: str, episodes: int) -> str:
    where = checkpoint.save(uri, RunSpec(scenario="simple"), ENV_SPEC, {},
                            {"env_steps": 25 * episodes, "updates": episodes // 4, "episodes": episodes,
                             "mean_reward_last_100": -episodes / 10})
    return str(where)


def test_progress_comes_from_the_newest_checkpoint_and_is_cached(tmp_path):
    uri = f"file://{tmp_path}/runs/r1"
    reader = ProgressReader(ttl_s=60)
    assert reader(_record("r1", uri), refresh=False)["note"].startswith("not read yet")
    assert "no complete checkpoint" in reader(_record("r1", uri))["note"]
    _save(uri, 40)
    assert "no complete checkpoint" in reader(_record("r1", uri))["note"]  # fresh for 60 s
    newest = _save(uri, 80)
    ended = reader(_record("r1", uri, "finished"))  # a new status reads again
    assert ended == {"source": "checkpoint", "episodes": 80, "env_steps": 2000, "updates": 20,
                     "mean_reward_last_100": -8.0, "newest_checkpoint": newest}
    _save(uri, 120)  # cannot happen after the end; shows that an ended run is never read again
    assert reader(_record("r1", uri, "finished")) == ended
    assert reader(_record("r1", uri, "finished"), refresh=False) == ended


def test_an_expired_entry_is_read_again(tmp_path):
    uri = f"file://{tmp_path}/r2"
    reader = ProgressReader(ttl_s=0)
    assert "no complete checkpoint" in reader(_record("r2", uri))["note"]
    _save(uri, 20)
    assert reader(_record("r2", uri))["episodes"] == 20


def test_an_unreadable_store_or_none_is_a_note():
    reader = ProgressReader()
    assert "cannot read the run's checkpoints" in reader(_record("r3", "s3:///no-bucket"))["note"]
    missing = reader(_record("r4", None))
    assert missing["source"] == "none" and "MADDPG_API_CHECKPOINT_URI" in missing["note"]


def test_the_cache_is_bounded(tmp_path):
    reader = ProgressReader(ttl_s=60, max_entries=2)
    for k in range(3):
        reader(_record(f"r{k}", f"file://{tmp_path}/r{k}"))
    assert reader(_record("r0", f"file://{tmp_path}/r0"), refresh=False)["note"].startswith("not read yet")
    assert "no complete checkpoint" in reader(_record("r2", f"file://{tmp_path}/r2"), refresh=False)["note"]


def test_a_run_folder_is_read_live_until_the_run_ended(tmp_path):
    header = "episode,env_steps,updates,wall_time_s,length,reward\n"
    (tmp_path / "rewards.csv").write_text(header + "1,25,0,0.5,25,-3\n")
    record = RunRecord(id="local", status="running", spec={}, run_dir=str(tmp_path))
    reader = ProgressReader()
    assert reader(record)["episodes"] == 1
    (tmp_path / "rewards.csv").write_text(header + "1,25,0,0.5,25,-3\n2,50,1,1.0,25,-1\n")
    assert reader(record, refresh=False)["episodes"] == 2  # a file read is cheap: always live
    record.status = "finished"
    final = reader(record)
    assert final["episodes"] == 2 and final["mean_reward_last_100"] == -2.0
    (tmp_path / "rewards.csv").write_text(header)  # an ended run's folder does not change: read once
    assert reader(record) == final
