"""What every verb runs in: an :class:`Operation` (config.yaml re-read, its blueprint, and oc).

The files are re-rendered only by the verbs that act on them (deploy). Whether this is a dry
run travels with the operation's :class:`~wizard.ops.oc.Oc`; :meth:`Operation.say` reads it
from there.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..blueprint import LABEL_PREFIX, Blueprint
from ..config import Config
from ..errors import OcError, UserError
from . import diagnose
from .oc import Oc

SUBMISSION_LABEL = f"{LABEL_PREFIX}/submission"
SWEEP_LABEL = f"{LABEL_PREFIX}/sweep"
ARGS_ANNOTATION = f"{LABEL_PREFIX}/arguments"
SETS_ANNOTATION = f"{LABEL_PREFIX}/overrides"
CONFIG_ANNOTATION = f"{LABEL_PREFIX}/config"


def poll_seconds() -> float:
    """Seconds between status polls (MLSHIFT_POLL_SECONDS overrides, e.g. in tests)."""
    try:
        return max(0.0, float(os.environ.get("MLSHIFT_POLL_SECONDS", "5")))
    except ValueError:
        return 5.0


def selector_text(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in labels.items())


def warn(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class Operation:
    """One verb's run on one deployment: its folder, config.yaml as read now, the blueprint made
    from it, and the oc that reaches the cluster (which knows whether this is a dry run)."""

    directory: Path
    config: Config
    blueprint: Blueprint
    oc: Oc
    session_checked: bool = field(default=False)

    @classmethod
    def load(cls, directory: Path, *, dry_run: bool, render: bool = False) -> "Operation":
        """Re-read config.yaml; with ``render``, bring the deployment's files up to date first.

        Only a verb that acts on the rendered files on disk passes ``render`` (deploy applies
        manifests/ and builds from the Containerfile): it re-renders the deployment, writing
        unless a dry run, and names the files kept because the user edited them. Every other
        verb only reads: it works from config.yaml and what it renders in memory, and never
        writes to the deployment folder.
        """
        from ..deployment import load_deployment, rerender

        if render:
            outcome = rerender(directory, dry_run=dry_run)
            for r in outcome.reports:
                if r.status == "kept" and r.path == "manifests/job.yaml":
                    warn("note: you edited manifests/job.yaml; submit builds each Job from config.yaml, not from that file")
                elif r.status == "kept":
                    warn(f"note: you edited {r.path}; it is used as it is (the version from config.yaml is in {r.path}.new)")
                elif r.status in ("left", "ignored"):
                    warn(f"note: {r.path}: {r.note}")
            target, config = outcome.target, outcome.config
        else:
            target, config = load_deployment(directory)
        blueprint = Blueprint(config, target.name)
        return cls(target, config, blueprint, Oc(blueprint.namespace, dry_run=dry_run))

    @property
    def dry_run(self) -> bool:
        """Print the oc commands instead of running them (held by :attr:`oc`, which acts on it)."""
        return self.oc.dry_run

    def say(self, text: str = "") -> None:
        """A line for the user; in a dry run a comment, so that the output stays a runnable script."""
        if self.dry_run:
            text = "\n".join(("# " + line) if line else "" for line in text.split("\n"))
        print(text, flush=True)

    # ------------------------------------------------------------------ names
    @property
    def name(self) -> str:
        return self.blueprint.name

    def rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.directory))
        except ValueError:
            return str(path)

    def script(self, file: str) -> str:
        """How to call one of this deployment's scripts, as the user would type it."""
        try:
            shown = self.directory.relative_to(Path.cwd().resolve())
            base = "." if str(shown) == "." else f"{shown}"
        except ValueError:
            base = str(self.directory)
        return f"{base}/scripts/{file}"

    def selector(self, component: str | None = None) -> str:
        return selector_text(self.blueprint.selector(component or self.blueprint.component))

    @property
    def instance_selector(self) -> str:
        return f"app.kubernetes.io/instance={self.name}"

    @property
    def where(self) -> str:
        return self.oc.namespace or "the current project"

    # ------------------------------------------------------------------ session
    def check_session(self) -> None:
        """Logged in, and the project exists; pins the namespace for the calls that follow."""
        if self.session_checked:
            return
        self.session_checked = True
        ns = self.blueprint.namespace
        if ns:
            try:
                self.oc.call("get", ["project", ns, "-o", "name"], namespaced=False, what=f"use project {ns}")
            except OcError as exc:
                if "forbidden" in exc.failure.stderr.lower() and "projects" in exc.failure.stderr:
                    raise UserError(f"project {ns!r} does not exist or you are not a member of it",
                                    hint="check deployment.namespace in config.yaml against `oc projects`, or ask for access") from None
                raise
            return
        self.oc.call("whoami", [], namespaced=False, what="check the login", dry_answer="you")
        if self.dry_run:
            self.oc.call("project", ["-q"], namespaced=False)
            return
        ans = self.oc.call("project", ["-q"], namespaced=False, check=False)
        current = ans.out.strip()
        if not ans.ok or not current:
            raise UserError("no current project", hint="select one with `oc project NAME`, or set deployment.namespace in config.yaml")
        self.oc.namespace = current

    # ------------------------------------------------------------------ pods
    def pods(self, selector: str | None = None) -> list[dict[str, Any]]:
        data = self.oc.get_json(["pods", "-l", selector or self.selector()], what="list the pods")
        return list(data.get("items", []))

    def events(self) -> dict[str, Any]:
        return self.oc.get_json(["events"], what="read the events")

    def ready_pod(self, *, purpose: str, component: str | None = None) -> str:
        """The name of a ready pod of the application, found by label; a clear error if none."""
        self.check_session()
        if self.blueprint.is_job and component is None:
            raise UserError(f"{self.name} runs as jobs; there is no long-running pod to {purpose}",
                            hint=f"submit a job with {self.script('submit-job.sh')}, or use execution.mode: manual for a pod to work in")
        sel = self.selector(component)
        if self.dry_run:
            self.oc.call("get", ["pods", "-l", sel, "-o", "json"])
            return f"<ready pod with {sel}>"
        pods = self.pods(sel)
        ready = sorted((p for p in pods if diagnose.is_ready(p)), key=lambda p: p["metadata"].get("creationTimestamp", ""))
        if ready:
            return ready[-1]["metadata"]["name"]
        if not pods:
            raise UserError(f"no pod of {self.name} in {self.where}", hint=f"deploy it with {self.script('deploy.sh')}")
        problems = [p for pod in pods for p in diagnose.pod_problems(pod, self.events(), image=self.blueprint.image)]
        if problems:
            raise UserError(f"no ready pod to {purpose}: {problems[0].pod}: {problems[0].summary}", hint=problems[0].hint)
        states = ", ".join(f"{p['metadata']['name']} {diagnose.phase(p)}" for p in pods)
        raise UserError(f"no ready pod to {purpose} yet ({states})",
                        hint=f"wait for it ({self.script('status.sh')} shows why), then re-run")


def sleep(seconds: float) -> None:
    if seconds > 0:
        time.sleep(seconds)
