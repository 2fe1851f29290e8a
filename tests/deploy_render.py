"""What the deployment tests need to read the files no engine runs here: the final stage of a
Dockerfile (ENV, CMD, HEALTHCHECK), and a kustomization rendered with the few features this
project's layouts use (resources, labels, nameSuffix, images, JSON 6902 patches)."""

from __future__ import annotations

import copy
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class Stage:
    env: dict[str, str] = field(default_factory=dict)
    cmd: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)
    user: str = ""


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in joined]


def final_stage(dockerfile: Path) -> Stage:
    stage = Stage()
    for name, args in instructions(dockerfile.read_text()):
        if name == "FROM":
            stage = Stage()
        elif name == "ENV":
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                stage.env[key] = value
        elif name == "CMD":
            stage.cmd = json.loads(args)
        elif name == "HEALTHCHECK":
            stage.healthcheck = json.loads(args[args.index("CMD") + 3 :])
        elif name == "USER":
            stage.user = args
    return stage


# --- kustomize, the subset used here -------------------------------------------------------
def _pointer(path: str) -> list[str]:
    return [part.replace("~1", "/").replace("~0", "~") for part in path.lstrip("/").split("/")]


def json_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> None:
    for op in ops:
        *parents, last = _pointer(op["path"])
        target: Any = doc
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if op["op"] not in ("add", "replace"):
            raise ValueError(f"unsupported patch op {op['op']}")
        if isinstance(target, list):
            value = copy.deepcopy(op["value"])
            if last == "-":
                target.append(value)
            elif op["op"] == "add":
                target.insert(int(last), value)
            else:
                target[int(last)] = value
        else:
            if op["op"] == "replace" and last not in target:
                raise KeyError(f"replace of a missing key {op['path']}")
            target[last] = copy.deepcopy(op["value"])


def _label(doc: dict[str, Any], pairs: dict[str, str], selectors: bool) -> None:
    doc["metadata"].setdefault("labels", {}).update(pairs)
    if not selectors:
        return
    spec = doc.get("spec", {})
    if doc["kind"] == "Service":
        spec.setdefault("selector", {}).update(pairs)
    elif "selector" in spec:
        spec["selector"].setdefault("matchLabels", {}).update(pairs)
    if "template" in spec:
        spec["template"]["metadata"].setdefault("labels", {}).update(pairs)
    for constraint in spec.get("template", {}).get("spec", {}).get("topologySpreadConstraints", []):
        constraint["labelSelector"]["matchLabels"].update(pairs)


def render(directory: Path) -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        docs += render(path) if path.is_dir() else list(yaml.safe_load_all(path.read_text()))
    for patch in kustomization.get("patches", []):
        ops = yaml.safe_load((directory / patch["path"]).read_text())
        matched = [
            d
            for d in docs
            if d["kind"] == patch["target"]["kind"]
            and d["metadata"]["name"].startswith(patch["target"]["name"])
        ]
        assert matched, f"patch {patch['path']} matches nothing"
        for doc in matched:
            json_patch(doc, ops)
    for entry in kustomization.get("labels", []):
        for doc in docs:
            _label(doc, entry["pairs"], entry.get("includeSelectors", False))
    suffix = kustomization.get("nameSuffix", "")
    for doc in docs:
        _rename(doc, suffix)
        _set_images(doc, kustomization.get("images", []))
    return docs


def _rename(doc: dict[str, Any], suffix: str) -> None:
    if not suffix:
        return
    doc["metadata"]["name"] += suffix
    target = doc.get("spec", {}).get("scaleTargetRef")
    if target is not None:
        target["name"] += suffix


def _set_images(doc: dict[str, Any], images: list[dict[str, str]]) -> None:
    containers = doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    for container in containers:
        name = container["image"].split(":")[0]
        for image in images:
            if image["name"] == name:
                container["image"] = f"{image.get('newName', name)}:{image['newTag']}"
