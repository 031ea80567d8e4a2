"""A Kubernetes API for tests: kmock's in-memory emulator served on a loopback port from a thread of its own,
so the official (blocking) client, the launcher's poller thread and a real HTTP server can all talk to it.

kmock stores what it is sent and answers reads, lists (ignoring label selectors), deletes and 404s. It adds
nothing a real API server would: no uid (added here, on create, as a real one does), no status, no Job
controller and no garbage collector (owner references are stored but never acted on). `job_pod` makes a pod
the way the Job controller would, for tests that play that controller.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import datetime, timezone

import kmock
from kubernetes import client

JOBS, SERVICES, SECRETS, PODS = "batch/v1/jobs", "v1/services", "v1/secrets", "v1/pods"
NETWORK_POLICIES = "networking.k8s.io/v1/networkpolicies"
_KINDS = {JOBS: "Job", SERVICES: "Service", SECRETS: "Secret", PODS: "Pod", NETWORK_POLICIES: "NetworkPolicy"}


class _ApiServer(kmock.KubernetesEmulator):
    """kmock's emulator plus the metadata an API server sets on every object it creates."""

    async def _handle(self, request):
        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
        return await super()._handle(request)


class KubeEmulator:
    """The emulator on a free loopback port; `start` it, point clients at `url`, `stop` it."""

    def __init__(self):
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True, name="kmock")
        self.url = ""

    async def _serve(self) -> None:
        self._loop, self._done = asyncio.get_running_loop(), asyncio.Event()
        async with _ApiServer() as handler, kmock.Server(handler) as server:
            for resource, kind in _KINDS.items():
                handler.resources[resource] = kmock.ResourceInfo(kind=kind, namespaced=True)
            self.handler, self.url = handler, str(server.url).rstrip("/")
            self._ready.set()
            await self._done.wait()

    def start(self) -> KubeEmulator:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the kmock emulator did not start")
        return self

    def stop(self) -> None:
        """Stops serving (again: nothing)."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._done.set)
            self._thread.join(10)

    def clients(self) -> tuple[client.BatchV1Api, client.CoreV1Api, client.NetworkingV1Api]:
        api = client.ApiClient(client.Configuration(host=self.url))
        return client.BatchV1Api(api), client.CoreV1Api(api), client.NetworkingV1Api(api)

    def run(self, fn):
        """Runs `fn()` on the emulator's thread (between two requests) and returns its result."""
        async def call():
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(10)

    def live(self, resource: str, namespace: str) -> dict[str, dict]:
        """The objects of a resource in a namespace that exist now, by name."""
        return self.run(lambda: {name: dict(obj) for (res, ns, name), obj in self.handler.objects.items()
                                 if res == kmock.resource(resource) and ns == namespace and not obj.deleted})

    def patch(self, resource: str, namespace: str, name: str, patch: dict) -> None:
        """Changes an object as a controller would (e.g. a Job's status)."""
        self.run(lambda: self.handler.objects[resource, namespace, name].patch(patch))

    def requests(self, method: str) -> list:
        """(path, query) of every request with this HTTP method so far."""
        return self.run(lambda: [(r.url.path, dict(r.params)) for r in list(self.handler)
                                 if r.method.value.upper() == method.upper()])


def job_pod(job: dict, name: str, status: dict, created: datetime | None = None) -> dict:
    """A pod of `job` as the Job controller makes it (its template, the job-name label, the Job as controller),
    with `status` as the kubelet reports it, made at `created` (default: now)."""
    template = job["spec"]["template"]
    meta = {"name": name, "namespace": job["metadata"]["namespace"], "uid": str(uuid.uuid4()),
            "creationTimestamp": (created or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "labels": {**template["metadata"]["labels"], "job-name": job["metadata"]["name"]},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job["metadata"]["name"],
                                 "uid": job["metadata"]["uid"], "controller": True}]}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"], "status": status}
