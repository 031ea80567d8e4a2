"""Launchers start and stop a run's learner and explorers: `local` (subprocesses of the API host) or
`kubernetes` (Jobs created through the Kubernetes API)."""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class PodOptions:
    """How a run's pods look (the kubernetes launcher; the local launcher ignores them)."""

    image: str | None = None  # None: the configured image
    learner: Resources = LEARNER_RESOURCES
    explorer: Resources = EXPLORER_RESOURCES


class Launcher(Protocol):
    """Runs a run's processes. Call order: `start`, then `stop` (any number of times); `alive` while
    reconciling the registry; `problem` for readiness; `close` at shutdown.

    A launcher reports how each run it started (or found `alive`) ended through its `on_exit` callback.
    """

    def start(self, run_id: str, spec: RunSpec, run_dir: Path, pods: PodOptions = PodOptions()) -> Launched: ...

    def stop(self, record: RunRecord) -> None: ...

    def alive(self, record: RunRecord) -> bool: ...

    def problem(self) -> str | None: ...

    def close(self) -> None: ...


class LaunchError(Exception):
    """The launcher could not start a run."""


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
                                   reason="the run's learner is gone (the API restarted, or it was removed "
                                          "outside the API)")
        if done:
            changed.append(record.id)
    return changed
