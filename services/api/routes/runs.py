"""Runs: start, list, show, stop, resume, and their episode rewards."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import ValidationError

from maddpg.runfolder import SPEC
from maddpg.runspec import RunSpec, format_validation_error
from services.api.admission import memory_problem
from services.api.deps import Authorized, LauncherDep, ProgressDep, RegistryDep, SettingsDep
from services.api.launchers import Launched, LaunchError, LaunchRefused, PodOptions, reconcile
from services.api.quantities import quantity
from services.api.registry import DuplicateRunError, RunRecord, TooManyRunsError
from services.api.schemas import Progress, Rewards, RunCreate, RunOut, RunPage, RunStatus

router = APIRouter(prefix="/runs", tags=["runs"], responses={
    413: {"description": "the request body is above MADDPG_API_MAX_BODY_BYTES"},
    503: {"description": "the run registry (SQLite or Redis) is unavailable"}})

_NOT_FOUND = {404: {"description": "no run with this id"}}
_AUTH = {401: {"description": "a bearer token is configured and the request lacks it"}}
_TOO_MANY = {429: {"description": "MADDPG_API_MAX_ACTIVE_RUNS runs are running or stopping; Retry-After says when "
                                  "to ask again"}}
_NOT_STARTED = {503: {"description": "the launcher could not start the run, or the run registry is unavailable"}}
RESUMABLE = ("stopped", "failed")
RETRY_AFTER_S = 30  # a stopping run ends within the stop timeout; most end much sooner


def _time(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=timezone.utc)


def _spec(stored: dict) -> RunSpec:
    """A registered run's spec; one registered under looser bounds is shown as stored rather than failing every
    listing that includes it."""
    try:
        return RunSpec.from_stored(stored)
    except ValidationError:
        return RunSpec.model_construct(**stored)


def _out(record: RunRecord, progress: dict) -> RunOut:
    return RunOut(id=record.id, status=record.status, spec=_spec(record.spec),
                  progress=Progress(**progress), endpoints=record.endpoints,
                  pids=record.pids, run_dir=record.run_dir, created=_time(record.created),
                  updated=_time(record.updated), reason=record.reason)


def _field_error(field: str, message: str, value) -> HTTPException:
    """A 422 shaped like FastAPI's own validation errors."""
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [
        {"type": "value_error", "loc": ["body", field], "msg": message, "input": value}])


def _check_limits(body: RunCreate, settings) -> None:
    if body.explorers > settings.max_explorers:
        raise _field_error("explorers", f"at most {settings.max_explorers} explorers per run "
                                        f"(MADDPG_API_MAX_EXPLORERS)", body.explorers)
    if body.envs_per_explorer > settings.max_envs_per_explorer:
        raise _field_error("envs_per_explorer", f"at most {settings.max_envs_per_explorer} envs per explorer "
                                                f"(MADDPG_API_MAX_ENVS_PER_EXPLORER)", body.envs_per_explorer)
    if settings.launcher != "kubernetes" and body.pod_fields_set():
        name = body.pod_fields_set()[0]
        raise _field_error(name, f"{name} applies to the kubernetes launcher only (MADDPG_API_LAUNCHER=kubernetes); "
                                 f"this API runs local processes", body.model_dump(mode="json", include={name})[name])


def _check_memory(body: RunCreate, spec: RunSpec, settings) -> None:
    """422 naming the field to lower when the run's learner would not fit in its memory limit: the API's, or the
    learner pod's when lower."""
    limit, name = settings.max_run_memory_bytes, "MADDPG_API_MAX_RUN_MEMORY"
    pod_limit = int(quantity(body.learner_resources.limits.memory))
    if settings.launcher == "kubernetes" and pod_limit < limit:
        limit, name = pod_limit, "learner_resources.limits.memory"
    try:
        problem = memory_problem(spec, limit, name)
    except ValueError as e:
        raise _field_error("env_kwargs", f"{spec.scenario} refuses these keyword arguments: {e}",
                           spec.env_kwargs) from None
    if problem is not None:
        raise _field_error(problem[0], problem[1], getattr(spec, problem[0]))


def _too_many(e: TooManyRunsError) -> HTTPException:
    return HTTPException(status.HTTP_429_TOO_MANY_REQUESTS,
                         f"{e.limit} runs are running or stopping, the most this API runs at once "
                         f"(MADDPG_API_MAX_ACTIVE_RUNS): stop one, or try again once one has ended",
                         headers={"Retry-After": str(RETRY_AFTER_S)})


def _get(registry, run_id: str) -> RunRecord:
    record = registry.get(run_id)
    if record is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no run {run_id!r}")
    return record


@router.post("", status_code=status.HTTP_201_CREATED, response_model=RunOut, dependencies=[Authorized],
             responses={**_AUTH, 400: {"description": "the body is not JSON"},
                        409: {"description": "a run with this id exists"}, **_TOO_MANY, **_NOT_STARTED})
def create_run(body: RunCreate, settings: SettingsDep, registry: RegistryDep, launcher: LauncherDep,
               progress: ProgressDep) -> RunOut:
    """Starts a learner and `explorers` explorers for the run spec (local processes, or Kubernetes Jobs with the
    kubernetes launcher); answers with the new run.

    A plain function: FastAPI runs it in its thread pool, where the registry's and the launcher's blocking calls
    do not stall the event loop."""
    _check_limits(body, settings)
    spec = body.spec()
    _check_memory(body, spec, settings)
    run_id = body.run_id or f"run-{uuid.uuid4().hex[:12]}"
    run_dir = settings.runs_dir / run_id
    if (run_dir / SPEC).exists():
        raise HTTPException(status.HTTP_409_CONFLICT, f"run folder {run_dir} already holds a run")
    pods = PodOptions(body.image, body.learner_resources, body.explorer_resources)
    record = RunRecord(id=run_id, status="running", spec=spec.model_dump(mode="json"), run_dir=str(run_dir),
                       pods=pods.to_dict())
    try:
        registry.add(record, max_active=settings.active_run_cap)
    except DuplicateRunError:
        raise HTTPException(status.HTTP_409_CONFLICT, f"run {run_id!r} exists") from None
    except TooManyRunsError as e:
        raise _too_many(e) from None
    record = _launch(registry, run_id, lambda: launcher.start(run_id, spec, run_dir, pods))
    return _out(record, progress(record, refresh=False))  # nothing to read in a store yet


def _launch(registry, run_id: str, start: Callable[[], Launched]) -> RunRecord:
    """Starts a registered run's processes and records them; a launcher that fails makes the run failed, 503."""
    try:
        launched = start()
    except LaunchError as e:
        registry.update(run_id, status="failed", reason=str(e))
        refused = isinstance(e, LaunchRefused)  # a setting to add, named in the message
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY if refused else status.HTTP_503_SERVICE_UNAVAILABLE,
                            str(e)) from None
    registry.update(run_id, pids=launched.pids, procs=launched.procs, endpoints=launched.endpoints,
                    run_dir=launched.run_dir)
    return _get(registry, run_id)


@router.get("", response_model=RunPage)
def list_runs(registry: RegistryDep, launcher: LauncherDep, progress: ProgressDep,
              status_filter: Annotated[RunStatus | None, Query(alias="status")] = None,
              limit: Annotated[int, Query(ge=1, le=500)] = 50,
              offset: Annotated[int, Query(ge=0, le=2**62)] = 0) -> RunPage:
    """Runs, newest first, optionally only those with one status. The progress of a kubernetes run is the one
    GET /runs/{id} last read from its checkpoints (listing reads no checkpoint store)."""
    reconcile(registry, launcher)
    records, total = registry.list(status_filter, limit, offset)
    return RunPage(items=[_out(r, progress(r, refresh=False)) for r in records], total=total, limit=limit,
                   offset=offset)


@router.get("/{run_id}", response_model=RunOut, responses=_NOT_FOUND)
def get_run(run_id: str, registry: RegistryDep, launcher: LauncherDep, progress: ProgressDep) -> RunOut:
    """A run's spec, status, progress and endpoints. Progress is live for a local run (its run folder), and as
    of the newest checkpoint for a kubernetes run (read at most every 10 s; counters and the mean reward of the
    last 100 episodes)."""
    record = _get(registry, run_id)
    if record.status in ("running", "stopping"):
        reconcile(registry, launcher)
        record = _get(registry, run_id)
    return _out(record, progress(record))


@router.post("/{run_id}/stop", status_code=status.HTTP_202_ACCEPTED, response_model=RunOut,
             dependencies=[Authorized],
             responses={**_NOT_FOUND, **_AUTH, 409: {"description": "the run already finished or failed"}})
def stop_run(run_id: str, registry: RegistryDep, launcher: LauncherDep, progress: ProgressDep) -> RunOut:
    """Stops a run gracefully (its learner writes a final checkpoint); repeating it is harmless. The run is
    `stopping` until its learner has ended (kubernetes: until its Job and pod are gone), then `stopped`."""
    record = _get(registry, run_id)
    if record.status in ("finished", "failed"):
        raise HTTPException(status.HTTP_409_CONFLICT, f"run {run_id!r} already {record.status}; nothing to stop")
    if record.status == "running" and registry.update(run_id, only_from=("running",), status="stopping"):
        launcher.stop(record)
    record = _get(registry, run_id)
    return _out(record, progress(record))


@router.post("/{run_id}/resume", status_code=status.HTTP_202_ACCEPTED, response_model=RunOut,
             dependencies=[Authorized],
             responses={**_NOT_FOUND, **_AUTH, **_TOO_MANY,
                        409: {"description": "the run is running, stopping or finished, or has no checkpoint yet"},
                        **_NOT_STARTED})
def resume_run(run_id: str, settings: SettingsDep, registry: RegistryDep, launcher: LauncherDep,
               progress: ProgressDep) -> RunOut:
    """Continues a stopped or failed run from its newest checkpoint, under the same id: its learner restores the
    checkpoint (a local run's folder, a kubernetes run's checkpoint store) and counts its episodes on from there;
    its explorers start anew. The run is `running` again, with new pids and endpoints."""
    record = _get(registry, run_id)
    if record.status not in RESUMABLE:
        raise HTTPException(status.HTTP_409_CONFLICT, f"run {run_id!r} is {record.status}; only a stopped or "
                                                      f"failed run resumes")
    try:
        spec = RunSpec.from_stored(record.spec)
    except ValidationError as e:
        raise HTTPException(status.HTTP_409_CONFLICT, f"run {run_id!r} was registered under looser bounds and "
                                                      f"cannot resume: {format_validation_error(e)}") from None
    if not progress(record).get("newest_checkpoint"):
        raise HTTPException(status.HTTP_409_CONFLICT, f"run {run_id!r} has no checkpoint to resume from (it ended "
                                                      f"before its first); start a new run")
    try:
        if not registry.update(run_id, only_from=RESUMABLE, max_active=settings.active_run_cap, status="running",
                               reason=None):
            raise HTTPException(status.HTTP_409_CONFLICT, f"run {run_id!r} changed meanwhile; look at it again")
    except TooManyRunsError as e:
        raise _too_many(e) from None
    pods = PodOptions.from_dict(record.pods)
    resumed = _launch(registry, run_id, lambda: launcher.resume(record, spec, pods))
    return _out(resumed, progress(resumed))


@router.get("/{run_id}/rewards", response_model=Rewards, responses=_NOT_FOUND)
def get_rewards(run_id: str, registry: RegistryDep, progress: ProgressDep) -> Rewards:
    """The episode-reward series (total and per agent) for plots: live from the run folder's rewards CSV for a
    local run; for a kubernetes run (its folder is in the learner pod) from the copy of the CSV in its newest
    checkpoint, so up to that checkpoint's episode (written every `save_rate` episodes and at the end)."""
    columns = progress.rewards(_get(registry, run_id))
    return Rewards(episode=[int(v) for v in columns.get("episode", [])],
                   env_steps=[int(v) for v in columns.get("env_steps", [])],
                   reward=columns.get("reward", []),
                   per_agent={k.removeprefix("reward_"): v for k, v in columns.items() if k.startswith("reward_")})
