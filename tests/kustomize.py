"""A small kustomize in Python: the features deploy/kubernetes/ uses, and no more.

So that the overlay is rendered and checked where no ``kustomize`` (or ``kubectl
kustomize``) binary is available; where one is, tests/test_deploy.py checks that both
render the same objects. Supported: ``resources`` (files and folders), ``namePrefix`` /
``nameSuffix`` (with the references of pod specs to the renamed ConfigMaps, Secrets and
claims), ``labels`` (``pairs`` on ``metadata.labels``), ``namespace``, ``images``
(``newName``/``newTag``), ``configMapGenerator`` / ``secretGenerator`` from ``files`` with
``generatorOptions.disableNameSuffixHash: true``, and ``patches`` as inline JSON 6902 with a
``target`` of kind and name. Anything else is an error, never silently ignored.
"""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import yaml

KNOWN = {
    "apiVersion",
    "kind",
    "resources",
    "namePrefix",
    "nameSuffix",
    "labels",
    "namespace",
    "images",
    "configMapGenerator",
    "secretGenerator",
    "generatorOptions",
    "patches",
}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume"}


def render(folder: Path) -> list[dict[str, Any]]:
    """The objects ``kustomize build folder`` makes."""
    k = yaml.safe_load((folder / "kustomization.yaml").read_text(encoding="utf-8"))
    unknown = set(k) - KNOWN
    if unknown:
        raise NotImplementedError(f"{folder}: kustomization fields not supported: {unknown}")
    objects: list[dict[str, Any]] = []
    for res in k.get("resources", []):
        path = (folder / res).resolve()
        if path.is_dir():
            objects += render(path)
        else:
            objects += [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    generators = k.get("configMapGenerator") or k.get("secretGenerator")
    if generators and not (k.get("generatorOptions") or {}).get("disableNameSuffixHash"):
        raise NotImplementedError("generators need disableNameSuffixHash: true here")
    for gen in k.get("configMapGenerator", []):
        objects.append(_generated(folder, gen, "ConfigMap"))
    for gen in k.get("secretGenerator", []):
        objects.append(_generated(folder, gen, "Secret"))
    for patch in k.get("patches", []):
        _patch(objects, patch)
    prefix, suffix = k.get("namePrefix", ""), k.get("nameSuffix", "")
    if prefix or suffix:
        renamed: dict[tuple[str, str], str] = {}
        for obj in objects:
            if obj["kind"] == "Namespace":
                continue
            old = obj["metadata"]["name"]
            obj["metadata"]["name"] = new = f"{prefix}{old}{suffix}"
            renamed[(obj["kind"], old)] = new
        for obj in objects:
            _rename_references(obj, renamed)
    for group in k.get("labels", []):
        if set(group) - {"pairs"}:
            raise NotImplementedError(f"labels options not supported: {set(group) - {'pairs'}}")
        for obj in objects:
            obj["metadata"].setdefault("labels", {}).update(group["pairs"])
    if "namespace" in k:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = k["namespace"]
    for image in k.get("images", []):
        for container in _containers(objects):
            name, _, _tag = container["image"].partition(":")
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image['newTag']}"
    return objects


def _generated(folder: Path, gen: dict[str, Any], kind: str) -> dict[str, Any]:
    if set(gen) - {"name", "files"}:
        raise NotImplementedError(f"generator options not supported: {set(gen)}")
    data: dict[str, str] = {}
    for entry in gen["files"]:
        key, _, file = entry.rpartition("=") if "=" in entry else (Path(entry).name, "", entry)
        raw = (folder / file).read_bytes()
        data[key] = base64.b64encode(raw).decode() if kind == "Secret" else raw.decode("utf-8")
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": kind, "metadata": {"name": gen["name"]}}
    obj["data"] = data
    if kind == "Secret":
        obj["type"] = "Opaque"
    return obj


def _patch(objects: list[dict[str, Any]], patch: dict[str, Any]) -> None:
    target = patch["target"]
    if set(target) - {"kind", "name"} or set(patch) - {"target", "patch"}:
        raise NotImplementedError(f"patch form not supported: {patch}")
    ops = yaml.safe_load(patch["patch"])
    hits = [
        o
        for o in objects
        if o["kind"] == target["kind"]
        and target.get("name", o["metadata"]["name"]) == o["metadata"]["name"]
    ]
    if not hits:
        raise ValueError(f"patch target matches nothing: {target}")
    for obj in hits:
        for op in ops:
            if op["op"] not in ("replace", "add"):
                raise NotImplementedError(f"JSON patch op not supported: {op['op']}")
            *parents, last = [
                p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]
            ]
            node: Any = obj
            for part in parents:
                node = node[int(part)] if isinstance(node, list) else node[part]
            if op["op"] == "replace" and last not in node:
                raise ValueError(f"replace of a missing path: {op['path']}")
            node[last] = copy.deepcopy(op["value"])


def _pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj.get("spec", {})
    if obj["kind"] == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    if obj["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
        return [spec["template"]["spec"]]
    return []


def _containers(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        c
        for obj in objects
        for pod in _pod_specs(obj)
        for c in pod.get("containers", []) + pod.get("initContainers", [])
    ]


def _rename_references(obj: dict[str, Any], renamed: dict[tuple[str, str], str]) -> None:
    for pod in _pod_specs(obj):
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                ref = volume["configMap"]
                ref["name"] = renamed.get(("ConfigMap", ref["name"]), ref["name"])
            if "secret" in volume:
                ref = volume["secret"]
                ref["secretName"] = renamed.get(("Secret", ref["secretName"]), ref["secretName"])
            if "persistentVolumeClaim" in volume:
                ref = volume["persistentVolumeClaim"]
                ref["claimName"] = renamed.get(
                    ("PersistentVolumeClaim", ref["claimName"]), ref["claimName"]
                )
        for c in pod.get("containers", []):
            for env in c.get("env", []):
                source = env.get("valueFrom", {})
                for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    if key in source:
                        source[key]["name"] = renamed.get(
                            (kind, source[key]["name"]), source[key]["name"]
                        )
