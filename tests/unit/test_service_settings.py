"""The training roles' settings (services/settings.py): every variable reaches its setting, flags win over the
environment, bad values are named, and what the launchers set is what the settings read."""

import argparse
import os
import re
import sys
from pathlib import Path

import pytest

from maddpg.errors import UserError
from maddpg.launch import LocalRun
from maddpg.runspec import RunSpec
from services import cli
from services.api.launchers.objects import ClusterConfig, explorer_job, learner_job, owner_reference
from services.api.schemas import EXPLORER_RESOURCES, LEARNER_RESOURCES
from services.options import env_name, flag_settings, load_settings, spec_from_args
from services.settings import ServiceSettings, names

KEY = "ab" * 32
# variable -> (a value it may hold, the setting's key, the value the setting then has)
SAMPLES = {
    "MADDPG_LOG_FORMAT": ("text", "log_format", "text"),
    "MADDPG_METRICS_PORT": ("9100", "metrics_port", 9100),
    "MADDPG_RUN_SPEC": ('{"scenario": "simple_tag"}', "run_spec", {"scenario": "simple_tag"}),
    "MADDPG_LEARNER_BIND": ("tcp://0.0.0.0:7000", "learner.bind", "tcp://0.0.0.0:7000"),
    "MADDPG_RUN_ID": ("run-7", "learner.run_id", "run-7"),
    "MADDPG_LEARNER_MAX_BATCH": ("256", "learner.max_batch", 256),
    "MADDPG_LEARNER_MAX_WAIT_MS": ("2.5", "learner.max_wait_ms", 2.5),
    "MADDPG_LEARNER_ADDRESS": ("tcp://learner:5555", "explorer.learner", "tcp://learner:5555"),
    "MADDPG_ENVS": ("64", "explorer.envs", 64),
    "MADDPG_EXPLORER_ID": ("pod-a", "explorer.id", "pod-a"),
    "MADDPG_EXPLORER_SEED": ("11", "explorer.seed", 11),
    "MADDPG_EXPLORER_REQUEST_TIMEOUT_S": ("5", "explorer.request_timeout_s", 5.0),
    "MADDPG_EXPLORER_GIVE_UP_AFTER_S": ("60", "explorer.give_up_after_s", 60.0),
    "MADDPG_RUN_KEY": (KEY, "transport.run_key", KEY),
    "MADDPG_RUN_KEY_FILE": ("/var/run/secrets/maddpg/run-key", "transport.run_key_file",
                            Path("/var/run/secrets/maddpg/run-key")),
    "REDIS_URL": ("redis://redis:6379/0", "replay.queue", "redis://redis:6379/0"),
    "MADDPG_CHECKPOINT_URI": ("s3://bucket/runs/r1", "storage.checkpoint_uri", "s3://bucket/runs/r1"),
}
VARIABLES = [names(field)[0] for _, _, field in ServiceSettings.fields()]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """The tests set the variables they mean; none of the machine's own leak in."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


def _get(settings, key: str):
    value = settings
    for part in key.split("."):
        value = getattr(value, part)
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


def _parse(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(list(argv))


def test_every_setting_has_one_variable_of_its_own_and_a_sample_here():
    assert len(set(VARIABLES)) == len(VARIABLES)
    assert set(VARIABLES) == set(SAMPLES)


@pytest.mark.parametrize("variable", sorted(SAMPLES))
def test_each_variable_reaches_its_setting(monkeypatch, variable):
    raw, key, expected = SAMPLES[variable]
    default = _get(load_settings(ServiceSettings, {}), key)
    monkeypatch.setenv(variable, raw)
    assert _get(load_settings(ServiceSettings, {}), key) == expected != default
    assert env_name(ServiceSettings, key) == variable


def test_an_empty_variable_is_unset(monkeypatch):
    monkeypatch.setenv("MADDPG_METRICS_PORT", "")
    monkeypatch.setenv("REDIS_URL", "")
    settings = load_settings(ServiceSettings, {})
    assert settings.metrics_port is None and settings.replay.queue == "local" and settings.replay.redis_url is None


def test_flags_win_over_the_environment(monkeypatch):
    monkeypatch.setenv("MADDPG_ENVS", "4")
    monkeypatch.setenv("MADDPG_LEARNER_ADDRESS", "tcp://a:1")
    ns = _parse("explorer", "--envs", "8")
    settings = cli._settings(ns)
    assert settings.explorer.envs == 8 and settings.explorer.learner == "tcp://a:1"


def test_a_key_file_flag_wins_over_the_key_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("MADDPG_RUN_KEY", KEY)
    (tmp_path / "key").write_text("cd" * 32)
    assert cli._key(cli._settings(_parse("explorer"))).text == KEY
    assert cli._key(cli._settings(_parse("explorer", "--run-key-file", str(tmp_path / "key")))).text == "cd" * 32
    monkeypatch.setenv("MADDPG_RUN_KEY_FILE", str(tmp_path / "key"))  # the variable does not win over the key
    assert cli._key(cli._settings(_parse("explorer"))).text == KEY


@pytest.mark.parametrize("env, argv, words", [
    ({"MADDPG_METRICS_PORT": "x"}, [], "MADDPG_METRICS_PORT: Input should be a valid integer"),
    ({"MADDPG_ENVS": "0"}, [], "MADDPG_ENVS: Input should be greater than or equal to 1"),
    ({"MADDPG_ENVS": "4"}, ["--envs", "0"], "--envs: Input should be greater than or equal to 1"),
    ({"REDIS_URL": "http://redis"}, [], "REDIS_URL: expected 'local' or redis://... or rediss://..., not "),
    ({"MADDPG_LEARNER_ADDRESS": "learner:5555"}, [], "MADDPG_LEARNER_ADDRESS: expected tcp://... or ipc://..."),
    ({"MADDPG_RUN_SPEC": "{not json"}, [], "MADDPG_RUN_SPEC: Invalid JSON"),
    ({"MADDPG_LOG_FORMAT": "xml"}, [], "MADDPG_LOG_FORMAT: Input should be 'json' or 'text'"),
])
def test_a_bad_setting_is_named_by_its_flag_or_variable(monkeypatch, env, argv, words):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UserError) as caught:
        cli._settings(_parse("explorer", *argv))
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_every_bad_setting_is_named_in_one_line(monkeypatch):
    monkeypatch.setenv("MADDPG_METRICS_PORT", "x")
    monkeypatch.setenv("MADDPG_ENVS", "0")
    with pytest.raises(UserError, match=r"^MADDPG_METRICS_PORT: .*; MADDPG_ENVS: "):
        cli._settings(_parse("explorer"))


def test_learner_pods_take_the_spec_from_the_environment(monkeypatch):
    """Kubernetes pods get their run spec as JSON text in MADDPG_RUN_SPEC; flags still override its fields."""
    monkeypatch.setenv("MADDPG_RUN_SPEC", RunSpec(scenario="simple_tag", seed=7).to_json())
    ns = _parse("learner", "--seed", "3")
    spec = spec_from_args(ns, cli._settings(ns).run_spec)
    assert (spec.scenario, spec.seed) == ("simple_tag", 3)


def _pod_environment(job: dict, pod_name: str) -> dict[str, str]:
    """A Job's container env as the pod sees it: field references resolved, $(VAR) expanded."""
    values: dict[str, str] = {}
    for var in job["spec"]["template"]["spec"]["containers"][0]["env"]:
        if "value" in var:
            values[var["name"]] = re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], var["value"])
        elif "fieldRef" in var["valueFrom"]:
            values[var["name"]] = pod_name
        else:
            values[var["name"]] = "secret-password"  # REDIS_PASSWORD from its Secret
    return values


def test_the_kubernetes_launcher_sets_variables_the_settings_read(monkeypatch):
    """Every MADDPG_* and REDIS_URL variable of the learner and explorer pods is a setting, and reaches it."""
    config = ClusterConfig("training", "maddpg:dev", checkpoint_uri="s3://bucket/runs",
                           redis_url="redis://:pw@r:6379/0", redis_password_secret="redis")
    spec = RunSpec(scenario="simple_spread", explorers=2, envs_per_explorer=32)
    owner = owner_reference("maddpg-r1-learner", "0b6b9f3c-8f5e-4a51-9a52-2b5c7a1d4e00")
    learner = _pod_environment(learner_job("r1", spec, config, LEARNER_RESOURCES), "learner-pod")
    explorer = _pod_environment(explorer_job("r1", spec, config, EXPLORER_RESOURCES, owner), "explorer-pod")
    for env in (learner, explorer):
        ours = {name for name in env if name.startswith("MADDPG_") or name == "REDIS_URL"}
        assert ours <= set(VARIABLES), ours - set(VARIABLES)
    with monkeypatch.context() as m:
        for name, value in learner.items():
            m.setenv(name, value)
        settings = cli._settings(_parse("learner"))
    assert settings.learner.bind == "tcp://0.0.0.0:5555" and settings.learner.run_id == "r1"
    assert settings.storage.checkpoint_uri == "s3://bucket/runs/r1" and settings.metrics_port == 9100
    assert settings.replay.redis_url == "redis://:secret-password@r:6379/0" and settings.log_format == "json"
    assert RunSpec.model_validate(settings.run_spec) == spec
    assert settings.transport.run_key_file == Path("/var/run/secrets/maddpg/run-key")
    with monkeypatch.context() as m:
        for name, value in explorer.items():
            m.setenv(name, value)
        settings = cli._settings(_parse("explorer"))
    assert settings.explorer.learner == "tcp://maddpg-r1-learner:5555" and settings.explorer.envs == 32
    assert settings.explorer.id == "explorer-pod" and settings.transport.run_key_file is not None


class _Spawned(LocalRun):
    """A LocalRun that records the command lines it would start."""

    def _spawn(self, args, **kwargs):
        self.started = [*getattr(self, "started", []), args]
        return None


def test_the_local_launcher_gives_its_processes_options_they_take(monkeypatch, tmp_path):
    run = _Spawned(RunSpec(scenario="simple", explorers=2), tmp_path / "run", queue="redis://localhost:6379/0")
    run.start()
    added = {name for name, value in run.environment().items() if os.environ.get(name) != value}
    assert {name for name in added if name.startswith("MADDPG_")} <= set(VARIABLES)
    for args in run.started:
        for name, value in run.environment().items():
            monkeypatch.setenv(name, value)
        ns = _parse(*args)
        settings = cli._settings(ns)
        assert cli._key(settings) == run.key
        assert settings.metrics_port == run.metrics_ports[args[0] if args[0] == "learner" else flag_settings(ns)[
            "explorer.id"]]
    learner = flag_settings(_parse(*run.started[0]))
    assert learner["learner.bind"] == run.address and learner["replay.queue"] == "redis://localhost:6379/0"


def test_an_internal_bug_is_not_a_user_error(monkeypatch, capsys):
    """Any exception other than a UserError is a bug: status 1 and its traceback, not status 2 and a message."""
    def boom(ns):
        raise ValueError("a bug")

    monkeypatch.setattr(cli, "cmd_scenarios", boom)
    assert cli.main(["scenarios"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ValueError: a bug" in err and "internal error" in err
    assert sys.exc_info() == (None, None, None)
