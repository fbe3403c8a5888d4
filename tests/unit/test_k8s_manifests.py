"""The Kubernetes manifests in deploy/k8s, checked without a cluster.

Every object is validated against the Kubernetes API schemas that the
``kubernetes-validate`` package ships (strict: an unknown or misspelt field
fails), for the oldest release the manifests need and the newest the
package knows. Then the cross-references a schema cannot see: the settings a
pod ends up with (the ConfigMap, the downward API, ``$(VAR)`` expansion as
the kubelet does it) against ``scheduler.settings.Settings``, the probes
against the web view, the mounts against the file settings, the labels
against the selectors, the user against the Dockerfile's.
"""

from __future__ import annotations

import copy
import re
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from scheduler import webauth
from scheduler.settings import Settings
from tests.unit.test_container_files import cli_subcommands, final

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"

#: The oldest release the manifests are written for: the PodDisruptionBudget's
#: unhealthyPodEvictionPolicy is GA from 1.31, and so is every other field used.
OLDEST = "1.31.0"

POD_NAME = "scheduler-worker-0"
NAMESPACE = "tenant-a"


# -- the files, parsed once -------------------------------------------------


@cache
def kustomization() -> dict[str, Any]:
    loaded = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


@cache
def objects() -> tuple[dict[str, Any], ...]:
    found = []
    for path in manifest_files():
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document is not None:
                assert isinstance(document, dict), f"{path.name}: not a mapping"
                found.append(document)
    return tuple(found)


def obj(kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return copy.deepcopy(matches[0])


def only(kind: str) -> dict[str, Any]:
    matches = [o for o in objects() if o["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind}, found {len(matches)}"
    return copy.deepcopy(matches[0])


def statefulset() -> dict[str, Any]:
    return only("StatefulSet")


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = statefulset()["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    containers = pod_spec()["containers"]
    assert len(containers) == 1, "one container: the worker"
    found: dict[str, Any] = containers[0]
    return found


def generated_secrets() -> dict[str, list[str]]:
    """The Secrets the kustomization generates: name to its keys."""
    out = {}
    for generator in kustomization().get("secretGenerator") or []:
        keys = [entry.partition("=")[0] for entry in generator.get("files", [])]
        keys += [entry.partition("=")[0] for entry in generator.get("literals", [])]
        out[generator["name"]] = keys
    return out


def generated_secret_objects() -> list[dict[str, Any]]:
    """Those Secrets as kustomize writes them (values are not in the repository)."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {"name": name},
            "data": dict.fromkeys(keys, "Y2hhbmdlLW1l"),
        }
        for name, keys in generated_secrets().items()
    ]


# -- the environment of one pod, as the kubelet builds it --------------------

_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(value: str, defined: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: only variables defined before; ``$$`` escapes."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return defined.get(match.group(1), match.group(0))

    return _REFERENCE.sub(one, value)


def pod_environment(pod_name: str = POD_NAME, namespace: str = NAMESPACE) -> dict[str, str]:
    fields = {"metadata.name": pod_name, "metadata.namespace": namespace}
    env: dict[str, str] = {}
    for source in container().get("envFrom") or []:
        data = obj("ConfigMap", source["configMapRef"]["name"])["data"]
        env.update({str(k): str(v) for k, v in data.items()})
    for item in container().get("env") or []:
        if "value" in item:
            env[item["name"]] = expand(str(item["value"]), env)
        else:
            field = item["valueFrom"]["fieldRef"]["fieldPath"]
            assert field in fields, f"{item['name']}: the test knows no {field}"
            env[item["name"]] = fields[field]
    return env


def pod_settings(**pod: str) -> Settings:
    ours = {k: v for k, v in pod_environment(**pod).items() if k.startswith("SCHEDULER_")}
    return Settings.model_validate(
        {k.removeprefix("SCHEDULER_").lower(): v for k, v in ours.items()}
    )


def named_port(name_or_number: str | int) -> int:
    if isinstance(name_or_number, int):
        return name_or_number
    ports = {p["name"]: p["containerPort"] for p in container()["ports"] if "name" in p}
    assert name_or_number in ports, f"no container port named {name_or_number!r}"
    return int(ports[name_or_number])


def selects_the_workers(selector: dict[str, str]) -> bool:
    labels = statefulset()["spec"]["template"]["metadata"]["labels"]
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# -- schemas ------------------------------------------------------------------


@pytest.mark.parametrize("version", [OLDEST, kubernetes_validate.utils.latest_version()])
def test_every_object_matches_the_kubernetes_schema(version: str) -> None:
    checked = [*objects(), *generated_secret_objects()]
    kinds = {o["kind"] for o in checked}
    assert {"StatefulSet", "Service", "ConfigMap", "Secret", "PodDisruptionBudget"} <= kinds
    for document in checked:
        where = f"{document['kind']}/{document['metadata']['name']}"
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = "/".join(map(str, error.absolute_path))
            pytest.fail(f"{where} at {path}: {error.message} (Kubernetes {version})")


def test_the_schema_check_catches_mistakes() -> None:
    """The check above could fail: a misspelt field and a wrong type are both refused."""
    version = kubernetes_validate.utils.latest_version()
    misspelt = statefulset()
    misspelt["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 10
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, version, strict=True)
    wrong = statefulset()
    wrong["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, version, strict=True)


# -- the kustomization ----------------------------------------------------------


def test_the_kustomization_applies_every_manifest() -> None:
    listed = kustomization()["resources"]
    assert sorted(listed) == [p.name for p in manifest_files()], listed
    assert "namespace" not in kustomization(), "the namespace is the operator's `-n`"


def test_the_secret_values_come_from_files_git_ignores() -> None:
    ignore = (K8S / "secrets" / ".gitignore").read_text(encoding="utf-8").split()
    # Everything but the .gitignore itself, and nothing after that lets a file back in.
    assert ignore[-2:] == ["*", "!.gitignore"], ignore
    for generator in kustomization()["secretGenerator"]:
        assert not generator.get("literals"), "a literal would put a secret value in git"
        for entry in generator["files"]:
            _, _, path = entry.rpartition("=")
            assert Path(path).parent == Path("secrets"), f"{path}: outside secrets/"


# -- one pod's settings ---------------------------------------------------------


def test_a_pods_environment_is_valid_settings() -> None:
    env = pod_environment()
    ours = [name for name in env if name.startswith("SCHEDULER_")]
    unknown = [n for n in ours if n.removeprefix("SCHEDULER_").lower() not in Settings.model_fields]
    assert not unknown, f"not Settings fields: {unknown}"
    configmap = obj("ConfigMap", container()["envFrom"][0]["configMapRef"]["name"])
    assert all(name.startswith("SCHEDULER_") for name in configmap["data"])
    pod_settings()


def test_each_pod_advertises_its_name_under_the_headless_service() -> None:
    service_name = statefulset()["spec"]["serviceName"]
    headless = obj("Service", service_name)["spec"]
    assert headless["clusterIP"] == "None"
    # A worker recovering its tables is in the group already: peers must resolve it.
    assert headless["publishNotReadyAddresses"] is True
    assert selects_the_workers(headless["selector"])
    for pod, namespace in [(POD_NAME, NAMESPACE), ("scheduler-worker-2", "prod")]:
        settings = pod_settings(pod_name=pod, namespace=namespace)
        host = f"{pod}.{service_name}.{namespace}.svc.cluster.local"
        assert settings.web_url == f"http://{host}:{settings.web_port}"
    web_port = pod_settings().web_port
    assert {named_port(p.get("targetPort", p["port"])) for p in headless["ports"]} == {web_port}


def test_the_member_id_is_the_pod_name() -> None:
    assert pod_settings().group_instance_id == POD_NAME
    assert pod_settings(pod_name="scheduler-worker-7").group_instance_id == "scheduler-worker-7"


def test_no_service_links() -> None:
    """A Service link for scheduler-web would set SCHEDULER_WEB_PORT to ``tcp://ip:port``."""
    links = set()
    for service in (o for o in objects() if o["kind"] == "Service"):
        if service["spec"].get("clusterIP") == "None":
            continue
        prefix = service["metadata"]["name"].upper().replace("-", "_")
        links |= {f"{prefix}_SERVICE_HOST", f"{prefix}_SERVICE_PORT", f"{prefix}_PORT"}
    clashes = {n for n in links if n.removeprefix("SCHEDULER_").lower() in Settings.model_fields}
    assert clashes, "no clash left: this test and the setting can go"
    assert pod_spec()["enableServiceLinks"] is False, f"service links would set {clashes}"


def test_the_worker_runs_the_images_entrypoint_with_the_worker_subcommand() -> None:
    assert "command" not in container(), "the image's ENTRYPOINT is the scheduler command"
    entrypoint = final().all("ENTRYPOINT")[-1].exec_form()
    assert entrypoint == ["scheduler"]
    args = container()["args"]
    assert args[0] in cli_subcommands() and args[0] == "worker"


# -- probes and shutdown --------------------------------------------------------


def _probe(name: str) -> tuple[str, dict[str, list[str]], int]:
    probe = container()[name]["httpGet"]
    url = urlsplit(probe["path"])
    query: dict[str, list[str]] = {}
    for pair in filter(None, url.query.split("&")):
        key, _, value = pair.partition("=")
        query.setdefault(key, []).append(value)
    return url.path, query, named_port(probe["port"])


def test_probes_ask_the_health_endpoint() -> None:
    web_port = pod_settings().web_port
    for name in ("startupProbe", "livenessProbe", "readinessProbe"):
        path, _, port = _probe(name)
        assert path == "/health" and port == web_port, (name, path, port)
        # Probes carry no token: the path must be open with SCHEDULER_WEB_TOKENS set.
        assert ("GET", path) in webauth.OPEN
    # Only readiness asks for the status code that follows `ready` (503 until then).
    assert _probe("readinessProbe")[1] == {"ready": ["1"]}
    assert _probe("livenessProbe")[1] == {} and _probe("startupProbe")[1] == {}


def test_a_rebalance_does_not_make_a_worker_unready_at_once() -> None:
    """Readiness tolerates a short rebalance; liveness waits out a long recovery."""
    readiness = container()["readinessProbe"]
    assert readiness["periodSeconds"] * readiness["failureThreshold"] >= 10
    startup = container()["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


def test_graceful_shutdown_fits_within_the_session_timeout() -> None:
    grace = pod_spec()["terminationGracePeriodSeconds"]
    assert 5 <= grace <= pod_settings().session_timeout, grace


def test_rolling_updates_wait_for_each_pod() -> None:
    spec = statefulset()["spec"]
    assert spec["updateStrategy"]["type"] == "RollingUpdate"
    assert spec["replicas"] >= 2
    assert spec["serviceName"] and selects_the_workers(spec["selector"]["matchLabels"])


def test_the_disruption_budget_keeps_all_but_one_worker() -> None:
    pdb = only("PodDisruptionBudget")["spec"]
    assert selects_the_workers(pdb["selector"]["matchLabels"])
    assert pdb["maxUnavailable"] == 1 < statefulset()["spec"]["replicas"]


def test_the_web_service_reaches_the_web_port() -> None:
    web = obj("Service", "scheduler-web")["spec"]
    assert web.get("clusterIP") != "None"
    assert selects_the_workers(web["selector"])
    targets = {named_port(p.get("targetPort", p["port"])) for p in web["ports"]}
    assert targets == {pod_settings().web_port}


# -- storage, files, security -----------------------------------------------------


def _mounts() -> dict[str, str]:
    """Mount path to volume name."""
    return {m["mountPath"]: m["name"] for m in container()["volumeMounts"]}


def _volumes() -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod_spec()["volumes"]}


def test_the_data_dir_is_a_claim_of_each_pod() -> None:
    data_dir = str(pod_settings().data_dir)
    assert data_dir == final().env()["SCHEDULER_DATA_DIR"], "the image's VOLUME"
    name = _mounts()[data_dir]
    claims = {
        t["metadata"]["name"]: t["spec"] for t in statefulset()["spec"]["volumeClaimTemplates"]
    }
    assert name in claims and name not in _volumes(), f"{data_dir} is not a per-pod claim"
    assert claims[name]["accessModes"] == ["ReadWriteOnce"]


def test_the_file_settings_point_into_mounted_secrets() -> None:
    settings = pod_settings()
    secrets = generated_secrets()
    files = {
        "web_tokens_file": settings.web_tokens_file,
        "kafka_sasl_password_file": settings.kafka_sasl_password_file,
    }
    for field, path in files.items():
        assert path is not None, f"{field} is not set"
        volume = _volumes()[_mounts()[str(path.parent)]]
        secret = volume["secret"]["secretName"]
        assert secret in secrets, f"{field}: Secret {secret} is not generated"
        assert path.name in secrets[secret], f"{field}: {secret} has no key {path.name}"
        assert not volume["secret"].get("optional"), f"{field}: a missing secret must stop the pod"
    assert settings.secrets_dir is not None
    delivery = _volumes()[_mounts()[str(settings.secrets_dir)]]
    assert "secret" in delivery


def test_pods_run_unprivileged_on_a_read_only_root() -> None:
    pod = pod_spec()["securityContext"]
    user = final().all("USER")[-1].rest.split(":")
    assert pod["runAsNonRoot"] is True
    assert str(pod["runAsUser"]) == user[0] and str(pod["runAsGroup"]) == user[1]
    assert pod["fsGroup"] == pod["runAsGroup"], "the claim must be writable by the worker"
    assert pod["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod_spec()["automountServiceAccountToken"] is False
    own = container()["securityContext"]
    assert own["readOnlyRootFilesystem"] is True
    assert own["allowPrivilegeEscalation"] is False
    assert own["capabilities"]["drop"] == ["ALL"]
    writable = {m["mountPath"] for m in container()["volumeMounts"] if not m.get("readOnly")}
    assert writable == {str(pod_settings().data_dir), "/tmp"}, writable


def test_resources_request_memory_and_cpu_and_limit_only_memory() -> None:
    resources = container()["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    # A CPU limit throttles the event loop: firings come late, not fewer.
    assert set(resources["limits"]) == {"memory"}
