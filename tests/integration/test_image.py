"""docker/Dockerfile built for real (podman) and its roles run from the image as Kubernetes runs them: a read-only
root filesystem, uid 10001, every capability dropped, tmpfs for /data and /tmp. A learner and 2 explorers, whose
commands, env and mounts are the pods the kubernetes launcher makes, train on a container network to a checkpoint
the image then evaluates; `maddpg api` answers /healthz on a published port. Where no container registry is
reachable the build runs on a stand-in base image (tests/integration/podman.py), and the run's output says so."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from maddpg.launch import free_tcp_port
from maddpg.runspec import RunSpec
from maddpg.transport.security import RunKey
from services.api.launchers.objects import (KEY_ITEM, USER_ID, ClusterConfig, RunNames, explorer_job,
                                            learner_job, owner_reference)
from services.api.schemas import EXPLORER_RESOURCES, LEARNER_RESOURCES
from tests.conftest import NOTES
from tests.integration.podman import Podman, host_ca_bundle, problem
from tests.unit.test_dockerfile import DOCKERFILE, DOCKERIGNORE, build_context, ignore_rules

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/maddpg:image-test"
LABEL = "maddpg.test=image"  # on every container and network this test makes: leftovers of a killed run go first
RESTRICTED = ["--read-only", "--read-only-tmpfs=false", "--user", f"{USER_ID}:{USER_ID}", "--cap-drop", "ALL",
              "--security-opt", "no-new-privileges"]
# runc 1.1 gives a tmpfs the mode of the folder under it and root as owner; `U` makes it the container user's,
# as an emptyDir with the pod's fsGroup is.
TMPFS = ["--tmpfs", "/data:U", "--tmpfs", "/tmp:U"]

PROBLEM = problem()
pytestmark = [
    pytest.mark.image,
    pytest.mark.timeout(1500),  # the first test builds the image (minutes)
    pytest.mark.skipif(PROBLEM is not None and not os.environ.get("CI"), reason=f"image test: {PROBLEM}"),
]


@pytest.fixture(scope="module")
def podman() -> Podman:
    assert PROBLEM is None, PROBLEM  # in CI, where the test must run
    podman = Podman(ROOT / ".cache" / "podman")
    podman("rm", "--force", "--time", "0", "--filter", f"label={LABEL}")
    podman("network", "prune", "--force", "--filter", f"label={LABEL}")
    return podman


@pytest.fixture(scope="module")
def image(podman, request, tmp_path_factory) -> str:
    notes = request.config.stash[NOTES]
    notes.append(f"image test: {podman.base_image()}")
    start = time.monotonic()
    # The build context the Docker CLI would send (.dockerignore applied): podman need not walk .venv and .cache.
    context = tmp_path_factory.mktemp("context")
    build_context(ignore_rules(DOCKERIGNORE.read_text()), context)
    log = podman.home / "build.log"
    # The host's CA bundle as the build secret `ca`: pip inside the build trusts what pip here trusts (a TLS
    # proxy's own CA), and the bundle lands in no layer. The builder stage is tagged too, so that pruning the
    # images no tag names (older builds) keeps the layer cache of this one.
    output = ""
    for target, tag in (["--target", "builder"], f"{IMAGE}-builder"), ([], IMAGE):
        build = podman("build", "--pull=never", "--layers", "--secret", f"id=ca,src={host_ca_bundle()}", *target,
                       "--file", str(DOCKERFILE), "--tag", tag, str(context), timeout=1500, check=False)
        output += build.stdout + build.stderr
        log.write_text(output)
        assert build.returncode == 0, f"podman build failed (log: {log}):\n{output[-4000:]}"
    podman("image", "prune", "--force")
    size = int(podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    notes.append(f"image test: built {IMAGE} ({size / 1e9:.2f} GB) in {time.monotonic() - start:.0f} s "
                 f"(build log: {log})")
    return IMAGE


# ---------------------------------------------------------------- pods, as podman runs them
def pod_args(pod: dict, name: str, host_volumes: dict[str, Path]) -> list[str]:
    """`podman run` arguments for one pod of the launcher: its security context, env, mounts, image and args.
    emptyDirs become tmpfs; a Secret or a claim is the host folder `host_volumes` names for it."""
    spec = pod["spec"]
    (container,) = spec["containers"]
    security = {**spec["securityContext"], **container["securityContext"]}
    assert security["readOnlyRootFilesystem"] and security["capabilities"] == {"drop": ["ALL"]}
    assert not security["allowPrivilegeEscalation"] and security["runAsNonRoot"]
    assert (security["runAsUser"], security["runAsGroup"]) == (USER_ID, USER_ID)
    args = ["--name", name, "--label", LABEL, *RESTRICTED]
    for var in container["env"]:
        if "value" in var:
            value = var["value"]
        else:
            assert var["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}, var
            value = name
        args += ["--env", f"{var['name']}={value}"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:
            args += ["--tmpfs", f"{mount['mountPath']}:U"]
        else:
            assert "secret" in volume or "persistentVolumeClaim" in volume, volume
            host = host_volumes[mount["name"]] / mount.get("subPath", "")
            args += ["--volume", f"{host}:{mount['mountPath']}:{'ro' if mount.get('readOnly') else 'rw'}"]
    return [*args, container["image"], *container["args"]]


def _logs(podman: Podman, name: str) -> str:
    result = podman("logs", name, check=False)
    return f"--- {name}:\n{(result.stdout + result.stderr)[-3000:]}"


def _wait(podman: Podman, name: str, timeout: float, show: list[str]) -> str:
    """The exit code of container `name`; fails with the logs of `show` if it still runs after `timeout` s."""
    try:
        return podman("wait", name, timeout=timeout).stdout.strip()
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name} still running after {timeout:.0f} s\n" + "\n".join(_logs(podman, n) for n in show))


# ---------------------------------------------------------------- the tests
def test_help_as_uid_10001_on_a_read_only_root(podman, image):
    assert podman("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip() == f"{USER_ID}:{USER_ID}"
    result = podman("run", "--rm", "--label", LABEL, *RESTRICTED, *TMPFS, image, "--help")
    for role in ("train", "evaluate", "learner", "explorer", "api"):
        assert f"    {role}" in result.stdout, result.stdout


def test_a_learner_and_two_explorers_train_to_a_checkpoint(podman, image, tmp_path):
    run_id = f"image-{uuid.uuid4().hex[:6]}"
    spec = RunSpec(scenario="simple", num_episodes=40, explorers=2, envs_per_explorer=2, learning_starts=100,
                   batch_size=32, num_units=16, save_rate=20)
    config = ClusterConfig(namespace="ml", image=image, checkpoint_pvc="checkpoints")
    learner = learner_job(run_id, spec, config, LEARNER_RESOURCES)
    explorers = explorer_job(run_id, spec, config, EXPLORER_RESOURCES, owner_reference("learner", "uid"))
    # The run's key Secret (mode 0400, given to the pod's group by fsGroup) and the checkpoint claim, the
    # learner's own folder of it.
    keys, claim = tmp_path / "key", tmp_path / "claim"
    keys.mkdir()
    (keys / KEY_ITEM).write_text(RunKey.generate().text)
    os.chown(keys / KEY_ITEM, 0, USER_ID)
    (keys / KEY_ITEM).chmod(0o440)
    (claim / run_id).mkdir(parents=True)
    os.chown(claim / run_id, USER_ID, USER_ID)
    volumes = {"run-key": keys, "checkpoints": claim}

    names = RunNames.of(run_id)
    network = f"maddpg-{run_id}"
    explorer_names = [f"{names.explorers}-{i}" for i in range(spec.explorers)]
    podman("network", "create", "--label", LABEL, network)
    try:
        # The learner's container has the name of its Service: explorers reach tcp://NAME:5555 through the
        # network's DNS, as in the cluster.
        podman("run", "--detach", "--network", network, *pod_args(learner["spec"]["template"], names.learner,
                                                                    volumes))
        for name in explorer_names:
            podman("run", "--detach", "--network", network, *pod_args(explorers["spec"]["template"], name, volumes))
        code = _wait(podman, names.learner, 300, [names.learner, *explorer_names])
        logs = "\n".join(_logs(podman, n) for n in [names.learner, *explorer_names])
        assert code == "0", logs
        for name in explorer_names:  # told by the learner that the run is over
            assert _wait(podman, name, 60, [name]) == "0", logs
    finally:
        podman("rm", "--force", "--time", "0", names.learner, *explorer_names, check=False)
        podman("network", "rm", "--force", network, check=False)

    manifests = sorted((claim / run_id).glob("ckpt-*/manifest.json"))
    assert manifests, f"no checkpoint in the claim:\n{logs}"
    manifest = json.loads(manifests[-1].read_text())
    assert manifest["counters"]["episodes"] >= spec.num_episodes and manifest["counters"]["updates"] > 0
    assert manifest["spec"]["num_units"] == 16
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert any(line.get("run_id") == run_id and line.get("role") == "learner" for line in lines), logs

    # The image reads what its learner wrote: evaluate the newest checkpoint from the claim, read-only.
    evaluated = podman("run", "--rm", "--label", LABEL, *RESTRICTED, *TMPFS, "--volume", f"{claim / run_id}:/ckpt:ro",
                       image, "evaluate", "file:///ckpt", "--episodes", "3", "--quiet", timeout=300)
    assert "mean episode reward" in evaluated.stdout, evaluated.stdout + evaluated.stderr


def test_api_answers_healthz_on_a_published_port(podman, image):
    name, port = f"maddpg-api-{uuid.uuid4().hex[:6]}", free_tcp_port()
    podman("run", "--detach", "--name", name, "--label", LABEL, *RESTRICTED, *TMPFS,
           "--env", "MADDPG_API_RUNS_DIR=/data/runs", "--publish", f"127.0.0.1:{port}:8000", image)
    try:
        deadline, answer = time.monotonic() + 120, None
        while time.monotonic() < deadline:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.5)
        assert answer is not None and answer.status_code == 200, _logs(podman, name)
        assert answer.json()["status"] == "ok", answer.text
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert ready.status_code == 200, ready.text  # its registry (SQLite) lives in the /data tmpfs
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)
