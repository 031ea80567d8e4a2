"""The console script's settings as a user meets them: help whatever the environment holds, and one line naming
a bad variable and what it expects, never a traceback."""

from tests.integration.cli import run


def test_help_is_printed_whatever_the_environment_holds():
    env = {"MADDPG_API_PORT": "x", "MADDPG_METRICS_PORT": "x", "MADDPG_ENVS": "many", "REDIS_URL": "nope"}
    for role in ("train", "learner", "explorer", "api"):
        result = run(role, "--help", env=env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"usage: maddpg {role}")


def test_a_bad_api_variable_is_one_line_naming_it():
    result = run("api", env={"MADDPG_API_PORT": "x"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "maddpg api: error: MADDPG_API_PORT: Input should be a valid integer, unable to parse string as an integer"]


def test_a_bad_flag_of_a_setting_is_named_as_the_flag():
    result = run("api", "--port", "70000", env={"MADDPG_API_PORT": "8000"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--port: Input should be less than or equal to 65535" in result.stderr


def test_a_bad_service_variable_stops_the_role_before_it_starts(tmp_path):
    result = run("learner", "--scenario", "simple", "--run-dir", str(tmp_path / "run"),
                 env={"MADDPG_METRICS_PORT": "-1"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "MADDPG_METRICS_PORT: Input should be greater than or equal to 0" in result.stderr
    assert not (tmp_path / "run").exists()
