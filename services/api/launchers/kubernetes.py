"""The kubernetes launcher: each run as a learner Job, a Secret with the run's key, the learner's Service and
NetworkPolicy and an explorer Job, made through the Kubernetes API (the official client; objects from
services/api/launchers/objects.py).

Runs live in the cluster, not in the API: they outlive an API restart, and a new API process adopts them when
it reconciles the registry. Kubernetes heals a run: a crashed or evicted learner pod is replaced and resumes
from the run's checkpoint store, explorers are replaced likewise. A poller thread lists this API's Jobs and pods
every few seconds and reports the end of each run it watches through `on_exit`: a learner Job that completed is
`finished`; one that failed (a user error, or more crashes than its backoff limit), a failed explorer Job, or a
pod that could not start within the start deadline is `failed` with the reason; a learner Job that vanished is
`failed` (or `stopped`, when a stop deleted it).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException

from maddpg.runspec import RunSpec
from maddpg.transport.security import RunKey
from services.api.launchers import Launched, LaunchError, LaunchRefused, OnExit, PodOptions
from services.api.launchers.kube_status import StartDeadline, failed_condition, outcome
from services.api.launchers.objects import (RUN_ID_LABEL, ZMQ_PORT, ClusterConfig, RunNames, explorer_job,
                                            learner_job, learner_network_policy, learner_service, owner_reference,
                                            run_key_secret, run_selector)
from services.api.registry import RegistryError, RunRecord
from services.api.settings import ApiSettings

log = logging.getLogger(__name__)

# Exactly what this launcher asks of the Kubernetes API (the Role of the API's service account must grant it).
RBAC_RULES = [
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list", "delete"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": ["create", "delete"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "delete"]},  # never get, list or patch
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},  # why a run's pods do not start
    {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["create", "delete"]},
]
_UNREACHABLE = (urllib3.exceptions.HTTPError, OSError)  # no answer at all (refused, timed out, DNS)
_PARTS = ("explorers", "service", "netpol", "key", "learner")  # a run's objects, in the order they are deleted


def api_clients() -> tuple[client.BatchV1Api, client.CoreV1Api, client.NetworkingV1Api]:
    """Clients for the cluster this runs in (its service account), else the kubeconfig's current context.

    Raises:
      LaunchError: neither is there.
    """
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except ConfigException:
        try:
            config.load_kube_config(client_configuration=configuration)
        except (ConfigException, OSError) as e:
            raise LaunchError(f"the kubernetes launcher finds no cluster: not in a pod with a service account, and "
                              f"no usable kubeconfig ({e}); run the API in the cluster (the Helm chart) or set "
                              f"KUBECONFIG, or use MADDPG_API_LAUNCHER=local") from None
    api = client.ApiClient(configuration)
    return client.BatchV1Api(api), client.CoreV1Api(api), client.NetworkingV1Api(api)


def _message(e: ApiException) -> str:
    try:
        return json.loads(e.body)["message"]
    except (TypeError, ValueError, KeyError):
        return e.reason or str(e.status)


def _explain(what: str, e: ApiException | Exception, namespace: str) -> str:
    """A message for a failed call, naming the fix where there is one."""
    if not isinstance(e, ApiException):
        return f"cannot {what}: the Kubernetes API is unreachable ({type(e).__name__}: {e})"
    if e.status in (401, 403):
        return (f"cannot {what} in namespace {namespace}: not allowed for the API's service account ({_message(e)}); "
                f"its Role needs the rules of services.api.launchers.kubernetes.RBAC_RULES")
    return f"cannot {what}: the Kubernetes API answered {e.status}: {_message(e)}"


class KubernetesLauncher:
    """Runs as Kubernetes Jobs (see the module docstring).

    Args:
      on_exit: called with (run_id, status, reason) once a run ended.
      cluster: namespace, image and the rest of the pods' configuration.
      batch, core, networking: API clients (tests point them at an emulator).
      poll_s: seconds between two looks at the runs' Jobs and pods.
      timeout_s: seconds per API call.
    """

    def __init__(self, on_exit: OnExit, cluster: ClusterConfig, batch: client.BatchV1Api, core: client.CoreV1Api,
                 networking: client.NetworkingV1Api, *, poll_s: float = 5.0, timeout_s: float = 15.0):
        self._on_exit, self._cluster = on_exit, cluster
        self._batch, self._core, self._networking = batch, core, networking
        self._ns, self._poll_s, self._timeout = cluster.namespace, poll_s, timeout_s
        self._watched: dict[str, bool] = {}  # run id -> being stopped
        self._start_deadline = StartDeadline(cluster.start_deadline_s, cluster.namespace)
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._poll_problem: str | None = None
        self._poller = threading.Thread(target=self._poll_loop, daemon=True, name="kubernetes-poller")
        self._poller.start()

    @classmethod
    def from_settings(cls, settings: ApiSettings, on_exit: OnExit) -> KubernetesLauncher:
        return cls(on_exit, ClusterConfig.from_settings(settings), *api_clients())

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, _request_timeout=self._timeout, **kwargs)
        except (ApiException, *_UNREACHABLE) as e:
            raise LaunchError(_explain(what, e, self._ns)) from None

    def start(self, run_id: str, spec: RunSpec, run_dir: Path, pods: PodOptions = PodOptions()) -> Launched:
        """Creates the learner Job, then (owned by it) the Secret with a new run key, the Service, the
        NetworkPolicy and the explorer Job.

        The Secret comes after the learner Job so that it is created with its owner: an API that dies in between
        leaves no Secret that nothing owns, and needs no right to patch Secrets (a PATCH answers with the data of
        any Secret it names). The learner pod waits for it: the kubelet starts no container before its volumes
        are mounted. `run_dir` does not apply: the learner's run folder is an emptyDir in its pod.

        Raises:
          LaunchError: the configuration cannot run it (no durable checkpoint store: the message names the
            setting), or the API refuses or cannot be reached (what was made is deleted).
        """
        if problem := self._cluster.start_problem():
            raise LaunchRefused(problem)
        names = RunNames.of(run_id)
        created = self._call("create the learner Job", self._batch.create_namespaced_job, self._ns,
                             learner_job(run_id, spec, self._cluster, pods.learner, pods.image))
        try:
            if not created.metadata.uid:
                raise LaunchError(f"the Kubernetes API returned the learner Job {names.learner} without a uid")
            owner = owner_reference(created.metadata.name, created.metadata.uid)
            self._call("create the run's key Secret", self._core.create_namespaced_secret, self._ns,
                       run_key_secret(run_id, RunKey.generate().text, self._cluster, owner))
            self._call("create the learner's Service", self._core.create_namespaced_service, self._ns,
                       learner_service(run_id, self._cluster, owner))
            self._call("create the learner's NetworkPolicy", self._networking.create_namespaced_network_policy,
                       self._ns, learner_network_policy(run_id, self._cluster, owner))
            self._call("create the explorer Job", self._batch.create_namespaced_job, self._ns,
                       explorer_job(run_id, spec, self._cluster, pods.explorer, owner, pods.image))
        except LaunchError:  # what it owns goes with it: never an object of the same name made by someone else
            self._delete(names, ("learner",))
            raise
        with self._lock:
            self._watched[run_id] = False
        endpoints = {"learner": f"tcp://{names.learner}.{self._ns}.svc:{ZMQ_PORT}"}
        if checkpoints := self._cluster.run_checkpoints(run_id):
            endpoints["checkpoints"] = checkpoints
        return Launched([], endpoints, "")

    def resume(self, record: RunRecord, spec: RunSpec, pods: PodOptions = PodOptions()) -> Launched:
        """Starts an ended run (stopped, failed or finished) again under its id, with its checkpoint URI: the
        learner resumes from the newest checkpoint there by itself. First deletes what is left of the run (the
        ended learner Job, kept for its logs, and whatever a failed delete left) and waits until its Jobs are
        gone, as new ones take their names.

        Raises:
          LaunchError: the run is still active (its learner Job runs, or is being deleted by a stop), or as
            `start` does.
        """
        if problem := self._cluster.start_problem():
            raise LaunchRefused(problem)
        names = RunNames.of(record.id)
        with self._lock:
            if record.id in self._watched:
                raise LaunchError(f"run {record.id} is still {'stopping' if self._watched[record.id] else 'running'}")
        job = self._read_job(names.learner)
        if job is not None and (job.metadata.labels or {}).get(RUN_ID_LABEL) != record.id:
            raise LaunchError(f"cannot resume run {record.id}: the Job {names.learner} is not its learner Job "
                              f"(no {RUN_ID_LABEL}={record.id} label); remove it or choose another id")
        if job is not None and (job.metadata.deletion_timestamp or outcome(job, False, names, self._cluster) is None):
            state = "being deleted (a stop)" if job.metadata.deletion_timestamp else "active"
            raise LaunchError(f"cannot resume run {record.id}: its learner Job {names.learner} is still {state}")
        self._delete(names, background=True)  # nothing runs: no pod to wait for, the Jobs go at once
        deadline = time.monotonic() + self._timeout
        while any(self._read_job(name) is not None for name in (names.learner, names.explorers)):
            if time.monotonic() > deadline:
                raise LaunchError(f"cannot resume run {record.id}: its ended Jobs are still being deleted; "
                                  f"try again in a moment")
            time.sleep(0.2)
        return self.start(record.id, spec, Path(record.run_dir), pods)

    def _read_job(self, name: str) -> client.V1Job | None:
        """The Job, or None when there is none.

        Raises:
          LaunchError: the API refuses or cannot be reached.
        """
        try:
            return self._batch.read_namespaced_job(name, self._ns, _request_timeout=self._timeout)
        except ApiException as e:
            if e.status == 404:
                return None
            raise LaunchError(_explain(f"read the Job {name}", e, self._ns)) from None
        except _UNREACHABLE as e:
            raise LaunchError(_explain(f"read the Job {name}", e, self._ns)) from None

    def _delete(self, names: RunNames, parts: tuple[str, ...] = _PARTS, background: bool = False) -> None:
        """Deletes some of a run's objects (those already gone are fine); failures are logged, and the poller
        tries again for a stopping run. The learner Job goes last: explorers that lost their learner would fail
        and be restarted in vain.

        The learner Job goes in the foreground (unless `background`, for a Job that ended): it stays until its
        pod has ended (SIGTERM, then the grace period for the final checkpoint), so its disappearance means the
        run is over; the garbage collector also deletes what it owns.
        """
        learner_policy = "Background" if background else "Foreground"
        calls = {"learner": ("the learner Job", self._batch.delete_namespaced_job, names.learner, learner_policy),
                 "explorers": ("the explorer Job", self._batch.delete_namespaced_job, names.explorers, "Background"),
                 "service": ("the learner's Service", self._core.delete_namespaced_service, names.learner, None),
                 "netpol": ("the learner's NetworkPolicy", self._networking.delete_namespaced_network_policy,
                            names.learner, None),
                 "key": ("the run's key Secret", self._core.delete_namespaced_secret, names.key, None)}
        for what, fn, name, policy in (calls[part] for part in parts):
            try:
                fn(name, self._ns, propagation_policy=policy, _request_timeout=self._timeout)
            except ApiException as e:
                if e.status != 404:
                    log.warning("%s", _explain(f"delete {what} {name}", e, self._ns))
            except _UNREACHABLE as e:
                log.warning("%s", _explain(f"delete {what} {name}", e, self._ns))

    def stop(self, record: RunRecord) -> None:
        """Deletes the run's objects; the poller reports `stopped` once the learner Job is gone. Idempotent."""
        with self._lock:
            self._watched[record.id] = True
        self._delete(RunNames.of(record.id))

    def alive(self, record: RunRecord) -> bool:
        """Whether the run's learner Job exists; a run found so (after an API restart) is watched from now on.

        When the API cannot tell (unreachable), the run counts as alive: an outage never fails runs.
        """
        with self._lock:
            if record.id in self._watched:
                return True
        names = RunNames.of(record.id)
        try:
            if self._read_job(names.learner) is None:
                return False
        except LaunchError as e:
            log.warning("%s", e)
            return True
        with self._lock:
            self._watched[record.id] = record.status == "stopping"
        if record.status == "stopping":  # the API that stopped it may have died before deleting everything
            self._delete(names)
        return True

    def _list(self, what: str, fn) -> list | None:
        """The items of one LIST of this API's objects, or None (logged once) when the API refuses."""
        try:
            return fn(self._ns, label_selector=run_selector(), _request_timeout=self._timeout).items
        except (ApiException, *_UNREACHABLE) as e:
            problem = _explain(f"list the runs' {what}", e, self._ns)
            if problem != self._poll_problem:
                log.warning("%s; will try again", problem)
            self._poll_problem = problem
            return None

    def poll(self) -> None:
        """Reports every watched run that ended (one LIST of this API's Jobs, one of its pods)."""
        with self._lock:
            runs = list(self._watched)  # taken before the LISTs: each of these Jobs was created before them
        if not runs:
            return
        jobs = self._list("Jobs", self._batch.list_namespaced_job)
        if jobs is None:
            return
        pods = self._list("pods", self._core.list_namespaced_pod)  # None: no start deadline this time
        if pods is not None:
            self._poll_problem = None
        by_name = {job.metadata.name: job for job in jobs}
        stuck = self._start_deadline.check(pods) if pods is not None else {}
        for run_id in runs:
            names = RunNames.of(run_id)
            with self._lock:
                stopping = self._watched.get(run_id)  # now, not when listed: a stop may have come since
            if stopping is None:
                continue
            job = by_name.get(names.learner)
            ended = outcome(job, stopping, names, self._cluster)
            if ended is not None:  # all but the learner Job of an ended run, which keeps its logs
                self._report(run_id, names, ended, stopping, ("explorers", "service", "netpol", "key"))
            elif stopping:
                if job.metadata.deletion_timestamp is None:  # an earlier delete failed
                    self._delete(names)
            elif (explorers := failed_condition(by_name.get(names.explorers))) is not None:
                why = (f"the explorer Job failed: {explorers.message or explorers.reason} "
                       f"(kubectl logs -n {self._ns} job/{names.explorers})")
                self._report(run_id, names, ("failed", why), stopping, _PARTS)  # the learner would wait for ever
            elif run_id in stuck:
                self._report(run_id, names, ("failed", f"the run cannot start: {stuck[run_id]}"), stopping, _PARTS)

    def _report(self, run_id: str, names: RunNames, end: tuple, stopping: bool, parts: tuple[str, ...]) -> None:
        """Reports a run's end (status, reason) and deletes its `parts` (after a stop, they are gone)."""
        with self._lock:
            self._watched.pop(run_id, None)
        if end[0] != "stopped":
            self._delete(names, parts)
        log.info("run %s: %s (%s)", run_id, end[0], end[1] or "ok")
        try:
            self._on_exit(run_id, *end)
        except RegistryError as e:  # the next poll reports it again
            log.warning("run %s ended (%s) but the registry did not take it: %s", run_id, end[0], e)
            with self._lock:
                self._watched.setdefault(run_id, stopping)

    def _poll_loop(self) -> None:
        while not self._closed.wait(self._poll_s):
            self.poll()

    def problem(self) -> str | None:
        """Why the Kubernetes API is not usable (unreachable, or listing Jobs or pods is forbidden), or None."""
        for what, fn in (("Jobs", self._batch.list_namespaced_job), ("pods", self._core.list_namespaced_pod)):
            try:
                fn(self._ns, limit=1, label_selector=run_selector(), _request_timeout=self._timeout)
            except (ApiException, *_UNREACHABLE) as e:
                return _explain(f"list {what}", e, self._ns)
        return None

    def close(self) -> None:
        """Stops the poller. Runs go on in the cluster; the next API process adopts them."""
        self._closed.set()
        self._poller.join(timeout=self._timeout + 5)
