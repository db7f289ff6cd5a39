"""What you submit is what runs: each submission's snapshot of ``workspace/`` on the volume.

At submit, the files of ``deployments/<name>/workspace/`` that changed since the last snapshot
(SHA-256, recorded in ``.mlshift/snapshots.json``) go up in one ``oc rsync``, and one ``oc exec``
makes ``/workspace/.runs/<id>/`` from them and hard links to the previous snapshot's unchanged
files. The Job runs there, so code copied in later never reaches it.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..paths import WORKSPACE_MOUNT
from . import deploy as deploy_ops
from .base import Operation, warn
from .oc import Answer, explain


# --------------------------------------------------------------------------- snapshots (submit)
# What you submit is what runs: the Jobs of each submission run from a snapshot of workspace/
# on the volume, RUNS_DIR/<id>, made at submit time and not changed afterwards (its files are
# read-only). Only the files that changed since the last snapshot are uploaded: their hashes are
# recorded here (SNAPSHOT_STATE, per project, with the volume's uid), and SNAPSHOT_SCRIPT, run in
# the short-lived sync pod, makes the new snapshot from hard links to the previous one's
# unchanged files and the uploaded ones. `oc rsync` falls back to tar there (the pod's image has
# no rsync), so the changed files travel as one folder of their own.
RUNS_DIR = f"{WORKSPACE_MOUNT}/.runs"
SNAPSHOT_STATE = ".mlshift/snapshots.json"
SNAPSHOT_ID = re.compile(r"\d{6}-\d{6}-[a-z0-9]{4}")
LEFT_OUT = frozenset({"__pycache__"})  # folders of workspace/ that are not snapshotted (nor the top .gitkeep)
RECENT_NS = 2_000_000_000  # a file modified this close before its hash was recorded is hashed again

# bash SCRIPT mlshift-snapshot RUNS ID BASE RESULTS. RUNS/.upload-ID holds what was uploaded:
# files/ (the changed files), keep (the unchanged ones, to link from RUNS/BASE), changed and
# executable (NUL-separated lists) and manifest.sha256 (every file, for `sha256sum -c`). The
# snapshot is built in RUNS/.new-ID and renamed to RUNS/ID when whole. Exit code 3: BASE is not
# (all) on the volume any more; the caller then uploads everything. RESULTS, when given, is the
# relative link target of the snapshot's results/ (the configured working directory's results/).
SNAPSHOT_SCRIPT = r"""set -eu
runs=$1 id=$2 base=$3 results=$4
up=$runs/.upload-$id new=$runs/.new-$id dest=$runs/$id
trap 'rm -rf -- "$up" "$new"' EXIT
if [ -e "$dest" ]; then exit 0; fi
each() {
  local list=$1 dir=$2 f
  shift 2
  local some=()
  while IFS= read -r -d '' f; do
    some+=("$f")
    if [ "${#some[@]}" -ge 1000 ]; then (cd -- "$dir" && "$@" "${some[@]}") || return 1; some=(); fi
  done < "$list"
  if [ "${#some[@]}" -gt 0 ]; then (cd -- "$dir" && "$@" "${some[@]}") || return 1; fi
  return 0
}
link() {
  cp -l --parents -t "$new" -- "$@" 2>/dev/null || cp -p --remove-destination --parents -t "$new" -- "$@"
}
rm -rf -- "$new"
mkdir -p -- "$new"
if [ -n "$base" ]; then
  if [ ! -d "$runs/$base" ] || ! each "$up/keep" "$runs/$base" link; then
    echo "mlshift: snapshot $base is not (all) on the volume" >&2
    exit 3
  fi
fi
each "$up/executable" "$up/files" chmod a+x --
each "$up/changed" "$up/files" chmod a-w --
each "$up/changed" "$up/files" link
if [ -n "$results" ] && [ ! -e "$new/results" ] && [ ! -L "$new/results" ]; then
  mkdir -p -- "$new/$results" && ln -s -- "$results" "$new/results"
fi
mv -f -- "$up/manifest.sha256" "$runs/$id.sha256"
mv -T -- "$new" "$dest"
"""


@dataclass(frozen=True)
class Entry:
    """One file of workspace/: what it holds (hash, size, executable), and the stat it was hashed at."""

    sha256: str
    size: int
    executable: bool
    mtime_ns: int = 0
    inode: int = 0

    def same(self, other: "Entry") -> bool:
        return (self.sha256, self.size, self.executable) == (other.sha256, other.size, other.executable)


@dataclass
class Snapshot:
    """The last snapshot uploaded from this folder to one project's workspace volume."""

    id: str
    volume: str  # the volume's metadata.uid: a volume deleted and created again has another
    at_ns: int  # when its files were looked at
    files: dict[str, Entry]


@dataclass
class Upload:
    """A snapshot to make: all its files, and which of them travel (the rest are linked from ``base``)."""

    id: str
    base: Snapshot | None
    files: dict[str, Entry]
    changed: list[str]
    removed: list[str] = field(default_factory=list)

    @property
    def kept(self) -> list[str]:
        travel = set(self.changed)
        return [rel for rel in sorted(self.files) if rel not in travel] if self.base else []

    @property
    def size(self) -> int:
        return sum(self.files[rel].size for rel in self.changed)

    def everything(self) -> "Upload":
        return Upload(self.id, None, self.files, sorted(self.files))


def _plain(rel: Any) -> bool:
    return (isinstance(rel, str) and rel != "" and not rel.startswith("/")
            and all(part not in ("", ".", "..") for part in rel.split("/")))


def read_snapshots(directory: Path) -> dict[str, Snapshot]:
    """Project -> the last snapshot uploaded there, from SNAPSHOT_STATE; what is damaged or not
    ours is left out (then everything is uploaded again), never an error."""
    try:
        data = json.loads((directory / SNAPSHOT_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    out: dict[str, Snapshot] = {}
    for project, rec in (data.items() if isinstance(data, dict) else []):
        try:
            files = {}
            for rel, (sha, size, executable, mtime_ns, inode) in rec["files"].items():
                if not (_plain(rel) and isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)
                        and all(type(n) is int and n >= 0 for n in (size, mtime_ns, inode))):
                    raise ValueError(rel)
                files[rel] = Entry(sha, size, bool(executable), mtime_ns, inode)
            snap = Snapshot(rec["id"], rec["volume"], rec["at"], files)
            if not (isinstance(snap.id, str) and SNAPSHOT_ID.fullmatch(snap.id) and isinstance(snap.volume, str)
                    and type(snap.at_ns) is int):
                raise ValueError(snap.id)
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
        out[str(project)] = snap
    return out


def write_snapshots(directory: Path, records: dict[str, Snapshot]) -> None:
    from ..files import write_file

    data = {project: {"id": s.id, "volume": s.volume, "at": s.at_ns,
                      "files": {rel: [e.sha256, e.size, int(e.executable), e.mtime_ns, e.inode] for rel, e in sorted(s.files.items())}}
            for project, s in sorted(records.items())}
    write_file(directory, SNAPSHOT_STATE, json.dumps(data, indent=1) + "\n", 0o644)


def _hash(path: str) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}", hint="fix its permissions or move it out of workspace/") from None
    return h.hexdigest()


def scan_workspace(root: Path, recorded: Snapshot | None) -> tuple[dict[str, Entry], list[str], int]:
    """Every file of workspace/ (relative path -> Entry), notes on what is left out, and when it was looked at.

    A file is hashed unless its size, modification time and inode are those recorded for it and
    it was modified well before they were recorded (git's rule against a change in the same tick).
    Links to files count as the files they point to; links to folders are left out (with a note).
    """
    at = time.time_ns()
    known = recorded.files if recorded else {}
    trusted_before = recorded.at_ns - RECENT_NS if recorded else 0
    files: dict[str, Entry] = {}
    notes: list[str] = []
    if not root.is_dir():
        return files, notes, at
    top = str(root)
    for folder, dirs, names in os.walk(top):
        below = os.path.relpath(folder, top)
        prefix = "" if below == "." else below.replace(os.sep, "/") + "/"
        keep = []
        for d in sorted(dirs):
            if d in LEFT_OUT:
                continue
            if os.path.islink(os.path.join(folder, d)):
                notes.append(f"workspace/{prefix}{d} is a link to a folder; it is not part of the snapshot")
                continue
            keep.append(d)
        dirs[:] = keep
        for n in sorted(names):
            rel = prefix + n
            if rel == ".gitkeep":
                continue
            path = os.path.join(folder, n)
            try:
                st = os.stat(path)
            except OSError:
                notes.append(f"workspace/{rel} cannot be read (a broken link?); it is not part of the snapshot")
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            old = known.get(rel)
            if (old is not None and (old.size, old.mtime_ns, old.inode) == (st.st_size, st.st_mtime_ns, st.st_ino)
                    and st.st_mtime_ns < trusted_before):
                sha = old.sha256
            else:
                sha = _hash(path)
            files[rel] = Entry(sha, st.st_size, bool(st.st_mode & 0o111), st.st_mtime_ns, st.st_ino)
    return files, notes, at


def _diff(files: dict[str, Entry], before: dict[str, Entry]) -> tuple[list[str], list[str]]:
    changed = sorted(rel for rel, e in files.items() if rel not in before or not e.same(before[rel]))
    return changed, sorted(rel for rel in before if rel not in files)


def _bytes(n: int) -> str:
    if n < 1024:
        return f"{n} byte{'s' if n != 1 else ''}"
    size, unit = n / 1024, "KiB"
    for bigger in ("MiB", "GiB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{size:.1f} {unit}"


def _names(rels: list[str], most: int = 5) -> str:
    shown = ", ".join(rels[:most])
    return shown + (f" and {len(rels) - most} more" if len(rels) > most else "")


def _files(n: int) -> str:
    return f"{n} file{'s' if n != 1 else ''}"


def _stage(workspace: Path, folder: Path, up: Upload) -> None:
    """What is uploaded, in ``folder``: the changed files (copied and hashed again as they are
    copied: what is copied is what runs and what is recorded) and the lists."""
    (folder / "files").mkdir(parents=True)
    for rel in up.changed:
        src, dst = workspace.joinpath(*rel.split("/")), folder.joinpath("files", *rel.split("/"))
        dst.parent.mkdir(parents=True, exist_ok=True)
        h, size = hashlib.sha256(), 0
        try:
            with open(src, "rb") as fin, open(dst, "wb") as fout:
                for chunk in iter(lambda: fin.read(1 << 20), b""):
                    h.update(chunk)
                    fout.write(chunk)
                    size += len(chunk)
        except OSError as exc:
            raise UserError(f"cannot read workspace/{rel}: {exc.strerror}", hint="it changed while submitting? submit again") from None
        entry = up.files[rel]
        if (h.hexdigest(), size) != (entry.sha256, entry.size):  # changed since it was looked at
            up.files[rel] = Entry(h.hexdigest(), size, entry.executable)
    lists = {"keep": up.kept, "changed": up.changed, "executable": [r for r in up.changed if up.files[r].executable]}
    for name, rels in lists.items():
        (folder / name).write_bytes(b"".join(os.fsencode(rel) + b"\0" for rel in rels))
    lines = []
    for rel, entry in sorted(up.files.items()):
        if "\\" in rel or "\n" in rel:  # sha256sum's escaped form
            lines.append(b"\\" + entry.sha256.encode() + b"  " + os.fsencode(rel.replace("\\", "\\\\").replace("\n", "\\n")) + b"\n")
        else:
            lines.append(entry.sha256.encode() + b"  " + os.fsencode(rel) + b"\n")
    (folder / "manifest.sha256").write_bytes(b"".join(lines))


def _send(ctx: Operation, pod: str, up: Upload, results: str) -> Answer:
    """Upload what makes snapshot ``up.id`` and make it on the volume (one rsync, one exec)."""
    import tempfile

    make = [pod, "--", "/bin/bash", "-c", SNAPSHOT_SCRIPT, "mlshift-snapshot", RUNS_DIR, up.id,
            up.base.id if up.base else "", results]
    if ctx.dry_run:
        ctx.oc.note(f"FOLDER is a temporary folder holding .runs/.upload-{up.id}/: the {_files(len(up.changed))} "
                    "to upload and the lists of the others")
        ctx.oc.stream("rsync", ["FOLDER/.runs", f"{pod}:{WORKSPACE_MOUNT}", "--no-perms=true"])
        return ctx.oc.call("exec", make)
    with tempfile.TemporaryDirectory(prefix="mlshift-snapshot-") as tmp:
        _stage(ctx.directory / "workspace", Path(tmp) / ".runs" / f".upload-{up.id}", up)
        ctx.oc.stream("rsync", [str(Path(tmp) / ".runs"), f"{pod}:{WORKSPACE_MOUNT}", "--no-perms=true"],
                      what="upload the changed files of workspace/")
    return ctx.oc.call("exec", make, check=False, timeout=900, what=f"make snapshot {up.id} on the volume")


def upload_snapshot(ctx: Operation, up: Upload) -> Upload:
    """Make snapshot ``up.id`` on the volume through the short-lived sync pod; returns what was
    uploaded (everything when the base snapshot turned out to be gone from the volume)."""
    hint = f"or run the last snapshot as it is: {ctx.script('submit-job.sh')} --no-sync" if up.base else None
    results = posixpath.relpath(f"{ctx.blueprint.configured_working_dir}/results", f"{RUNS_DIR}/{up.id}")
    with deploy_ops.VolumePod(ctx, None, hint=hint) as pod:
        ans = _send(ctx, pod, up, results)
        if ans.returncode == 3 and up.base is not None:
            warn(f"note: snapshot {up.base.id} is not (all) on the volume any more; uploading all of workspace/")
            up = up.everything()
            ans = _send(ctx, pod, up, results)
        if not ans.ok:
            raise explain(ans, what=f"make snapshot {up.id} on the volume", namespace=ctx.oc.namespace)
    return up


def snapshot_for_jobs(ctx: Operation, *, new_id: str, volume: str, no_sync: bool = False) -> str | None:
    """The folder on the volume that this submission's Jobs run from: a snapshot of workspace/.

    When workspace/ changed since the last snapshot uploaded to this project's volume, a new one
    (``new_id``) is uploaded first, with only the files that changed; when nothing changed, the
    last one is used again (a snapshot is never changed). ``no_sync`` uses the last one as it
    is. None when workspace/ is empty: the Jobs then run what is in the configured working
    directory, as before snapshots. A dry run says what it would upload and changes nothing.
    """
    records = read_snapshots(ctx.directory)
    project = ctx.oc.namespace or ""
    if ctx.dry_run and not project and len(records) == 1:
        project = next(iter(records))  # the current project is not asked for in a dry run
    recorded = records.get(project)
    last = recorded if recorded is not None and (not volume or recorded.volume == volume) else None
    files, notes, at = scan_workspace(ctx.directory / "workspace", recorded)
    for note in notes:
        warn(f"note: {note}")
    if no_sync:
        if last is None:
            gone = f" (snapshot {recorded.id} was on a volume that has been replaced since)" if recorded else ""
            raise UserError(f"--no-sync: no snapshot of workspace/ was uploaded from here to {ctx.where} yet{gone}",
                            hint=f"submit once without --no-sync ({ctx.script('submit-job.sh')}); it uploads one")
        ctx.say(f"--no-sync: running snapshot {last.id} ({RUNS_DIR}/{last.id}) as it is; workspace/ is not uploaded.")
        changed, removed = _diff(files, last.files)
        if changed or removed:
            warn(f"note: workspace/ has changed since snapshot {last.id} ("
                 + "; ".join(filter(None, [changed and f"changed: {_names(changed)}", removed and f"removed: {_names(removed)}"]))
                 + "); this submission does not have those changes")
        return f"{RUNS_DIR}/{last.id}"
    if not files:
        warn(f"note: workspace/ is empty: the job runs what is on the volume in {ctx.blueprint.configured_working_dir} "
             f"(put your code in workspace/ to have it uploaded with each submission)")
        return None
    if last is not None:
        changed, removed = _diff(files, last.files)
        if not changed and not removed:
            ctx.say(f"workspace/: nothing changed since snapshot {last.id}; this submission runs from it "
                    f"({RUNS_DIR}/{last.id}), nothing uploaded.")
            return f"{RUNS_DIR}/{last.id}"
        up = Upload(new_id, last, files, changed, removed)
        what = (f"{len(changed)} of {_files(len(files))} changed since snapshot {last.id} ({_names(changed) or 'none'}; "
                f"{_bytes(up.size)})" + (f", {len(removed)} removed ({_names(removed)})" if removed else ""))
    else:
        up = Upload(new_id, None, files, sorted(files))
        why = (f"snapshot {recorded.id} was on a volume that has been replaced since" if recorded
               else f"the first snapshot from here in {ctx.where}")
        what = f"all {_files(len(files))}, {_bytes(up.size)} ({why})"
    ctx.say(("Would upload" if ctx.dry_run else "Uploading") + f" workspace/ as snapshot {new_id}: {what}")
    up = upload_snapshot(ctx, up)
    if ctx.dry_run:
        return f"{RUNS_DIR}/{new_id}"
    records[project] = Snapshot(new_id, volume, at, up.files)
    write_snapshots(ctx.directory, records)
    how = (f"{_files(len(up.changed))} uploaded, {_bytes(up.size)}; the others linked from {up.base.id}" if up.base
           else f"all uploaded, {_bytes(up.size)}")
    ctx.say(f"Snapshot {new_id}: {_files(len(up.files))} in {RUNS_DIR}/{new_id} ({how})")
    return f"{RUNS_DIR}/{new_id}"
