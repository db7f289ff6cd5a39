"""Test helpers: deployments in tmp_path and the stand-in oc on PATH (tests/fake_oc/oc)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FAKE_DIR = Path(__file__).resolve().parent
REPO = FAKE_DIR.parent.parent


class Cluster:
    """A fake cluster: env for the stand-in oc, its call log, and ways to run verbs and scripts."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
        self.root = tmp_path
        self.log = tmp_path / "oc-log"
        self.log.mkdir()
        self.deployments = tmp_path / "deployments"
        self.elsewhere = tmp_path / "elsewhere"
        self.elsewhere.mkdir()
        path = os.pathsep.join([str(FAKE_DIR), str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        self.env = {"PATH": path, "FAKE_OC_DIR": str(self.log), "MLSHIFT_POLL_SECONDS": "0",
                    "MLSHIFT_PYTHON": sys.executable}
        for k in [k for k in os.environ if k.startswith("FAKE_OC_")]:
            monkeypatch.delenv(k)
        for k, v in self.env.items():
            monkeypatch.setenv(k, v)
        self.monkeypatch = monkeypatch

    # ------------------------------------------------------------------ deployments
    def new(self, name: str, *sets: str) -> Path:
        from wizard.cli import main

        rc = main(["new", name, "--defaults", "--deployments-dir", str(self.deployments), *[a for s in sets for a in ("--set", s)]])
        assert rc == 0
        return self.deployments / name

    def server(self, name: str = "llm", *sets: str) -> Path:
        return self.new(name, "application.type=model_server", "inference.enabled=true", "inference.engine=transformers",
                        "inference.model=tiny-model", "deployment.namespace=team-a", *sets)

    def job(self, name: str = "train", *sets: str) -> Path:
        d = self.new(name, "application.execution.mode=job", "application.execution.arguments=--lr 0.1",
                     "deployment.namespace=team-a", *sets)
        (d / "workspace" / "main.py").write_text("print('hi')\n")
        return d

    def seed(self, deployment: Path, *more: str) -> None:
        """Make the deployment look deployed (its shared objects and image exist, and the API key
        Secret deploy makes, with the key sk-test) without deploy."""
        from wizard.blueprint import Blueprint
        from wizard.deployment import load_deployment

        files = [a for t in ("configmap", "persistentvolumeclaim", "imagestream", "buildconfig", *more)
                 if (deployment / "manifests" / f"{t}.yaml").exists()
                 for a in ("-f", str(deployment / "manifests" / f"{t}.yaml"))]
        subprocess.run([str(FAKE_DIR / "oc"), "apply", *files], env={**os.environ, **self.env}, check=True,
                       capture_output=True)
        folder, config = load_deployment(deployment)
        keys = Blueprint(config, folder.name).api_keys_secret
        if keys:
            secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": keys}, "stringData": {"api-key": "sk-test"}}
            subprocess.run([str(FAKE_DIR / "oc"), "create", "-f", "-"], input=json.dumps(secret), text=True,
                           env={**os.environ, **self.env}, check=True, capture_output=True)
        self.set(FAKE_OC_IMAGE="1")
        self.reset()

    def set(self, **env: str) -> None:
        for k, v in env.items():
            self.monkeypatch.setenv(k, v)
            self.env[k] = v

    # ------------------------------------------------------------------ running
    def verb(self, capsys, verb: str, deployment: Path, *args: str) -> tuple[int, str, str]:
        """Run one verb in this process (fast); returns (exit code, stdout, stderr)."""
        from wizard.cli import main

        capsys.readouterr()
        rc = main([verb, str(deployment), *args])
        out, err = capsys.readouterr()
        return rc, out, err

    def script(self, deployment: Path, file: str, *args: str, cwd: Path | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a generated script as a user would, from another directory."""
        return subprocess.run([str(deployment / "scripts" / file), *args], cwd=cwd or self.elsewhere,
                              env={**os.environ, **self.env}, capture_output=True, text=True, timeout=timeout)

    # ------------------------------------------------------------------ what oc saw
    def calls(self) -> list[dict]:
        f = self.log / "calls.jsonl"
        if not f.exists():
            return []
        return [json.loads(line) for line in f.read_text().splitlines() if line.strip()]

    def argvs(self) -> list[list[str]]:
        return [c["argv"] for c in self.calls()]

    def verbs(self) -> list[str]:
        return [c["argv"][0] for c in self.calls()]

    def reset(self) -> None:
        (self.log / "calls.jsonl").unlink(missing_ok=True)

    def created(self) -> list[dict]:
        """Every object given to `oc create -f -`, in order."""
        out = []
        for c in self.calls():
            if c["argv"][0] == "create" and c["stdin"]:
                import yaml

                data = yaml.safe_load(c["stdin"])
                out += data["items"] if data.get("kind") == "List" else [data]
        return out


def unescape(word: str) -> str:
    """What Kubernetes makes of a command word: $$ becomes $ (and $(VAR) would expand)."""
    return word.replace("$$", "$")
