"""Launchers start and stop a run's learner and explorers: `local` (subprocesses of the API host) or
`kubernetes` (Jobs created through the Kubernetes API)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from maddpg.runspec import RunSpec
from services.api.registry import RunRecord
from services.api.schemas import EXPLORER_RESOURCES, LEARNER_RESOURCES, Resources
from services.api.settings import ApiSettings

# Called once a run's processes ended: (run_id, status, reason).
OnExit = Callable[[str, str, "str | None"], None]


@dataclass
class Launched:
    """What a launcher reports about a started run."""

    pids: list[int]  # local launcher: the learner's first; none for pods
    endpoints: dict[str, str]  # "learner": its ZeroMQ address; "checkpoints": the run's checkpoint store, if known
    run_dir: str  # the run folder on the API's host; "" when it lives elsewhere (in the learner pod)
    procs: list[str] = field(default_factory=list)  # local launcher: an identity per pid (see RunRecord.procs)


@dataclass(frozen=True)
class PodOptions:
    """How a run's pods look (the kubernetes launcher; the local launcher ignores them)."""

    image: str | None = None  # None: the configured image
    learner: Resources = LEARNER_RESOURCES
    explorer: Resources = EXPLORER_RESOURCES

    def to_dict(self) -> dict:
        """For the registry (RunRecord.pods), so that a resumed run gets the pods it was started with."""
        return {"image": self.image, "learner": self.learner.model_dump(), "explorer": self.explorer.model_dump()}

    @classmethod
    def from_dict(cls, data: dict) -> PodOptions:
        """The options `to_dict` wrote; the defaults for what a record of an earlier API lacks."""
        return cls(data.get("image"),
                   Resources.model_validate(data["learner"]) if "learner" in data else LEARNER_RESOURCES,
                   Resources.model_validate(data["explorer"]) if "explorer" in data else EXPLORER_RESOURCES)


class Launcher(Protocol):
    """Runs a run's processes. Call order: `start`, then `stop` (any number of times); `resume` once the run
    ended stopped or failed; `alive` while reconciling the registry; `problem` for readiness; `close` at
    shutdown.

    A launcher reports how each run it started, resumed (or found `alive`) ended through its `on_exit` callback.
    """

    def start(self, run_id: str, spec: RunSpec, run_dir: Path, pods: PodOptions = PodOptions()) -> Launched: ...

    def resume(self, record: RunRecord, spec: RunSpec, pods: PodOptions = PodOptions()) -> Launched:
        """Starts the processes of a run that ended (stopped or failed, none of its processes left) again, under
        its id, from its newest checkpoint: `spec` is its registered spec, `pods` the options it was started
        with. The learner resumes from the newest checkpoint of the run's store by itself (local: its run folder,
        written on in place; kubernetes: the run's checkpoint store, the same Job names). Raises LaunchError,
        like `start`."""

    def stop(self, record: RunRecord) -> None: ...

    def alive(self, record: RunRecord) -> bool: ...

    def problem(self) -> str | None: ...

    def close(self) -> None: ...


class LaunchError(Exception):
    """The launcher could not start a run."""


class LaunchRefused(LaunchError):
    """The launcher will not start any run as configured (the message names the setting to add)."""


def make_launcher(settings: ApiSettings, on_exit: OnExit) -> Launcher:
    """The launcher named in the settings.

    Raises:
      LaunchError: the kubernetes launcher finds no cluster configuration.
    """
    if settings.launcher == "kubernetes":
        from services.api.launchers.kubernetes import KubernetesLauncher

        return KubernetesLauncher.from_settings(settings, on_exit)
    from services.api.launchers.local import LocalLauncher

    return LocalLauncher(on_exit, queue=settings.redis_url or "local", stop_timeout=settings.stop_timeout_s)


def reconcile(registry, launcher: Launcher) -> list[str]:
    """Marks runs whose processes vanished (a crash, an API restart) as failed; returns their ids.

    A stopping run whose learner is gone was stopped as asked.
    """
    changed = []
    for record in registry.active():
        if launcher.alive(record):
            continue
        if record.status == "stopping":
            done = registry.update(record.id, only_from=("stopping",), status="stopped")
        else:
            done = registry.update(record.id, only_from=("running",), status="failed",
                                   reason="the run's learner is gone (it ended while the API restarted, or it was "
                                          "removed outside the API); POST /runs/{id}/resume continues it from its "
                                          "newest checkpoint")
        if done:
            changed.append(record.id)
    return changed
