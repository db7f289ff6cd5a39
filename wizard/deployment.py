"""The core API behind ``new`` and ``render``: from answers to a deployment folder.

The command line and the interactive wizard both call these functions; all checks happen
before anything is written.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .clusters import profile
from .config import Config
from .errors import UserError
from .files import remove_stale_staging
from .loader import load_config, read_yaml, validate, with_default_name
from .render import CONFIG_FILE, FileReport, check_target, plan_writes, render_files, write


@dataclass
class Outcome:
    target: Path
    config: Config
    reports: list[FileReport]
    created: bool
    notes: list[str] = field(default_factory=list)

    @property
    def kept(self) -> list[FileReport]:
        return [r for r in self.reports if r.status == "kept"]


def build_config(data: dict[str, Any], *, source: str) -> Config:
    config = validate(data, source=source)
    profile(config.deployment.cluster)  # an unknown cluster profile is a config error too
    return config


def create_or_update(
    name: str,
    deployments_dir: Path,
    *,
    config: Config,
    force: bool = False,
    dry_run: bool = False,
    copy_source_from: Path | None = None,
) -> Outcome:
    """Write deployments/NAME from ``config``: created whole, or updated file by file (see :mod:`wizard.files`).

    Staging folders that a killed earlier run left in ``deployments_dir`` are removed first.
    """
    target = check_target(deployments_dir, name)
    files = render_files(config, name, with_config=True)
    created = not target.exists()
    reports = plan_writes(target, files, force=force)
    outcome = Outcome(target, config, reports, created)
    if dry_run:
        return outcome
    for leftover in remove_stale_staging(target.parent):
        outcome.notes.append(f"removed {leftover}, left behind by an interrupted run")
    write(target, files, reports)
    if copy_source_from is not None:
        outcome.notes += copy_source(config, copy_source_from, target / "workspace")
    return outcome


def copy_source(config: Config, origin: Path, workspace: Path) -> list[str]:
    """Copy the application's file or folder into workspace/ once, if it exists where the user is.

    Nothing is written through a link: not when workspace/ is one (to data kept elsewhere), and
    not onto a name in it that already exists, even as a dangling link.
    """
    app = config.application
    if app.type not in ("single_file", "directory") or not app.source.path:
        return []
    if workspace.is_symlink():
        return ["workspace/ is a link; copy your code into it yourself (nothing was copied through it)"]
    src = (origin / app.source.path).resolve() if not Path(app.source.path).is_absolute() else Path(app.source.path)
    if not src.exists():
        where = "workspace/" + Path(app.source.path).name if app.type == "single_file" else "workspace/"
        return [f"put your code in {where} (no {app.source.path} here to copy)"]
    try:
        if src.is_file():
            dest = workspace / src.name
            if os.path.lexists(dest):
                return []
            shutil.copy2(src, dest)
            return [f"copied {app.source.path} to workspace/{src.name}"]
        if src.is_dir():
            if workspace.resolve() == src or workspace.resolve() in src.parents:
                return []
            copied = 0
            for item in src.iterdir():
                dest = workspace / item.name
                if os.path.lexists(dest):
                    continue
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, dest)
                copied += 1
            return [f"copied {copied} item(s) from {app.source.path} into workspace/"] if copied else []
    except OSError as exc:
        raise UserError(f"cannot copy {app.source.path} into workspace/: {exc.strerror}") from None
    return []


def load_deployment(directory: Path) -> tuple[Path, Config]:
    """A deployment folder and its validated config (the application name defaults to the folder's)."""
    directory = directory.resolve()
    cfg_path = directory / CONFIG_FILE
    if not directory.is_dir():
        raise UserError(f"{directory.name}: no such deployment folder")
    if not cfg_path.is_file():
        raise UserError(f"{directory.name}: no config.yaml here (create one with: python -m wizard new {directory.name})")
    return directory, build_config(read_deployment_data(directory), source=f"{directory.name}/{CONFIG_FILE}")


def read_deployment_data(directory: Path) -> dict[str, Any]:
    """A deployment's config.yaml as data, the application named after the folder where it has no name."""
    return with_default_name(read_yaml(directory / CONFIG_FILE, label=f"{directory.name}/{CONFIG_FILE}"), directory.name)


def rerender(directory: Path, *, force: bool = False, dry_run: bool = False) -> Outcome:
    directory, config = load_deployment(directory)
    files = render_files(config, directory.name)
    reports = plan_writes(directory, files, force=force)
    if not dry_run:
        write(directory, files, reports)
    return Outcome(directory, config, reports, created=False)


__all__ = ["Outcome", "build_config", "read_deployment_data", "create_or_update", "load_deployment", "rerender", "load_config"]
