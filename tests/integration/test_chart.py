"""The Helm chart in charts/: linted and rendered by Helm's own Go SDK (helm-python-sdk), every object checked
against the Kubernetes schemas of the oldest and newest version the chart supports, then what an operator and the
API's launcher rely on: probes, resources, non-root, labels, RBAC scope, env vars, monitors, dashboards, and a
values schema that names the bad field."""

from __future__ import annotations

import base64
import importlib
import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts"
RELEASE, NAMESPACE = "maddpg", "ml"
# Chart.yaml's kubeVersion is >=1.25; 1.37 is the newest that kubernetes-validate bundles.
KUBE_VERSIONS = ("1.25.0", "1.37.0")
MONITORING = "monitoring.coreos.com/v1"  # Prometheus Operator CRDs: unknown to kubernetes-validate

# What the kubernetes launcher calls (services/api/launchers/kubernetes.py RBAC_RULES, which the Role is also
# compared with): Jobs, the learner's Service and NetworkPolicy, the run's key Secret, listing pods (why one does
# not start), nothing cluster-wide, no pod creation, exec or logs, and no reading, listing or patching Secrets
# (each of those would show the data of any Secret of the namespace).
EXPECTED_RULES = [
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list", "delete"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": ["create", "delete"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["create", "delete"]},
]

S3 = {"enabled": True, "endpoint": "http://minio.minio:9000", "bucket": "maddpg-ckpt", "prefix": "team/a/",
      "existingSecret": "s3-creds"}
VALUE_SETS = {
    "defaults": {},
    "external-redis": {"redis": {"external": {"url": "redis://redis.shared:6379/2"},
                                 "auth": {"existingSecret": "shared-redis", "secretKey": "password"}}},
    "monitoring": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}},
                               "podMonitor": {"enabled": True, "interval": "10s"}}},
    "s3-token": {"s3": S3, "api": {"token": {"existingSecret": "api-token", "key": "bearer"}}},
    "launcher-local": {"launcher": "local", "api": {"localRuns": {"resources": {
        "requests": {"cpu": "4", "memory": "8Gi"}, "limits": {"cpu": "8", "memory": "16Gi"}}}}},
    "pvc": {"checkpoints": {"pvc": {"enabled": True, "storageClass": "nfs", "size": "50Gi"}},
            "imagePullSecrets": [{"name": "regcred"}, {"name": "mirror"}],
            "runs": {"learnerBackoffLimit": 5, "startDeadlineSeconds": 300, "jobTtlSeconds": 3600}},
    "persistence": {"api": {"persistence": {"enabled": True, "storageClass": "fast", "size": "5Gi"}},
                    "redis": {"persistence": {"storageClass": "fast"}},
                    "runs": {"image": {"repository": "registry.example/maddpg", "tag": "gpu", "pullPolicy": "Always"}},
                    "fullnameOverride": "rl"},
}
STANDARD_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                   "app.kubernetes.io/component", "app.kubernetes.io/part-of", "app.kubernetes.io/managed-by",
                   "helm.sh/chart")


# ---------------------------------------------------------------- helpers
def render(values: dict, chart_dir: Path = CHART) -> list[dict]:
    """Every object the chart renders (NOTES.txt aside), parsed."""
    with helm.Chart.load(chart_dir) as chart:
        manifests = chart.render(values=values, name=RELEASE, namespace=NAMESPACE)
    return [doc for path, text in sorted(manifests.items()) if not path.endswith("NOTES.txt")
            for doc in yaml.safe_load_all(text) if doc]


def notes(values: dict) -> str:
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values=values, name=RELEASE, namespace=NAMESPACE)
    return next(text for path, text in manifests.items() if path.endswith("NOTES.txt"))


def one(objects: list[dict], kind: str, component: str | None = None) -> dict:
    found = [o for o in objects if o["kind"] == kind
             and (component is None or o["metadata"]["labels"]["app.kubernetes.io/component"] == component)]
    assert len(found) == 1, f"expected one {kind} {component or ''}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def api_container(objects: list[dict]) -> dict:
    (container,) = one(objects, "Deployment", "api")["spec"]["template"]["spec"]["containers"]
    return container


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def normalized_rules(rules) -> set[tuple[str, str, frozenset]]:
    """(apiGroup, resource, verbs) per group and resource, from dicts (camelCase or snake_case) or client models."""
    out = set()
    for rule in rules:
        if hasattr(rule, "to_dict"):
            rule = rule.to_dict()
        groups = rule.get("apiGroups", rule.get("api_groups"))
        for group in groups:
            for resource in rule["resources"]:
                out.add((group, resource, frozenset(rule["verbs"])))
    return out


def launcher_rules():
    try:
        module = importlib.import_module("services.api.launchers.kubernetes")
    except ModuleNotFoundError:  # a tree without the kubernetes launcher
        return EXPECTED_RULES
    return module.RBAC_RULES


@pytest.fixture(scope="module", params=list(VALUE_SETS))
def rendered(request) -> tuple[str, dict, list[dict]]:
    values = VALUE_SETS[request.param]
    return request.param, values, render(values)


# ---------------------------------------------------------------- lint and Kubernetes schemas
@pytest.mark.parametrize("name", list(VALUE_SETS))
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_lint_strict_finds_nothing(name, kube_version):
    report = helm.lint(CHART, VALUE_SETS[name], strict=True, namespace=NAMESPACE, kube_version=f"v{kube_version}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], report


def test_every_object_is_valid_kubernetes(rendered):
    _, _, objects = rendered
    for obj in objects:
        if obj["apiVersion"] == MONITORING:
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} on Kubernetes {version}: "
                            f"{'.'.join(map(str, e.path))}: {e.message}")


def test_chart_deploys_the_version_of_the_package():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"], "the default image tag is the package version"
    assert chart["kubeVersion"] == ">=1.25.0-0" and KUBE_VERSIONS[0] == "1.25.0"


def test_every_object_carries_the_standard_labels_and_the_release_namespace(rendered):
    _, _, objects = rendered
    for obj in objects:
        labels = obj["metadata"]["labels"]
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        assert set(STANDARD_LABELS) <= set(labels), f"{where}: missing {set(STANDARD_LABELS) - set(labels)}"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/part-of"] == "maddpg"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "maddpg-0.1.0"
        assert obj["metadata"]["namespace"] == NAMESPACE, where
        template = obj.get("spec", {}).get("template")
        if template:  # the pods carry them too, and the selector picks exactly this component's pods
            assert set(STANDARD_LABELS) <= set(template["metadata"]["labels"]), where
            selector = obj["spec"]["selector"]["matchLabels"]
            assert selector.items() <= template["metadata"]["labels"].items(), where
            assert selector["app.kubernetes.io/component"] == labels["app.kubernetes.io/component"]


# ---------------------------------------------------------------- the API
def test_api_deployment_probes_resources_and_security(rendered):
    _, _, objects = rendered
    deployment = one(objects, "Deployment", "api")
    pod = deployment["spec"]["template"]["spec"]
    container = api_container(objects)
    assert deployment["spec"]["replicas"] == 1
    assert container["args"] == ["api", "--host", "0.0.0.0", "--port", "8000"]
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert set(mounts) - {"/checkpoints"} == {"/data", "/tmp"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_api_data_is_an_empty_dir_or_a_kept_claim():
    objects = render({})
    volumes = {v["name"]: v for v in one(objects, "Deployment", "api")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"]["emptyDir"] == {"sizeLimit": "1Gi"}
    assert not [o for o in objects if o["kind"] == "PersistentVolumeClaim"]

    objects = render(VALUE_SETS["persistence"])
    claim = one(objects, "PersistentVolumeClaim", "api")
    assert claim["spec"]["storageClassName"] == "fast"
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    volumes = {v["name"]: v for v in one(objects, "Deployment", "api")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]


def test_api_service_exposes_http_on_8000_for_the_api_pods():
    objects = render({})
    service = one(objects, "Service", "api")
    assert service["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]
    pod_labels = one(objects, "Deployment", "api")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_api_env_defaults():
    objects = render({})
    env = env_of(api_container(objects))
    assert env["MADDPG_API_LAUNCHER"]["value"] == "kubernetes"
    assert env["MADDPG_API_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["MADDPG_API_IMAGE"]["value"] == api_container(objects)["image"] == "maddpg:0.1.0"
    assert env["MADDPG_API_IMAGE_PULL_POLICY"]["value"] == "IfNotPresent"
    assert env["MADDPG_API_RUNS_DIR"]["value"] == "/data/runs"
    assert env["MADDPG_API_RUN_SERVICE_ACCOUNT"]["value"] == "maddpg-run"
    assert env["MADDPG_LOG_FORMAT"]["value"] == "json"
    assert env["REDIS_URL"]["value"] == "redis://:$(REDIS_PASSWORD)@maddpg-redis.ml.svc:6379/0"
    assert env["MADDPG_API_LEARNER_BACKOFF_LIMIT"]["value"] == "3"
    assert env["MADDPG_API_START_DEADLINE_S"]["value"] == "600"
    assert env["MADDPG_API_JOB_TTL_S"]["value"] == "86400"
    assert env["MADDPG_API_IMAGE_PULL_SECRETS"]["value"] == "[]"
    for absent in ("MADDPG_API_CHECKPOINT_URI", "MADDPG_API_CHECKPOINT_PVC", "MADDPG_API_S3_ENDPOINT",
                   "MADDPG_API_S3_SECRET", "MADDPG_API_TOKEN", "MADDPG_METRICS_PORT"):
        assert absent not in env
    assert "envFrom" not in api_container(objects)


def test_api_env_with_s3_and_a_token_secret():
    container = api_container(render(VALUE_SETS["s3-token"]))
    env = env_of(container)
    assert env["MADDPG_API_CHECKPOINT_URI"]["value"] == "s3://maddpg-ckpt/team/a"
    assert env["MADDPG_API_S3_ENDPOINT"]["value"] == env["AWS_ENDPOINT_URL"]["value"] == "http://minio.minio:9000"
    assert env["MADDPG_API_S3_SECRET"]["value"] == "s3-creds"
    assert container["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert env["MADDPG_API_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "api-token", "key": "bearer"}}

    env = env_of(api_container(render({"s3": {"enabled": True, "bucket": "b-1", "prefix": ""}})))
    assert env["MADDPG_API_CHECKPOINT_URI"]["value"] == "s3://b-1"
    assert "MADDPG_API_S3_ENDPOINT" not in env and "MADDPG_API_S3_SECRET" not in env


def _settings_from_env(monkeypatch, container: dict, secrets: dict[str, str] | None = None):
    """ApiSettings from the env the chart gives the API container, with $(VAR) expanded as Kubernetes does."""
    from services.api.settings import ApiSettings

    for name in [n for n in os.environ if n.startswith("MADDPG_API_") or n in ("REDIS_URL", "REDIS_PASSWORD")]:
        monkeypatch.delenv(name)
    values = {}
    for var in container["env"]:
        if "value" in var:
            value = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: values.get(m.group(1), m.group(0)),
                           var["value"])
        elif "fieldRef" in var["valueFrom"]:
            value = NAMESPACE
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            value = (secrets or {})[f"{ref['name']}/{ref['key']}"]
        values[var["name"]] = value
        monkeypatch.setenv(var["name"], value)
        if var["name"].startswith("MADDPG_API_"):
            field = var["name"].removeprefix("MADDPG_API_").lower()
            assert field in ApiSettings.model_fields, f"{var['name']}: no such setting in services/api/settings.py"
    return ApiSettings()


def test_api_settings_read_every_variable_the_chart_sets(monkeypatch):
    """The env the chart gives the API, fed to the API's own settings class: same names, values it accepts."""
    container = api_container(render(VALUE_SETS["s3-token"]))
    settings = _settings_from_env(monkeypatch, container, {"api-token/bearer": "the-token",
                                                              "maddpg-redis/redis-password": "pw"})
    assert settings.launcher == "kubernetes" and settings.namespace == NAMESPACE
    assert settings.image == "maddpg:0.1.0" and settings.image_pull_policy == "IfNotPresent"
    assert settings.run_service_account == "maddpg-run"
    assert settings.runs_dir == Path("/data/runs")
    assert settings.redis_url == "redis://:pw@maddpg-redis.ml.svc:6379/0"
    assert settings.checkpoint_uri == "s3://maddpg-ckpt/team/a"
    assert settings.s3_endpoint == "http://minio.minio:9000" and settings.s3_secret == "s3-creds"
    assert settings.token.get_secret_value() == "the-token"


def test_the_launcher_configuration_follows_the_values(monkeypatch):
    """Values -> the API's env -> ClusterConfig.from_settings: what the run pods will get."""
    from services.api.launchers.objects import CHECKPOINT_MOUNT, ClusterConfig

    objects = render(VALUE_SETS["pvc"])
    settings = _settings_from_env(monkeypatch, api_container(objects), {"maddpg-redis/redis-password": "pw"})
    config = ClusterConfig.from_settings(settings)
    claim = one(objects, "PersistentVolumeClaim", "checkpoints")
    assert config.checkpoint_pvc == claim["metadata"]["name"] == "maddpg-checkpoints" and not config.checkpoint_uri
    assert config.start_problem() is None and config.run_checkpoints("r1") == "file:///checkpoints/r1"
    assert config.image_pull_secrets == ("regcred", "mirror")
    assert config.redis_password_secret == "maddpg-redis" and config.redis_password_key == "redis-password"
    # The runs' pods get the password as the API does: from the Secret, never in the Job.
    from maddpg.runspec import RunSpec
    from services.api.launchers.objects import learner_job
    from services.api.schemas import LEARNER_RESOURCES

    run_env = {e["name"]: e for e in learner_job("r1", RunSpec(), config, LEARNER_RESOURCES)["spec"]["template"][
        "spec"]["containers"][0]["env"]}
    api_env = env_of(api_container(objects))
    assert run_env["REDIS_URL"] == api_env["REDIS_URL"] and run_env["REDIS_PASSWORD"] == api_env["REDIS_PASSWORD"]
    assert (config.learner_backoff_limit, config.start_deadline_s, config.job_ttl_s) == (5, 300, 3600)
    # The API reads every run's folder where the learner pods write theirs.
    pod = one(objects, "Deployment", "api")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in api_container(objects)["volumeMounts"] if m["mountPath"] == CHECKPOINT_MOUNT]
    assert mount["readOnly"] is True
    assert volumes[mount["name"]]["persistentVolumeClaim"] == {"claimName": "maddpg-checkpoints", "readOnly": True}
    assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}]


def test_the_checkpoint_claim_is_kept_and_can_be_an_existing_one():
    claim = one(render(VALUE_SETS["pvc"]), "PersistentVolumeClaim", "checkpoints")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"] and claim["spec"]["storageClassName"] == "nfs"
    assert claim["spec"]["resources"]["requests"]["storage"] == "50Gi"
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    objects = render({"checkpoints": {"pvc": {"enabled": True, "existingClaim": "shared-ckpt",
                                              "accessMode": "ReadWriteOnce"}}})
    assert not [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    assert env_of(api_container(objects))["MADDPG_API_CHECKPOINT_PVC"]["value"] == "shared-ckpt"
    assert not [o for o in render({}) if o["kind"] == "PersistentVolumeClaim"]


def test_two_checkpoint_stores_are_refused():
    with pytest.raises(Exception, match="choose one checkpoint store"):
        render({"s3": S3, "checkpoints": {"pvc": {"enabled": True}}})


def test_run_pods_image_and_service_account_follow_values():
    objects = render(VALUE_SETS["persistence"])
    env = env_of(api_container(objects))
    assert env["MADDPG_API_IMAGE"]["value"] == "registry.example/maddpg:gpu"
    assert env["MADDPG_API_IMAGE_PULL_POLICY"]["value"] == "Always"
    accounts = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ServiceAccount"}
    run_account = accounts[env["MADDPG_API_RUN_SERVICE_ACCOUNT"]["value"]]
    assert run_account["automountServiceAccountToken"] is False
    assert run_account["metadata"]["labels"]["app.kubernetes.io/component"] == "run"
    assert api_container(objects)["image"] == "maddpg:0.1.0"


# ---------------------------------------------------------------- RBAC
def test_role_allows_exactly_what_the_kubernetes_launcher_needs():
    objects = render({})
    role, binding = one(objects, "Role"), one(objects, "RoleBinding")
    assert normalized_rules(role["rules"]) == normalized_rules(launcher_rules())
    assert normalized_rules(role["rules"]) == normalized_rules(EXPECTED_RULES)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    pod = one(objects, "Deployment", "api")["spec"]["template"]["spec"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": pod["serviceAccountName"],
                                    "namespace": NAMESPACE}]
    assert pod["automountServiceAccountToken"] is True
    assert one(objects, "ServiceAccount", "api")["metadata"]["name"] == pod["serviceAccountName"]
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]


@pytest.mark.parametrize("resources", [{}, {"requests": {"cpu": "4", "memory": "8Gi"}},
                                       {"requests": {"cpu": "4", "memory": "8Gi"}, "limits": {"cpu": "8"}}])
def test_local_launcher_needs_resources_sized_for_its_runs(resources):
    """A default run alone exceeds the API's 1 CPU / 1Gi: launcher=local needs resources meant for runs."""
    with pytest.raises(Exception, match="set api.localRuns.resources"):
        render({"launcher": "local", "api": {"localRuns": {"resources": resources}}})


def test_local_runs_resources_replace_the_api_resources():
    container = api_container(render(VALUE_SETS["launcher-local"]))
    assert container["resources"] == VALUE_SETS["launcher-local"]["api"]["localRuns"]["resources"]
    container = api_container(render({"api": {"localRuns": {"resources": {"limits": {"cpu": "64"}}}}}))
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}  # kubernetes: api.resources


def test_local_launcher_gets_no_kubernetes_access():
    objects = render(VALUE_SETS["launcher-local"])
    assert not [o for o in objects if o["kind"] in ("Role", "RoleBinding")]
    assert one(objects, "Deployment", "api")["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert env_of(api_container(objects))["MADDPG_API_LAUNCHER"]["value"] == "local"
    assert [o["metadata"]["labels"]["app.kubernetes.io/component"] for o in objects
            if o["kind"] == "ServiceAccount"] == ["api"]


# ---------------------------------------------------------------- Redis
def test_bundled_redis_is_a_persistent_non_root_statefulset_behind_redis_url():
    objects = render({})
    statefulset = one(objects, "StatefulSet", "redis")
    pod = statefulset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][:2] == ["sh", "-c"] and container["args"][2].startswith(
        "exec redis-server - --appendonly yes --dir /data")  # PID 1, the password on stdin
    assert "redis-cli" in " ".join(container["livenessProbe"]["exec"]["command"])
    assert "ping" in " ".join(container["readinessProbe"]["exec"]["command"])
    assert pod["securityContext"]["runAsNonRoot"] is True and container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data" and claim["spec"]["resources"]["requests"]["storage"] == "8Gi"
    assert container["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]

    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"
                and o["metadata"]["labels"]["app.kubernetes.io/component"] == "redis"}
    assert services[statefulset["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"
    url = env_of(api_container(objects))["REDIS_URL"]["value"]
    host = re.fullmatch(r"redis://:\$\(REDIS_PASSWORD\)@([^.:/]+)\.ml\.svc:6379/0", url).group(1)
    assert services[host]["spec"]["ports"][0]["port"] == 6379
    assert services[host]["spec"]["selector"].items() <= statefulset["spec"]["template"]["metadata"]["labels"].items()


def test_external_redis_replaces_the_bundled_one():
    objects = render(VALUE_SETS["external-redis"])
    assert not [o for o in objects if o["metadata"]["labels"]["app.kubernetes.io/component"] == "redis"]
    env = env_of(api_container(objects))
    assert env["REDIS_URL"]["value"] == "redis://:$(REDIS_PASSWORD)@redis.shared:6379/2"
    assert env["REDIS_PASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": "shared-redis", "key": "password"}}
    assert env["MADDPG_API_REDIS_PASSWORD_SECRET"]["value"] == "shared-redis"
    assert not [o for o in objects if o["kind"] == "Secret"]
    env = env_of(api_container(render({"redis": {"external": {"url": "rediss://r.example:6380/0"},
                                                 "auth": {"enabled": False}}})))
    assert env["REDIS_URL"]["value"] == "rediss://r.example:6380/0"
    assert "REDIS_PASSWORD" not in env and "MADDPG_API_REDIS_PASSWORD_SECRET" not in env


@pytest.mark.parametrize("values, message", [
    ({"redis": {"external": {"url": "redis://:hunter2@r:6379/0"}, "auth": {"existingSecret": "s"}}},
     "holds credentials"),
    ({"redis": {"external": {"url": "redis://r:6379/0"}}}, "needs its password"),
])
def test_a_redis_password_is_never_a_plain_value(values, message):
    with pytest.raises(Exception, match=message):
        render(values)


def test_the_bundled_redis_password_is_a_generated_secret_the_api_and_redis_read():
    objects = render({})
    secret = one(objects, "Secret", "redis")
    password = base64.b64decode(secret["data"]["redis-password"]).decode()
    assert re.fullmatch("[A-Za-z0-9]{32}", password)
    assert password not in json.dumps([o for o in objects if o["kind"] != "Secret"])
    (redis,) = one(objects, "StatefulSet", "redis")["spec"]["template"]["spec"]["containers"]
    ref = {"secretKeyRef": {"name": secret["metadata"]["name"], "key": "redis-password"}}
    assert env_of(redis)["REDIS_PASSWORD"]["valueFrom"] == env_of(redis)["REDISCLI_AUTH"]["valueFrom"] == ref
    assert 'requirepass "$REDIS_PASSWORD"' in redis["args"][2]
    env = env_of(api_container(objects))
    names = [e["name"] for e in api_container(objects)["env"]]
    assert env["REDIS_PASSWORD"]["valueFrom"] == ref and names.index("REDIS_PASSWORD") < names.index("REDIS_URL")
    assert env["MADDPG_API_REDIS_PASSWORD_SECRET"]["value"] == "maddpg-redis"
    assert env["MADDPG_API_REDIS_PASSWORD_KEY"]["value"] == "redis-password"

    objects = render({"redis": {"auth": {"enabled": False}}})
    assert not [o for o in objects if o["kind"] == "Secret"]
    (redis,) = one(objects, "StatefulSet", "redis")["spec"]["template"]["spec"]["containers"]
    assert redis["args"][:3] == ["redis-server", "--appendonly", "yes"] and "env" not in redis
    assert env_of(api_container(objects))["REDIS_URL"]["value"] == "redis://maddpg-redis.ml.svc:6379/0"


# ---------------------------------------------------------------- NetworkPolicies
def _selects(selector: dict, pod_labels: dict) -> bool:
    return selector.get("matchLabels", {}).items() <= pod_labels.items()


def _policies_of(objects: list[dict], pod_labels: dict) -> list[dict]:
    return [o for o in objects if o["kind"] == "NetworkPolicy" and _selects(o["spec"]["podSelector"], pod_labels)]


def test_network_policies_let_only_the_api_and_runs_reach_redis_and_prometheus_reach_metrics(monkeypatch):
    from maddpg.runspec import RunSpec
    from services.api.launchers.objects import (ClusterConfig, explorer_job, labels, learner_job,
                                                learner_network_policy, owner_reference)
    from services.api.schemas import EXPLORER_RESOURCES, LEARNER_RESOURCES

    values = {"networkPolicy": {"metrics": {"namespaceLabels": {"kubernetes.io/metadata.name": "monitoring"}}}}
    objects = render(values)
    api_pod = one(objects, "Deployment", "api")["spec"]["template"]["metadata"]["labels"]
    redis_pod = one(objects, "StatefulSet", "redis")["spec"]["template"]["metadata"]["labels"]
    learner_pod, explorer_pod = labels("r1", "learner"), labels("r1", "explorer")  # what the launcher makes

    (redis_policy,) = _policies_of(objects, redis_pod)
    (rule,) = redis_policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": "redis", "protocol": "TCP"}]
    for client in (api_pod, learner_pod, explorer_pod):
        assert any(_selects(peer["podSelector"], client) for peer in rule["from"])
    assert not any(_selects(peer["podSelector"], {"app": "intruder"}) for peer in rule["from"])
    assert all(set(peer) == {"podSelector"} for peer in rule["from"])  # this namespace only

    (api_policy,) = _policies_of(objects, api_pod)
    assert api_policy["spec"]["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]

    # The runs' pods: metrics from Prometheus (chart), and a learner's ZeroMQ port from its explorers (per run,
    # made by the launcher with the labels the chart gives it).
    (runs_policy,) = _policies_of(objects, explorer_pod)
    assert _policies_of(objects, learner_pod) == [runs_policy]
    (metrics,) = runs_policy["spec"]["ingress"]
    assert metrics["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    settings = _settings_from_env(monkeypatch, api_container(objects), {"maddpg-redis/redis-password": "pw"})
    config = ClusterConfig.from_settings(settings)
    run_policy = learner_network_policy("r1", config, owner_reference("maddpg-r1-learner", "u"))
    assert run_policy["spec"]["ingress"][1]["from"] == metrics["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
         "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]
    spec = RunSpec()
    for job in (learner_job("r1", spec, config, LEARNER_RESOURCES),
                explorer_job("r1", spec, config, EXPLORER_RESOURCES, owner_reference("maddpg-r1-learner", "u"))):
        assert job["spec"]["template"]["metadata"]["labels"] in (learner_pod, explorer_pod)
    # The API and Redis pods are no run pods.
    assert not _selects(runs_policy["spec"]["podSelector"], api_pod)
    assert not _selects(runs_policy["spec"]["podSelector"], redis_pod)


def test_network_policies_are_optional_and_follow_the_bundled_redis():
    assert not [o for o in render({"networkPolicy": {"enabled": False}}) if o["kind"] == "NetworkPolicy"]
    names = sorted(o["metadata"]["name"] for o in render(VALUE_SETS["external-redis"]) if o["kind"] == "NetworkPolicy")
    assert names == ["maddpg-api", "maddpg-runs"]
    env = env_of(api_container(render({})))
    assert json.loads(env["MADDPG_API_METRICS_NAMESPACE_LABELS"]["value"]) == {}
    assert json.loads(env["MADDPG_API_METRICS_POD_LABELS"]["value"]) == {"app.kubernetes.io/name": "prometheus"}
    objects = render({"networkPolicy": {"metrics": {"podLabels": {"app": "prom"}}}})  # replaces the default
    assert json.loads(env_of(api_container(objects))["MADDPG_API_METRICS_POD_LABELS"]["value"]) == {"app": "prom"}
    (runs_policy,) = [o for o in objects if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "maddpg-runs"]
    assert runs_policy["spec"]["ingress"][0]["from"] == [{"namespaceSelector": {},
                                                         "podSelector": {"matchLabels": {"app": "prom"}}}]


# ---------------------------------------------------------------- Prometheus Operator objects (checked by hand)
def test_monitors_only_when_enabled():
    assert not [o for o in render({}) if o["apiVersion"] == MONITORING]


def test_service_monitor_scrapes_the_api_metrics():
    objects = render(VALUE_SETS["monitoring"])
    monitor = one(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == MONITORING
    assert monitor["metadata"]["labels"]["release"] == "kps"
    service = one(objects, "Service", "api")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {"port": "http", "path": "/metrics", "interval": "30s"}
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}


def test_pod_monitor_selects_learner_and_explorer_pods_of_runs():
    objects = render(VALUE_SETS["monitoring"])
    monitor = one(objects, "PodMonitor")
    assert monitor["apiVersion"] == MONITORING
    selector = monitor["spec"]["selector"]
    assert selector["matchLabels"] == {"app.kubernetes.io/part-of": "maddpg"}
    assert selector["matchExpressions"] == [{"key": "app.kubernetes.io/component", "operator": "In",
                                            "values": ["learner", "explorer"]}]
    assert monitor["spec"]["podMetricsEndpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "10s"}]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    # the API and Redis pods are not scraped as runs
    for kind in ("Deployment", "StatefulSet"):
        for obj in (o for o in objects if o["kind"] == kind):
            component = obj["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
            assert component not in selector["matchExpressions"][0]["values"]


# ---------------------------------------------------------------- Grafana dashboards
def dashboard_configmaps(objects: list[dict]) -> list[dict]:
    return [o for o in objects if o["kind"] == "ConfigMap"
            and o["metadata"]["labels"]["app.kubernetes.io/component"] == "dashboards"]


def test_one_labelled_configmap_per_dashboard_of_the_chart():
    files = sorted((CHART / "dashboards").glob("*.json"))
    maps = dashboard_configmaps(render({}))
    assert len(maps) == len(files)
    contents = {key: json.loads(text) for cm in maps for key, text in cm["data"].items()}
    for cm in maps:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert sorted(contents.values(), key=json.dumps) == sorted((json.loads(f.read_text()) for f in files),
                                                                key=json.dumps)
    assert not dashboard_configmaps(render({"dashboards": {"enabled": False}}))


@pytest.fixture(scope="module")
def chart_with_dashboards(tmp_path_factory) -> Path:
    """A copy of the chart with two more dashboards (one with a name that is no valid object name as it is)."""
    chart = tmp_path_factory.mktemp("chart") / "maddpg"
    shutil.copytree(CHART, chart)
    (chart / "dashboards").mkdir(exist_ok=True)
    for name, title in (("fixture-overview.json", "Fixture"), ("Fixture_Learner Latency.json", "Latency")):
        (chart / "dashboards" / name).write_text(json.dumps({"title": title, "uid": title.lower(), "panels": []}))
    return chart


def test_every_dashboard_file_becomes_a_sidecar_configmap(chart_with_dashboards):
    files = sorted((chart_with_dashboards / "dashboards").glob("*.json"))
    values = {"dashboards": {"label": "grafana_dashboard_maddpg", "labelValue": "yes",
                             "annotations": {"grafana_folder": "MADDPG"}}}
    maps = dashboard_configmaps(render(values, chart_with_dashboards))
    assert len(maps) == len(files) >= 2
    names = {cm["metadata"]["name"] for cm in maps}
    assert {"maddpg-dashboard-fixture-overview", "maddpg-dashboard-fixture-learner-latency"} <= names
    for cm in maps:
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", cm["metadata"]["name"])
        assert cm["metadata"]["labels"]["grafana_dashboard_maddpg"] == "yes"
        assert cm["metadata"]["annotations"] == {"grafana_folder": "MADDPG"}
        (text,) = cm["data"].values()
        json.loads(text)
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(cm, version, strict=True)
    titles = {json.loads(text)["title"] for cm in maps for text in cm["data"].values()}
    assert {"Fixture", "Latency"} <= titles


# ---------------------------------------------------------------- values and their schema
@pytest.mark.parametrize("values, field", [
    ({"api": {"replicaCount": -1}}, "/api/replicaCount"),
    ({"launcher": "docker"}, "/launcher"),
    ({"s3": {"enabled": True}}, "/s3/bucket"),
    ({"s3": {"enabled": True, "bucket": ""}}, "/s3/bucket"),
    ({"s3": {"enabled": True, "bucket": "Not_A_Bucket"}}, "/s3/bucket"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"redis": {"image": {"pullPolicy": "always"}}}, "/redis/image/pullPolicy"),
    ({"replicas": 2}, "'replicas'"),
    ({"s3": {"bukket": "x"}}, "'bukket'"),
    ({"checkpoints": {"pvc": {"accessMode": "ReadWriteOncePod"}}}, "/checkpoints/pvc/accessMode"),
    ({"runs": {"startDeadlineSeconds": 5}}, "/runs/startDeadlineSeconds"),
    ({"runs": {"learnerBackoffLimit": -1}}, "/runs/learnerBackoffLimit"),
])
def test_schema_rejects_bad_values_naming_the_field(values, field):
    with helm.Chart.load(CHART) as chart:
        with pytest.raises(helm.HelmValuesError) as merged_error:
            chart.render(values=values, name=RELEASE, namespace=NAMESPACE)
        with pytest.raises(helm.HelmValuesError) as raw_error:
            chart.validate_schema(values)  # the values alone, as a user wrote them
    assert field in str(merged_error.value)
    assert field in str(raw_error.value)


def test_schema_accepts_the_defaults_and_every_value_set():
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(chart.values)
        for values in VALUE_SETS.values():
            chart.validate_schema(chart.merge_values(values))


def _leaves(tree: dict, prefix: tuple = ()) -> list[tuple]:
    out = []
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out += _leaves(value, prefix + (key,))
        else:
            out.append(prefix + (key,))
    return out


def test_every_value_is_used_by_a_template():
    text = "\n".join(p.read_text() for p in (CHART / "templates").iterdir())
    used = {tuple(m.split(".")) for m in re.findall(r"\.Values\.([A-Za-z0-9_.]+)", text)}
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    unused = [".".join(leaf) for leaf in _leaves(values) if not any(leaf[:n] in used for n in range(1, len(leaf) + 1))]
    assert not unused, f"values no template reads: {unused}"


def test_notes_tell_how_to_reach_the_api():
    text = notes({})
    assert f"kubectl --namespace {NAMESPACE} port-forward svc/maddpg-api 8000:8000" in text
    assert "http://127.0.0.1:8000/docs" in text
    assert "curl -X POST http://127.0.0.1:8000/runs" in text
    assert "The API REFUSES RUNS" in text and "checkpoints.pvc.enabled=true" in text
    assert "claim maddpg-checkpoints (ReadWriteMany)" in notes(VALUE_SETS["pvc"])
    text = notes(VALUE_SETS["s3-token"])
    assert "authorization: Bearer $TOKEN" in text and "get secret api-token" in text
    assert "s3://maddpg-ckpt/team/a at http://minio.minio:9000" in text


# ---------------------------------------------------------------- the helm binary
def helm_binary() -> str | None:
    """`make install`'s helm (scripts/install-helm), else one on PATH."""
    local = ROOT / ".cache" / "tools" / "helm"
    return str(local) if os.access(local, os.X_OK) else shutil.which("helm")


needs_helm = pytest.mark.skipif(helm_binary() is None and not os.environ.get("CI"),
                                reason="no helm binary: `make install` puts one at .cache/tools/helm")


@pytest.fixture(scope="module")
def values_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("values")
    for name, values in VALUE_SETS.items():
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(values))
    return {name: folder / f"{name}.yaml" for name in VALUE_SETS}


def run_helm(*args: str) -> subprocess.CompletedProcess:
    binary = helm_binary()
    assert binary, "no helm binary: `make install` puts one at .cache/tools/helm"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60)


@needs_helm
@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_helm_lint_strict_passes(name, values_files):
    for kube_version in KUBE_VERSIONS:
        lint = run_helm("lint", "--strict", str(CHART), "--values", str(values_files[name]), "--namespace", NAMESPACE,
                        "--kube-version", kube_version)
        assert lint.returncode == 0 and "[WARNING]" not in lint.stdout, lint.stdout + lint.stderr


@needs_helm
@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_helm_template_renders_what_the_sdk_renders(name, values_files):
    """The binary and the Go SDK in the wheel are separate builds of Helm: the same objects, field for field."""
    out = run_helm("template", RELEASE, str(CHART), "--values", str(values_files[name]), "--namespace", NAMESPACE)
    assert out.returncode == 0, out.stderr
    by_binary = sorted((o for o in yaml.safe_load_all(out.stdout) if o), key=_kind_and_name)
    by_sdk = sorted(render(VALUE_SETS[name]), key=_kind_and_name)
    assert [_random_free(o) for o in by_binary] == [_random_free(o) for o in by_sdk]


def _kind_and_name(obj: dict) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def _random_free(obj: dict) -> dict:
    """The object with the values of a Secret (the Redis password is random in each rendering) as their lengths."""
    if obj["kind"] != "Secret":
        return obj
    return {**obj, "data": {k: len(base64.b64decode(v)) for k, v in obj.get("data", {}).items()}}
