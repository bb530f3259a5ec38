"""A small kustomize renderer: exactly the features `deploy/kubernetes/` uses, so `make test` needs no kubectl.

Supported, as `kubectl kustomize` (kustomize v5) does them:
- `resources`: YAML files (several documents each) and directories holding a kustomization, rendered first;
- `patches` given by `path` or inline `patch`, strategic-merge only, the target named by the patch's own
  kind and name: maps merge (`null` deletes a key, `$patch: replace` replaces the map), the lists in
  `MERGE_KEYS` merge item by item on their key (`$patch: delete` removes one), every other list is replaced;
- `images`: `newName`, `newTag`, `digest` for every container and init container whose image name matches;
- `namespace`: set on every namespaced object, and the name of every Namespace object.

Any other kustomization field, or a patch with a `target`, raises `Unsupported`, so the renderer never
quietly gives something kustomize would not. `test_renderer_agrees_with_kubectl` compares the two
wherever kubectl is installed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

__all__ = ["MERGE_KEYS", "Unsupported", "render", "strategic_merge"]

Manifest = dict[str, Any]

# list fields that merge by a key in a strategic-merge patch (the Kubernetes API's patchMergeKey)
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
}
CLUSTER_SCOPED = frozenset({"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass"})
FIELDS = frozenset({"apiVersion", "kind", "namespace", "resources", "images", "patches"})
DIRECTIVE = "$patch"


class Unsupported(ValueError):
    """A kustomization asks for something this renderer does not do."""


def render(directory: Path) -> list[Manifest]:
    """The objects `kubectl kustomize directory` prints, in the order their files list them."""
    kustomization: dict[str, Any] = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - FIELDS
    if unknown:
        raise Unsupported(f"{directory}: kustomization fields {sorted(unknown)}")
    objects: list[Manifest] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        if path.is_dir():
            objects.extend(render(path))
        else:
            objects.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    for patch in kustomization.get("patches", []):
        if set(patch) - {"path", "patch"}:
            raise Unsupported(f"{directory}: patch fields {sorted(set(patch) - {'path', 'patch'})}")
        text = (directory / patch["path"]).read_text() if "path" in patch else patch["patch"]
        for doc in yaml.safe_load_all(text):
            _apply_patch(objects, doc)
    for image in kustomization.get("images", []):
        for obj in objects:
            _set_image(obj, image)
    if namespace := kustomization.get("namespace"):
        for obj in objects:
            if obj["kind"] == "Namespace":
                obj["metadata"]["name"] = namespace
            elif obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = namespace
    return objects


def _apply_patch(objects: list[Manifest], patch: Manifest) -> None:
    key = (patch["kind"], patch["metadata"]["name"])
    for i, obj in enumerate(objects):
        if (obj["kind"], obj["metadata"]["name"]) == key:
            objects[i] = strategic_merge(obj, patch)
            return
    raise Unsupported(f"patch target {key} is not among the resources")


def strategic_merge(original: Any, patch: Any, field: str = "") -> Any:
    """`patch` merged into `original` (neither is changed), for the subset of strategic merge above."""
    if isinstance(patch, dict) and isinstance(original, dict):
        if patch.get(DIRECTIVE) == "replace":
            return {k: copy.deepcopy(v) for k, v in patch.items() if k != DIRECTIVE}
        merged = copy.deepcopy(original)
        for name, value in patch.items():
            if value is None:
                merged.pop(name, None)
            elif name in merged:
                merged[name] = strategic_merge(merged[name], value, name)
            else:
                merged[name] = _without_directives(value)
        return merged
    if isinstance(patch, list) and isinstance(original, list) and field in MERGE_KEYS:
        key = MERGE_KEYS[field]
        merged_list = copy.deepcopy(original)
        for item in patch:
            index = next((i for i, old in enumerate(merged_list) if old.get(key) == item.get(key)), None)
            if item.get(DIRECTIVE) == "delete":
                if index is not None:
                    del merged_list[index]
            elif index is None:
                merged_list.append(_without_directives(item))
            else:
                merged_list[index] = strategic_merge(merged_list[index], item, field)
        return merged_list
    return _without_directives(patch)


def _without_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_directives(v) for k, v in value.items() if k != DIRECTIVE}
    if isinstance(value, list):
        return [_without_directives(item) for item in value]
    return value


def _set_image(obj: Manifest, image: dict[str, str]) -> None:
    spec = obj.get("spec", {})
    pod = spec if obj["kind"] == "Pod" else spec.get("template", {}).get("spec", {})
    for container in (*pod.get("containers", ()), *pod.get("initContainers", ())):
        name, tag, digest = _split_image(container["image"])
        if name != image["name"]:
            continue
        name = image.get("newName", name)
        if "digest" in image:
            container["image"] = f"{name}@{image['digest']}"
        elif "newTag" in image:
            container["image"] = f"{name}:{image['newTag']}"
        else:
            container["image"] = name + (f"@{digest}" if digest else f":{tag}" if tag else "")


def _split_image(image: str) -> tuple[str, str | None, str | None]:
    """`registry:5000/name:tag@digest` -> (name with registry, tag, digest); a registry's port is no tag."""
    image, _, digest = image.partition("@")
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon + 1 :], digest or None
    return image, None, digest or None
