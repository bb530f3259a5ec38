"""`deploy/kubernetes/` renders, validates against the Kubernetes schemas and agrees with the code.

No cluster and no kubectl are needed: `tests/deploy/kustomize.py` renders the kustomizations, and
kubernetes-validate checks every object offline against the API's JSON schemas shipped in its wheel.
Where kubectl is installed, one test also compares the renderer with `kubectl kustomize`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic_settings import BaseSettings

from tests.deploy.kustomize import Unsupported, render, strategic_merge
from tests.deploy.test_deploy_files import DOCKERFILES, PORTS, SETTINGS, Dockerfile, env_names
from tests.support import REPO

KUBE = REPO / "deploy" / "kubernetes"
KUSTOMIZATIONS = {"base": KUBE / "base", "example": KUBE / "overlays" / "example"}
# the oldest Kubernetes minor still commonly run, and a recent one
VERSIONS = ("1.29.0", "1.33.0")
NAMESPACE = "rbee"
SECRET = "rbee-secrets"
WORKLOADS = {"queen": ("Deployment", "rbee-queen"), "hive": ("DaemonSet", "rbee-hive")}
# what the downward API and the Secret give a pod in the settings test
NODE_NAME, POD_IP = "gpu-node-7", "10.42.3.17"
# settings a cluster pod cannot leave at their defaults (127.0.0.1 reaches nothing; one id per node; ...)
MUST_SET = {
    "hive": {"HIVE_ID", "HIVE_HOST", "HIVE_PUBLIC_URL", "HIVE_MODELS_DIR", "HIVE_QUEEN_URL", "RBEE_API_TOKEN"},
    "queen": {"QUEEN_HOST", "RBEE_API_TOKEN"},
}
HELPER_ENV = {"POD_IP", "NODE_NAME"}  # set only to build other values from ($(POD_IP))

Manifest = dict[str, Any]


def rendered(name: str) -> dict[tuple[str, str], Manifest]:
    return {(obj["kind"], obj["metadata"]["name"]): obj for obj in render(KUSTOMIZATIONS[name])}


def pod_spec(objects: dict[tuple[str, str], Manifest], kind: str) -> Manifest:
    spec: Manifest = objects[WORKLOADS[kind]]["spec"]["template"]["spec"]
    return spec


def main_container(objects: dict[tuple[str, str], Manifest], kind: str) -> Manifest:
    containers: list[Manifest] = pod_spec(objects, kind)["containers"]
    (container,) = containers
    return container


def container_port(container: Manifest, name_or_number: str | int) -> int:
    if isinstance(name_or_number, int):
        return name_or_number
    (port,) = [p["containerPort"] for p in container["ports"] if p.get("name") == name_or_number]
    return int(port)


def resolve_env(container: Manifest) -> dict[str, str]:
    """The container's environment as the kubelet makes it: downward API and Secret values filled in
    (a Secret's value is `secret-<key>`), `$(VAR)` expanded from the variables defined before it."""
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), var["value"])
            continue
        source = var["valueFrom"]
        if "fieldRef" in source:
            env[var["name"]] = {"spec.nodeName": NODE_NAME, "status.podIP": POD_IP}[source["fieldRef"]["fieldPath"]]
        else:
            env[var["name"]] = f"secret-{source['secretKeyRef']['key']}"
    return env


def load_settings(kind: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The service's settings class built from exactly `env` (the image's ENV, then the container's)."""
    settings: type[BaseSettings] = SETTINGS[kind]
    for name in env_names(settings):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return settings()


@pytest.fixture(params=sorted(KUSTOMIZATIONS))
def objects(request: pytest.FixtureRequest) -> dict[tuple[str, str], Manifest]:
    return rendered(str(request.param))


@pytest.fixture(params=["hive", "queen"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_base_and_overlay_render_the_queen_and_the_hive_in_one_namespace() -> None:
    base = rendered("base")
    assert set(base) == {
        ("Namespace", NAMESPACE),
        ("Deployment", "rbee-queen"),
        ("Service", "rbee-queen"),
        ("DaemonSet", "rbee-hive"),
    }
    assert set(rendered("example")) == {*base, ("PersistentVolumeClaim", "rbee-models")}
    for objs in (base, rendered("example")):
        for (obj_kind, _), obj in objs.items():
            assert obj_kind == "Namespace" or obj["metadata"]["namespace"] == NAMESPACE


@pytest.mark.parametrize("version", VERSIONS)
def test_manifests_validate_against_the_kubernetes_schemas(
    objects: dict[tuple[str, str], Manifest], version: str
) -> None:
    for obj in objects.values():
        kubernetes_validate.validate(obj, version, strict=True)  # raises on any error


def test_the_validator_is_not_vacuous() -> None:
    daemonset = rendered("base")[WORKLOADS["hive"]]
    container = daemonset["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")  # a misspelt field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, VERSIONS[-1], strict=True)


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_renderer_agrees_with_kubectl(name: str) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: renderer not compared")
    # kubectl prints its kustomize's version from 1.21 on (kustomize v4); older ones (Debian bookworm's
    # kubernetes-client is 1.20, kustomize v2) do not know `patches:`
    version = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True, timeout=60).stdout
    if not re.search(r"Kustomize Version: v([4-9]|\d\d)\.", version):
        pytest.skip(f"kubectl's kustomize is older than v4: renderer not compared ({version.strip()!r})")
    out = subprocess.run([kubectl, "kustomize", str(KUSTOMIZATIONS[name])], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    theirs = {(obj["kind"], obj["metadata"]["name"]): obj for obj in yaml.safe_load_all(out.stdout) if obj}
    assert rendered(name) == theirs


def test_every_setting_is_given_or_defaulted(
    objects: dict[tuple[str, str], Manifest], kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The settings class itself says what it reads: built from nothing but the image's ENV and the
    container's env, every field is either given there or has a default, and every name given is read."""
    cls = SETTINGS[kind]
    container_env = resolve_env(main_container(objects, kind))
    given = Dockerfile(DOCKERFILES[kind]).env() | container_env
    assert set(container_env) - HELPER_ENV <= env_names(cls), set(container_env) - HELPER_ENV - env_names(cls)
    assert set(given) >= MUST_SET[kind], MUST_SET[kind] - set(given)
    settings = load_settings(kind, given, monkeypatch)  # pydantic raises if a required field is not given
    unset = set(cls.model_fields) - settings.model_fields_set
    assert all(not cls.model_fields[field].is_required() for field in unset)
    assert len(settings.model_fields_set) == len(set(given) & env_names(cls))  # each name lands in a field


def test_settings_load_from_the_rendered_environment(
    objects: dict[tuple[str, str], Manifest], kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    container = main_container(objects, kind)
    env = Dockerfile(DOCKERFILES[kind]).env() | resolve_env(container)
    settings = load_settings(kind, env, monkeypatch)
    assert settings.host == "0.0.0.0"
    assert settings.port == PORTS[kind] == container_port(container, "http")
    assert settings.api_token == "secret-RBEE_API_TOKEN"
    if kind == "hive":
        service = objects[("Service", "rbee-queen")]
        (service_port,) = service["spec"]["ports"]
        assert settings.id == NODE_NAME
        assert settings.advertised_url == f"http://{POD_IP}:{PORTS['hive']}"
        assert settings.queen_url == f"http://{service['metadata']['name']}:{service_port['port']}"
        assert settings.hub_token({}) == "secret-HF_TOKEN"
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert str(settings.models_dir) == mounts["models"]


def test_queen_service_reaches_the_queen_port(objects: dict[tuple[str, str], Manifest]) -> None:
    service = objects[("Service", "rbee-queen")]
    queen = objects[WORKLOADS["queen"]]
    assert service["spec"]["selector"].items() <= queen["spec"]["template"]["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    assert port["port"] == PORTS["queen"]
    assert container_port(main_container(objects, "queen"), port["targetPort"]) == PORTS["queen"]


def test_probes_hit_healthz_and_scrape_annotations_name_the_port(
    objects: dict[tuple[str, str], Manifest], kind: str
) -> None:
    container = main_container(objects, kind)
    for probe in ("readinessProbe", "livenessProbe"):
        check = container[probe]["httpGet"]
        assert check["path"] == "/healthz"
        assert container_port(container, check["port"]) == PORTS[kind]
    annotations = objects[WORKLOADS[kind]]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == PORTS[kind]


def test_pods_run_as_the_image_user_with_a_read_only_root(objects: dict[tuple[str, str], Manifest], kind: str) -> None:
    (useradd,) = [arg for arg in Dockerfile(DOCKERFILES[kind]).args("RUN") if "useradd" in arg]
    match = re.search(r"--uid (\d+)", useradd)
    assert match
    uid = int(match[1])
    pod = pod_spec(objects, kind)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid
    assert pod["automountServiceAccountToken"] is False
    container = main_container(objects, kind)
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert "runAsUser" not in context and "runAsNonRoot" not in context  # the pod's non-root user holds
    tmp = {m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/tmp"}
    assert tmp and all("emptyDir" in v for v in pod["volumes"] if v["name"] in tmp)
    for each in (*pod["containers"], *pod.get("initContainers", [])):
        assert each["resources"]["requests"].keys() >= {"cpu", "memory"}
        assert "memory" in each["resources"]["limits"]


def test_only_the_init_container_is_root_and_only_to_chown_the_models_dir(
    objects: dict[tuple[str, str], Manifest],
) -> None:
    pod = pod_spec(objects, "hive")
    (init,) = pod["initContainers"]
    assert init["command"][0] == "chown"
    assert init["command"][1] == f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    (mount,) = init["volumeMounts"]
    hive_mount = next(m for m in main_container(objects, "hive")["volumeMounts"] if m["name"] == "models")
    assert mount["name"] == "models" and mount["mountPath"] == init["command"][2] == hive_mount["mountPath"]
    assert ("subPathExpr" in mount) == ("subPathExpr" in hive_mount)


def test_tokens_come_from_the_secret(objects: dict[tuple[str, str], Manifest], kind: str) -> None:
    refs = {
        var["name"]: var["valueFrom"]["secretKeyRef"]
        for var in main_container(objects, kind)["env"]
        if "secretKeyRef" in var.get("valueFrom", {})
    }
    assert set(refs) == ({"RBEE_API_TOKEN", "HF_TOKEN"} if kind == "hive" else {"RBEE_API_TOKEN"})
    for name, ref in refs.items():
        assert ref["name"] == SECRET and ref["key"] == name
    assert not refs["RBEE_API_TOKEN"].get("optional", False)  # no pod runs open by mistake
    if kind == "hive":
        assert refs["HF_TOKEN"]["optional"] is True  # public models need no hub token


def test_hive_runs_on_gpu_nodes_with_its_cache_on_the_node() -> None:
    pod = pod_spec(rendered("base"), "hive")
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert [t["key"] for t in pod["tolerations"]] == ["nvidia.com/gpu"]
    (models,) = [v for v in pod["volumes"] if v["name"] == "models"]
    assert models["hostPath"] == {"path": "/var/lib/rbee/models", "type": "DirectoryOrCreate"}


def test_example_overlay_moves_the_cache_to_a_claim_one_directory_per_node() -> None:
    objs = rendered("example")
    pod = pod_spec(objs, "hive")
    assert pod["nodeSelector"] == {"gpu": "true"}  # replaced, not merged with the base's
    assert [t["key"] for t in pod["tolerations"]] == ["gpu"]
    (models,) = [v for v in pod["volumes"] if v["name"] == "models"]
    assert set(models) == {"name", "persistentVolumeClaim"}
    assert ("PersistentVolumeClaim", models["persistentVolumeClaim"]["claimName"]) in objs
    hive = main_container(objs, "hive")
    (mount,) = [m for m in hive["volumeMounts"] if m["name"] == "models"]
    assert mount["subPathExpr"] == "$(HIVE_ID)"
    (init,) = pod["initContainers"]
    assert resolve_env(init)["NODE_NAME"] == resolve_env(hive)["HIVE_ID"]


def test_images_are_set_in_one_place() -> None:
    images = {c["image"] for objs in (rendered("base"),) for k in WORKLOADS for c in all_containers(objs, k)}
    assert images == {"rbee-queen:latest", "rbee-hive:latest"}
    example = rendered("example")
    assert {c["image"] for k in WORKLOADS for c in all_containers(example, k)} == {
        "registry.example.com/rbee-queen:0.1.0",
        "registry.example.com/rbee-hive:0.1.0",
    }


def all_containers(objects: dict[tuple[str, str], Manifest], kind: str) -> list[Manifest]:
    pod = pod_spec(objects, kind)
    return [*pod["containers"], *pod.get("initContainers", [])]


def test_strategic_merge_subset() -> None:
    original = {
        "selector": {"a": "1", "b": "2"},
        "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}],
        "tolerations": [{"key": "a"}],
        "volumes": [{"name": "m", "hostPath": {"path": "/p"}}],
    }
    patch = {
        "selector": {"$patch": "replace", "c": "3"},
        "env": [{"name": "Y", "value": "3"}, {"name": "X", "$patch": "delete"}, {"name": "Z", "value": "4"}],
        "tolerations": [{"key": "b"}],
        "volumes": [{"name": "m", "hostPath": None, "emptyDir": {}}],
    }
    assert strategic_merge(original, patch) == {
        "selector": {"c": "3"},
        "env": [{"name": "Y", "value": "3"}, {"name": "Z", "value": "4"}],
        "tolerations": [{"key": "b"}],
        "volumes": [{"name": "m", "emptyDir": {}}],
    }
    assert original["selector"] == {"a": "1", "b": "2"}  # the original is not changed


def test_renderer_refuses_what_it_does_not_do(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nconfigMapGenerator: []\n")
    with pytest.raises(Unsupported, match="configMapGenerator"):
        render(tmp_path)
    (tmp_path / "kustomization.yaml").write_text("patches:\n  - path: p.yaml\n    target: {kind: Deployment}\n")
    with pytest.raises(Unsupported, match="target"):
        render(tmp_path)


def readme_serving_pod() -> Manifest:
    """The one YAML block of the README's "Kubernetes" section: a serving pod on the hive's cache."""
    section = (REPO / "README.md").read_text().split("\n## Kubernetes\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```yaml\n(.*?)```", section, re.S)
    pod: Manifest = yaml.safe_load(block)
    return pod


def test_readme_serving_pod_mounts_the_hives_cache_read_only_and_offline() -> None:
    pod = readme_serving_pod()
    for version in VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)
    hive = pod_spec(rendered("base"), "hive")
    assert pod["spec"]["nodeSelector"] == hive["nodeSelector"]
    assert pod["spec"]["tolerations"] == hive["tolerations"]
    (container,) = pod["spec"]["containers"]
    (mount,) = container["volumeMounts"]
    assert mount["readOnly"] is True
    env = resolve_env(container)
    assert env["HF_HOME"] == mount["mountPath"] and env["HF_HUB_OFFLINE"] == "1"
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    (cache,) = [v for v in hive["volumes"] if v["name"] == "models"]
    assert volume["hostPath"]["path"] == cache["hostPath"]["path"]
