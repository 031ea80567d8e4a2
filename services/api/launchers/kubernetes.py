"""The kubernetes launcher: each run as a learner Job, a Secret with the run's key, the learner's Service and an
explorer Job, made through the Kubernetes API (the official client; objects from services/api/launchers/objects.py).

Runs live in the cluster, not in the API: they outlive an API restart, and a new API process adopts them when
it reconciles the registry. A poller thread lists this API's learner Jobs every few seconds and reports the end
of each run it watches through `on_exit`: a Job that completed is `finished`, one that failed is `failed` with
the Job's message, one that vanished is `failed` (or `stopped`, when a stop deleted it).
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException

from maddpg.runspec import RunSpec
from maddpg.transport.security import RunKey
from services.api.launchers import Launched, LaunchError, OnExit, PodOptions
from services.api.launchers.objects import (ZMQ_PORT, ClusterConfig, RunNames, explorer_job, learner_job,
                                            learner_selector, learner_service, owner_reference, run_key_secret)
from services.api.registry import RegistryError, RunRecord
from services.api.settings import ApiSettings

log = logging.getLogger(__name__)

# Exactly what this launcher asks of the Kubernetes API (the Role of the API's service account must grant it).
RBAC_RULES = [
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list", "delete"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": ["create", "delete"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "delete"]},  # never get, list or patch
]
_UNREACHABLE = (urllib3.exceptions.HTTPError, OSError)  # no answer at all (refused, timed out, DNS)


def api_clients() -> tuple[client.BatchV1Api, client.CoreV1Api]:
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
    return client.BatchV1Api(api), client.CoreV1Api(api)


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


def _outcome(job: client.V1Job | None, stopping: bool, names: RunNames, namespace: str) -> tuple | None:
    """(status, reason) of a run whose learner Job ended or vanished; None while it runs (or is being stopped)."""
    if job is None:
        if stopping:
            return "stopped", None
        return "failed", f"the learner Job {namespace}/{names.learner} vanished (deleted outside the API?)"
    if stopping:  # ended or not, a stopped run is over once its learner pod is gone, and with it its Job
        return None
    for condition in (job.status.conditions if job.status else None) or []:
        if condition.status != "True":
            continue
        if condition.type == "Complete":
            return "finished", None
        if condition.type == "Failed":
            return "failed", (f"the learner Job failed: {condition.message or condition.reason} "
                              f"(kubectl logs -n {namespace} job/{names.learner})")
    return None


class KubernetesLauncher:
    """Runs as Kubernetes Jobs (see the module docstring).

    Args:
      on_exit: called with (run_id, status, reason) once a run ended.
      cluster: namespace, image and the rest of the pods' configuration.
      batch, core: API clients (tests point them at an emulator).
      poll_s: seconds between two looks at the learner Jobs.
      timeout_s: seconds per API call.
    """

    def __init__(self, on_exit: OnExit, cluster: ClusterConfig, batch: client.BatchV1Api, core: client.CoreV1Api,
                 *, poll_s: float = 5.0, timeout_s: float = 15.0):
        self._on_exit, self._cluster, self._batch, self._core = on_exit, cluster, batch, core
        self._ns, self._poll_s, self._timeout = cluster.namespace, poll_s, timeout_s
        self._watched: dict[str, bool] = {}  # run id -> being stopped
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
        """Creates the learner Job, then (owned by it) the Secret with a new run key, the Service and the
        explorer Job.

        The Secret comes after the learner Job so that it is created with its owner: an API that dies in between
        leaves no Secret that nothing owns, and needs no right to patch Secrets (a PATCH answers with the data of
        any Secret it names). The learner pod waits for it: the kubelet starts no container before its volumes
        are mounted. `run_dir` does not apply: the learner's run folder is an emptyDir in its pod. Raises
        LaunchError (and deletes what it made) when the API refuses or cannot be reached.
        """
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
            self._call("create the explorer Job", self._batch.create_namespaced_job, self._ns,
                       explorer_job(run_id, spec, self._cluster, pods.explorer, owner, pods.image))
        except LaunchError:  # what it owns goes with it: never an object of the same name made by someone else
            self._delete(names, ("learner",))
            raise
        with self._lock:
            self._watched[run_id] = False
        endpoints = {"learner": f"tcp://{names.learner}.{self._ns}.svc:{ZMQ_PORT}"}
        if self._cluster.checkpoint_uri:
            endpoints["checkpoints"] = self._cluster.run_checkpoints(run_id)
        return Launched([], endpoints, "")

    def _delete(self, names: RunNames, parts: tuple[str, ...] = ("explorers", "service", "key", "learner")) -> None:
        """Deletes some of a run's objects (those already gone are fine); failures are logged, and the poller
        tries again for a stopping run. The learner Job goes last: explorers that lost their learner would fail
        and be restarted in vain.

        The learner Job goes in the foreground: it stays until its pod has ended (SIGTERM, then the grace
        period for the final checkpoint), so its disappearance means the run is over; the garbage collector
        also deletes what it owns.
        """
        calls = {"learner": ("the learner Job", self._batch.delete_namespaced_job, names.learner, "Foreground"),
                 "explorers": ("the explorer Job", self._batch.delete_namespaced_job, names.explorers, "Background"),
                 "service": ("the learner's Service", self._core.delete_namespaced_service, names.learner, None),
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
            self._batch.read_namespaced_job(names.learner, self._ns, _request_timeout=self._timeout)
        except ApiException as e:
            if e.status == 404:
                return False
            log.warning("%s", _explain(f"read the learner Job {names.learner}", e, self._ns))
            return True
        except _UNREACHABLE as e:
            log.warning("%s", _explain(f"read the learner Job {names.learner}", e, self._ns))
            return True
        with self._lock:
            self._watched[record.id] = record.status == "stopping"
        if record.status == "stopping":  # the API that stopped it may have died before deleting everything
            self._delete(names)
        return True

    def poll(self) -> None:
        """Reports every watched run whose learner Job ended or vanished (one LIST of this API's learner Jobs)."""
        with self._lock:
            runs = list(self._watched)  # taken before the LIST: each of these Jobs was created before it
        if not runs:
            return
        try:
            jobs = self._batch.list_namespaced_job(self._ns, label_selector=learner_selector(),
                                                   _request_timeout=self._timeout).items
        except (ApiException, *_UNREACHABLE) as e:
            problem = _explain("list the learner Jobs", e, self._ns)
            if problem != self._poll_problem:
                log.warning("%s; will try again", problem)
            self._poll_problem = problem
            return
        self._poll_problem = None
        by_name = {job.metadata.name: job for job in jobs}
        for run_id in runs:
            names = RunNames.of(run_id)
            job = by_name.get(names.learner)
            with self._lock:
                stopping = self._watched.get(run_id)  # now, not when listed: a stop may have come since
            if stopping is None:
                continue
            outcome = _outcome(job, stopping, names, self._ns)
            if outcome is None:
                if stopping and job.metadata.deletion_timestamp is None:  # an earlier delete failed
                    self._delete(names)
                continue
            with self._lock:
                self._watched.pop(run_id, None)
            if outcome[0] != "stopped":  # all but the learner Job of an ended run, which keeps its logs
                self._delete(names, ("explorers", "service", "key"))
            log.info("run %s: %s (%s)", run_id, outcome[0], outcome[1] or "ok")
            try:
                self._on_exit(run_id, *outcome)
            except RegistryError as e:  # the next poll reports it again
                log.warning("run %s ended (%s) but the registry did not take it: %s", run_id, outcome[0], e)
                with self._lock:
                    self._watched.setdefault(run_id, stopping)

    def _poll_loop(self) -> None:
        while not self._closed.wait(self._poll_s):
            self.poll()

    def problem(self) -> str | None:
        """Why the Kubernetes API is not usable (unreachable, or listing Jobs is forbidden), or None."""
        try:
            self._batch.list_namespaced_job(self._ns, limit=1, _request_timeout=self._timeout)
        except (ApiException, *_UNREACHABLE) as e:
            return _explain("list Jobs", e, self._ns)
        return None

    def close(self) -> None:
        """Stops the poller. Runs go on in the cluster; the next API process adopts them."""
        self._closed.set()
        self._poller.join(timeout=self._timeout + 5)
