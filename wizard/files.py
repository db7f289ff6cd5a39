"""The rules for every file the wizard writes into, or removes from, a deployment folder.

Every file the wizard reads is input: ``config.yaml``, its own state file, and the folders
themselves, which a user may have replaced with links. Nothing outside the deployment is ever
written or removed because a file said so. The rules, all enforced here:

- **Writes stay in the deployment's own folders.** From the deployment folder down, no folder on
  the way to a file the wizard writes, and not that file either, may be a symbolic link
  (``deployments/`` above the deployment may be one; ``workspace/`` may hold links to data,
  since nothing is written through them). :func:`check_destinations` refuses a link in one
  line before anything is written.
- **Only the wizard's own, unchanged files are removed.** :func:`removal_verdict` allows it only
  for a regular file inside the deployment, of a kind the wizard generates, not reached
  through a link, whose bytes still have the hash recorded when the wizard wrote it.
  ``--force`` overwrites edited files the wizard renders, but never widens this rule.
- **The state file is input too.** :func:`read_state` drops entries that break these rules (and
  a file that is not a state file at all) and says so; it never raises.
- **New files and folders follow the user's umask**, like those of any other tool.
- **A new deployment is built in a locked staging folder** beside it and renamed into place
  (:func:`new_folder`); :func:`remove_stale_staging` removes the staging folders a killed run
  left behind: only ones named as the wizard names them, owned by the user and not locked by a
  running wizard.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import string
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from .errors import UserError

STATE_FILE = ".mlshift/state.json"

# The kinds of files the wizard generates; a state entry naming anything else is not its own.
GENERATED = re.compile(
    r"manifests/[a-z0-9][a-z0-9-]*\.yaml"
    r"|scripts/[A-Za-z0-9_][A-Za-z0-9_.-]*\.sh"
    r"|Containerfile|README\.md|config\.schema\.json|config\.yaml|workspace/\.gitkeep"
)
SHA256 = re.compile(r"[0-9a-f]{64}")

# A staging folder: ".<deployment name>.<8 random characters>.tmp" beside the deployment.
STAGING_ALPHABET = string.ascii_lowercase + string.digits + "_"
STAGING = re.compile(r"\.[a-z]([-a-z0-9]*[a-z0-9])?\.[a-z0-9_]{8}\.tmp")


# --------------------------------------------------------------------------- hashes
def sha256_text(text: str) -> str:
    """The hash recorded for a file the wizard wrote (of its UTF-8 bytes)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def matches_record(path: Path, recorded: str | None) -> bool:
    """Whether ``path`` is a regular file whose bytes still have the recorded hash."""
    if not recorded:
        return False
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        return hashlib.sha256(path.read_bytes()).hexdigest() == recorded
    except (OSError, ValueError):
        return False


# --------------------------------------------------------------------------- state
@dataclass
class State:
    """What ``.mlshift/state.json`` records: relative path -> hash of what the wizard wrote.

    ``files`` holds only entries that follow the rules; ``ignored`` says what was dropped and
    why (shown once: the next write of the state leaves them out).
    """

    files: dict[str, str] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)

    def note(self) -> str:
        """One line on what was ignored, or ''."""
        if not self.ignored:
            return ""
        shown = "; ".join(self.ignored[:3]) + (f"; and {len(self.ignored) - 3} more" if len(self.ignored) > 3 else "")
        return f"{shown}; nothing is removed because of it"


def plain_relative(rel: str) -> bool:
    """A path below the deployment folder, spelt plainly: relative, no ``.``/``..``, no empty part."""
    return (bool(rel) and rel.isprintable() and "\\" not in rel and not rel.startswith("/")
            and all(part not in ("", ".", "..") for part in rel.split("/")))


def _shown(rel: str) -> str:
    return rel if rel.isprintable() and len(rel) <= 80 else ascii(rel[:80])


def read_state(target: Path) -> State:
    """The state of the deployment at ``target``; never raises, whatever the file holds."""
    path = target / STATE_FILE
    try:
        if not os.path.lexists(path):
            return State()
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return State(ignored=["it is not a plain file"])
        data = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        return State(ignored=[f"it cannot be read ({exc.strerror or exc})"])
    except UnicodeDecodeError:
        return State(ignored=["it is not UTF-8 text"])
    except (ValueError, RecursionError):
        return State(ignored=["it is not valid JSON"])
    entries = data.get("files") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        return State(ignored=["it has no mapping of files"])
    state = State()
    for rel, recorded in entries.items():
        if not plain_relative(rel):
            state.ignored.append(f"{_shown(rel)} is outside the deployment")
        elif not GENERATED.fullmatch(rel):
            state.ignored.append(f"{_shown(rel)} is not a file the wizard writes")
        elif not isinstance(recorded, str) or not SHA256.fullmatch(recorded):
            state.ignored.append(f"{_shown(rel)} has no valid hash")
        else:
            state.files[rel] = recorded
    return state


def state_text(files: dict[str, str]) -> str:
    return json.dumps({"files": dict(sorted(files.items()))}, indent=1) + "\n"


# --------------------------------------------------------------------------- links
def _link_on_the_way(target: Path, rel: str) -> tuple[str, str] | None:
    """(the part of ``rel`` in the way, why) or None: a link, a file where a folder goes, or a
    folder (or pipe, socket, device) where a plain file goes."""
    parts = rel.split("/")
    here = target
    for depth, part in enumerate(parts, 1):
        here = here / part
        try:
            mode = os.lstat(here).st_mode
        except FileNotFoundError:
            return None  # the rest is created as real folders
        shown = "/".join(parts[:depth])
        if stat.S_ISLNK(mode):
            return shown, "is a symbolic link"
        last = depth == len(parts)
        if not last and not stat.S_ISDIR(mode):
            return shown, "is not a folder"
        if last and not stat.S_ISREG(mode):
            return shown, "is not a plain file"
    return None


def check_destinations(target: Path, rels: Iterable[str]) -> None:
    """Refuse, before anything is written, a link (or a misplaced file) on the way to any of ``rels``.

    ``target`` itself may be reached through links; below it the wizard writes only into real
    folders, so a link to another folder never makes it write there.
    """
    if not os.path.isdir(target):
        return
    for rel in rels:
        problem = _link_on_the_way(target, rel)
        if problem:
            shown, why = problem
            if why == "is a symbolic link":
                hint = f"replace {shown} with a real {'file' if shown == rel else 'folder'}, or remove it, and run again"
            else:
                hint = f"move {shown} away and run again"
            raise UserError(f"{target.name}/{shown} {why}; the wizard writes files only into the deployment's own "
                            "folders, and wrote none", hint=hint)


def removal_verdict(target: Path, rel: str, recorded: str) -> str:
    """'' if the state entry ``rel`` may be removed, otherwise why it is left alone.

    Allowed only for a regular file inside the deployment, of a kind the wizard generates, not
    reached through a link, whose bytes still match the hash recorded when the wizard wrote it.
    """
    if not plain_relative(rel) or not GENERATED.fullmatch(rel):
        return "not a file the wizard writes"
    problem = _link_on_the_way(target, rel)
    if problem:
        return f"{problem[0]} {problem[1]}"
    try:
        if not stat.S_ISREG(os.lstat(target / rel).st_mode):
            return "not a plain file"
    except OSError:
        return "not there"
    if not matches_record(target / rel, recorded):
        return "no longer generated, but you edited it"
    return ""


# --------------------------------------------------------------------------- writing and removing
def write_file(target: Path, rel: str, text: str, mode: int) -> bool:
    """Write ``text`` to ``target/rel`` atomically; False when the file already holds it.

    ``mode`` is reduced by the umask, as for any new file. Refuses links on the way.
    """
    check_destinations(target, [rel])
    path = target / rel
    data = text.encode("utf-8")
    try:
        if stat.S_ISREG(os.lstat(path).st_mode) and path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return True


def remove_file(target: Path, rel: str, recorded: str) -> bool:
    """Remove ``target/rel`` if :func:`removal_verdict` allows it (checked again, just before)."""
    if removal_verdict(target, rel, recorded):
        return False
    (target / rel).unlink(missing_ok=True)
    return True


# --------------------------------------------------------------------------- staging
def _lock(folder: Path) -> int | None:
    """An open descriptor holding an exclusive lock on ``folder``, or None if it cannot be had."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_ino == os.lstat(folder).st_ino:  # not removed and replaced meanwhile
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def _new_staging(target: Path) -> tuple[Path, int | None]:
    """A new, empty staging folder beside ``target`` and the descriptor that locks it.

    Another run's :func:`remove_stale_staging` may remove a folder between its creation and its
    lock; then a new one is made. Where the file system has no locks the folder is used
    unlocked (None): no other run can lock it either, so none removes it.
    """
    while True:
        name = "".join(secrets.choice(STAGING_ALPHABET) for _ in range(8))
        staging = target.parent / f".{target.name}.{name}.tmp"
        try:
            staging.mkdir()  # mode 0777 less the umask, as any new folder
            fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except (FileExistsError, FileNotFoundError):
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another run is removing it
            os.close(fd)
            continue
        except OSError:
            os.close(fd)
            return staging, None
        try:
            if os.fstat(fd).st_ino == os.lstat(staging).st_ino:
                return staging, fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextmanager
def new_folder(target: Path) -> Iterator[Path]:
    """A new folder to fill, renamed to ``target`` when the block ends; removed if it fails.

    It is built in a staging folder beside ``target``, locked for as long as it is in use, so
    that :func:`remove_stale_staging` in another run never takes it for an abandoned one. Its
    mode follows the umask.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging, fd = _new_staging(target)
    try:
        yield staging
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if fd is not None:
            os.close(fd)


def remove_stale_staging(folder: Path) -> list[str]:
    """Remove the staging folders a killed run left in ``folder``; returns their names.

    Only folders named as :func:`new_folder` names them, owned by this user, real folders (not
    links) and not locked by a running wizard; everything else is left alone.
    """
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    removed = []
    for entry in sorted(entries, key=lambda e: e.name):
        if not STAGING.fullmatch(entry.name):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            continue
        fd = _lock(Path(entry.path))
        if fd is None:
            continue  # in use by a running wizard (or cannot be locked): left alone
        try:
            shutil.rmtree(entry.path)
            removed.append(entry.name)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed
