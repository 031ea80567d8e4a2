"""How a run is doing in the cluster, read from its Jobs' conditions and its pods' states (for the kubernetes
launcher's poller): whether it ended, and whether a pod of it cannot start."""

from __future__ import annotations

from datetime import datetime, timezone

from kubernetes import client

from services.api.launchers.objects import RUN_ID_LABEL, ClusterConfig, RunNames

# Waiting reasons of a container that will not start by itself (a Pending pod counts, whatever its reason).
STUCK_REASONS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
                 "CreateContainerError", "CrashLoopBackOff", "RunContainerError"}


def failed_condition(job: client.V1Job | None) -> client.V1JobCondition | None:
    """The Failed condition of a Job, if it failed."""
    conditions = (job.status.conditions if job is not None and job.status else None) or []
    return next((c for c in conditions if c.type == "Failed" and c.status == "True"), None)


def outcome(job: client.V1Job | None, stopping: bool, names: RunNames, cluster: ClusterConfig) -> tuple | None:
    """(status, reason) of a run whose learner Job ended or vanished; None while it runs (or is being stopped).

    Only a Complete or Failed condition ends a run: a learner pod that failed and was replaced (the Job's
    `status.failed` counts it) does not.
    """
    if job is None:
        if stopping:
            return "stopped", None
        return "failed", f"the learner Job {cluster.namespace}/{names.learner} vanished (deleted outside the API?)"
    if stopping:  # ended or not, a stopped run is over once its learner pod is gone, and with it its Job
        return None
    conditions = (job.status.conditions if job.status else None) or []
    if any(c.type == "Complete" and c.status == "True" for c in conditions):
        return "finished", None
    if (failed := failed_condition(job)) is None:
        return None
    why, logs = failed.message or failed.reason, f"(kubectl logs -n {cluster.namespace} job/{names.learner})"
    if failed.reason == "PodFailurePolicy":  # its only FailJob rule: exit code 2
        return "failed", f"the learner exited with code 2, a user error (a bad run spec?), not retried: {why} {logs}"
    if failed.reason == "BackoffLimitExceeded":
        return "failed", (f"the learner Job failed: its pod failed {cluster.learner_backoff_limit + 1} times "
                          f"(MADDPG_API_LEARNER_BACKOFF_LIMIT={cluster.learner_backoff_limit}): {why} {logs}")
    return "failed", f"the learner Job failed: {why} {logs}"


def not_running(pod: client.V1Pod) -> str | None:
    """Why a pod of a run is not running ("ImagePullBackOff: ...", "Unschedulable: ..."), or None when it runs
    (or ended: its Job deals with that)."""
    status = pod.status
    if pod.metadata.deletion_timestamp or status is None or status.phase not in ("Pending", "Running"):
        return None
    for container in status.container_statuses or []:
        waiting = container.state.waiting if container.state else None
        if waiting and (status.phase == "Pending" or waiting.reason in STUCK_REASONS):
            return f"{waiting.reason}: {waiting.message}" if waiting.message else waiting.reason
    if status.phase != "Pending":
        return None
    unscheduled = [c for c in status.conditions or [] if c.type == "PodScheduled" and c.status == "False"]
    return f"{unscheduled[0].reason}: {unscheduled[0].message}" if unscheduled else "Pending"


class StartDeadline:
    """Finds the runs with a pod that has not been able to start for `deadline_s` seconds: Pending since it was
    made (image pull errors, unschedulable, a missing Secret or claim) or, Running, stuck in a crash loop since
    first seen so. Call `check` with all the runs' pods, each time."""

    def __init__(self, deadline_s: float, namespace: str):
        self._deadline_s, self._ns = deadline_s, namespace
        self._since: dict[str, datetime] = {}  # pod uid -> since when it has not been running

    def check(self, pods: list[client.V1Pod]) -> dict[str, str]:
        """Run id -> why (the pod, its reason and how to see more), for each run with such a pod."""
        now, since, stuck = datetime.now(timezone.utc), {}, {}
        for pod in pods:
            why = not_running(pod)
            if why is None:
                continue
            meta, run_labels = pod.metadata, pod.metadata.labels or {}
            began = meta.creation_timestamp if pod.status.phase == "Pending" else self._since.get(meta.uid)
            since[meta.uid] = began = began or now
            run_id = run_labels.get(RUN_ID_LABEL)
            if run_id and (now - began).total_seconds() >= self._deadline_s:
                stuck[run_id] = (f"its {run_labels.get('app.kubernetes.io/component', '')} pod {meta.name} has not "
                                 f"started in {self._deadline_s:g} s (MADDPG_API_START_DEADLINE_S): {why} "
                                 f"(kubectl describe pod -n {self._ns} {meta.name})")
        self._since = since
        return stuck
