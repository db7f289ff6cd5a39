"""What you submit is what runs: each submission's Jobs run from a snapshot of workspace/ on the volume.

The stand-in oc keeps the volume's files in a folder (FAKE_OC_VOLUME): its `rsync` copies into it
and its `exec` runs the snapshot script with this machine's bash and coreutils against it, so
these tests check the files a Job would find, hard links and modes included.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_oc.harness import Cluster  # noqa: E402

UPLOAD = ["delete", "create", "wait", "rsync", "exec", "delete"]  # the short-lived pod, one rsync, one exec


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    c = Cluster(tmp_path, monkeypatch)
    c.dep = c.job()  # workspace/main.py
    (c.dep / "workspace" / "utils.py").write_text("SCALE = 1\n")
    c.seed(c.dep)
    c.volume = tmp_path / "volume"
    c.volume.mkdir()
    c.set(FAKE_OC_VOLUME=str(c.volume))
    return c


def _jobs(cluster) -> list[dict]:
    return [o for o in cluster.created() if o["kind"] == "Job"]


def _container(job: dict) -> dict:
    return job["spec"]["template"]["spec"]["containers"][0]


def _snapshot(job: dict) -> str:
    return job["metadata"]["labels"]["mlshift.io/snapshot"]


def _sent(cluster) -> list[str]:
    """The workspace files each rsync of the calls so far carried (their paths in workspace/)."""
    out = []
    for c in cluster.calls():
        if c["argv"][0] == "rsync":
            out += [p.split("/files/", 1)[1] for p in c.get("sent", []) if "/files/" in p]
    return out


def _submit(cluster, capsys, *args: str) -> tuple[str, str, dict]:
    cluster.reset()
    rc, out, err = cluster.verb(capsys, "submit", cluster.dep, *args)
    assert rc == 0, err
    return out, err, _jobs(cluster)[-1]


def _tree(root: Path) -> dict[str, tuple]:
    return {str(p.relative_to(root)): (p.is_dir() or p.read_bytes(), p.lstat().st_mtime_ns) for p in sorted(root.rglob("*"))}


# --------------------------------------------------------------------------- the snapshot
def test_a_submission_runs_from_its_own_snapshot_uploaded_before_its_job(cluster, capsys):
    out, err, job = _submit(cluster, capsys)
    sid = _snapshot(job)
    assert sid == job["metadata"]["labels"]["mlshift.io/submission"]  # named after the submission that made it
    assert cluster.verbs() == ["get", "get", *UPLOAD, "create"]  # uploaded before the Job exists
    c = _container(job)
    assert c["workingDir"] == f"/workspace/.runs/{sid}"
    assert c["command"][:3] == ["python3", "/etc/mlshift/launch.py", f"/workspace/.runs/{sid}/main.py"]  # through the run launcher
    assert {"name": "MLSHIFT_SNAPSHOT", "value": sid} in c["env"]
    assert f"Uploading workspace/ as snapshot {sid}: all 2 files, 22 bytes" in out
    # on the volume: exactly workspace/, read-only, with the manifest beside it
    snap = cluster.volume / ".runs" / sid
    assert sorted(p.name for p in snap.iterdir()) == ["main.py", "results", "utils.py"]
    assert (snap / "main.py").read_text() == "print('hi')\n"
    assert all(not (snap / f).stat().st_mode & 0o222 for f in ("main.py", "utils.py"))
    check = subprocess.run(["sha256sum", "-c", f"../{sid}.sha256"], cwd=snap, capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.count(": OK") == 2, check.stdout + check.stderr
    # results/ is the configured working directory's, shared by every run (sync-workspace.sh down reads it)
    assert os.readlink(snap / "results") == "../../train/results" and (cluster.volume / "train" / "results").is_dir()
    assert not [p for p in (cluster.volume / ".runs").iterdir() if p.name.startswith(".")]  # no staging left behind
    assert sorted(_sent(cluster)) == ["main.py", "utils.py"]
    state = json.loads((cluster.dep / ".mlshift" / "snapshots.json").read_text())
    assert state["team-a"]["id"] == sid and state["team-a"]["volume"]


def test_code_copied_in_after_a_submission_never_reaches_it(cluster, capsys, tmp_path):
    """Seed 001's habit: `cp train.py deployments/x/workspace/`, then submit-job.sh, while the first runs."""
    _, _, first = _submit(cluster, capsys)
    a = _snapshot(first)
    mine = tmp_path / "main.py"
    mine.write_text("print('the new version')\n")
    shutil.copy(mine, cluster.dep / "workspace" / "main.py")
    out, _, second = _submit(cluster, capsys)
    b = _snapshot(second)
    assert a != b and _container(first)["workingDir"] == f"/workspace/.runs/{a}"
    assert f"Uploading workspace/ as snapshot {b}: 1 of 2 files changed since snapshot {a} (main.py; 25 bytes)" in out
    assert _sent(cluster) == ["main.py"]  # only what changed travels
    runs = cluster.volume / ".runs"
    assert (runs / a / "main.py").read_text() == "print('hi')\n"  # what the first job runs, still
    assert (runs / b / "main.py").read_text() == "print('the new version')\n"
    assert (runs / a / "utils.py").stat().st_ino == (runs / b / "utils.py").stat().st_ino  # linked, not copied
    assert f"linked from {a}" in out


def test_nothing_changed_uploads_nothing_and_reuses_the_last_snapshot(cluster, capsys):
    _, _, first = _submit(cluster, capsys)
    record = cluster.dep / ".mlshift" / "snapshots.json"
    before = (record.read_bytes(), record.stat().st_mtime_ns)
    out, _, again = _submit(cluster, capsys)
    assert cluster.verbs() == ["get", "get", "create"]
    assert f"nothing changed since snapshot {_snapshot(first)}" in out and "nothing uploaded" in out
    assert _container(again)["workingDir"] == _container(first)["workingDir"]
    assert (record.read_bytes(), record.stat().st_mtime_ns) == before


def test_a_file_changed_in_place_within_the_same_tick_is_seen(cluster, capsys):
    """Same size, same inode, modification time put back: hashed again because it is recent."""
    _submit(cluster, capsys)
    path = cluster.dep / "workspace" / "utils.py"
    st = path.stat()
    with open(path, "r+") as fh:
        fh.write("SCALE = 2\n")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_ino, path.stat().st_mtime_ns) == (st.st_size, st.st_ino, st.st_mtime_ns)
    out, _, job = _submit(cluster, capsys)
    assert "1 of 2 files changed" in out and _sent(cluster) == ["utils.py"]


def test_a_removed_file_is_not_in_the_next_snapshot(cluster, capsys):
    _, _, first = _submit(cluster, capsys)
    (cluster.dep / "workspace" / "utils.py").unlink()
    out, _, second = _submit(cluster, capsys)
    assert "1 removed (utils.py)" in out and _sent(cluster) == []
    runs = cluster.volume / ".runs"
    assert not (runs / _snapshot(second) / "utils.py").exists() and (runs / _snapshot(first) / "utils.py").exists()


def test_names_modes_and_links_in_workspace(cluster, capsys, tmp_path):
    ws = cluster.dep / "workspace"
    odd = ws / "sub dir" / "-odd name.sh"
    odd.parent.mkdir()
    odd.write_text("#!/bin/sh\necho hi\n")
    odd.chmod(0o755)
    (ws / "sub dir" / "new\nline.txt").write_text("x")
    outside = tmp_path / "big-data"
    outside.mkdir()
    (outside / "x.bin").write_bytes(b"0" * 10)
    (ws / "data").symlink_to(outside)  # a link to a folder: left out, with a note
    (ws / "cfg.json").symlink_to(tmp_path / "cfg-real.json")
    (tmp_path / "cfg-real.json").write_text("{}")  # a link to a file: its content is uploaded
    (ws / "__pycache__").mkdir()
    (ws / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0")
    _, err, job = _submit(cluster, capsys)
    assert "workspace/data is a link to a folder; it is not part of the snapshot" in err
    snap = cluster.volume / ".runs" / _snapshot(job)
    assert (snap / "sub dir" / "-odd name.sh").stat().st_mode & 0o111 == 0o111
    assert (snap / "sub dir" / "new\nline.txt").read_text() == "x"
    assert (snap / "cfg.json").read_text() == "{}" and not (snap / "cfg.json").is_symlink()
    assert not (snap / "data").exists() and not (snap / "__pycache__").exists()
    check = subprocess.run(["sha256sum", "-c", f"../{snap.name}.sha256"], cwd=snap, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    (ws / "sub dir" / "-odd name.sh").chmod(0o644)  # a mode change is a change
    out, _, _ = _submit(cluster, capsys)
    assert "1 of 5 files changed" in out


# --------------------------------------------------------------------------- --no-sync
def test_no_sync_without_a_snapshot_is_a_clear_error(cluster, capsys):
    rc, _, err = cluster.verb(capsys, "submit", cluster.dep, "--no-sync")
    assert rc == 2 and "--no-sync: no snapshot of workspace/ was uploaded from here to team-a yet" in err
    assert "submit once without --no-sync" in err and "create" not in cluster.verbs()


def test_no_sync_runs_the_last_snapshot_and_says_what_it_leaves_out(cluster, capsys):
    _, _, first = _submit(cluster, capsys)
    (cluster.dep / "workspace" / "main.py").write_text("print('not yet')\n")
    out, err, job = _submit(cluster, capsys, "--no-sync")
    assert cluster.verbs() == ["get", "get", "create"]
    assert _container(job)["workingDir"] == f"/workspace/.runs/{_snapshot(first)}"
    assert f"--no-sync: running snapshot {_snapshot(first)}" in out
    assert f"workspace/ has changed since snapshot {_snapshot(first)} (changed: main.py)" in err


# --------------------------------------------------------------------------- sweeps and batches
def test_a_sweep_uploads_once_and_all_its_runs_share_one_snapshot(cluster, capsys):
    import yaml

    cfg = cluster.dep / "config.yaml"
    data = yaml.safe_load(cfg.read_text())
    data["experiment"]["sweep"] = {"parameters": {"lr": [0.1, 0.01], "bs": [16, 32]}}
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    rc, out, err = cluster.verb(capsys, "sweep", cluster.dep)
    assert rc == 0, err
    (job,) = _jobs(cluster)  # one Indexed Job: its 4 trials are its indexes, all in its pods' snapshot
    sweep = job["metadata"]["labels"]["mlshift.io/sweep"]
    assert job["spec"]["completions"] == 4 and _snapshot(job) == sweep
    assert _container(job)["workingDir"] == f"/workspace/.runs/{sweep}"
    assert cluster.verbs().count("rsync") == 1 and cluster.verbs().count("exec") == 1
    cluster.reset()
    rc, out, err = cluster.verb(capsys, "submit", cluster.dep, "--repeat", "3")  # a batch: nothing changed
    assert rc == 0 and "rsync" not in cluster.verbs() and {_snapshot(j) for j in _jobs(cluster)} == {sweep}


# --------------------------------------------------------------------------- dry runs
def test_a_dry_run_shows_the_upload_and_changes_nothing(cluster, capsys):
    before = _tree(cluster.dep)
    rc, out, err = cluster.verb(capsys, "submit", cluster.dep, "--dry-run")
    assert rc == 0, err
    assert cluster.calls() == [] and list(cluster.volume.iterdir()) == [] and _tree(cluster.dep) == before
    assert "# Would upload workspace/ as snapshot" in out and "all 2 files, 22 bytes" in out
    assert "oc rsync --namespace=team-a FOLDER/.runs train-sync:/workspace --no-perms=true" in out
    assert "mlshift-snapshot /workspace/.runs" in out
    assert out.index("oc rsync") < out.index("oc create --namespace=team-a -f - -o name")
    _, _, first = _submit(cluster, capsys)
    (cluster.dep / "workspace" / "main.py").write_text("print('v2')\n")
    cluster.reset()
    before, on_volume = _tree(cluster.dep), _tree(cluster.volume)
    rc, out, err = cluster.verb(capsys, "submit", cluster.dep, "--dry-run")
    assert rc == 0 and cluster.calls() == [] and _tree(cluster.dep) == before and _tree(cluster.volume) == on_volume
    assert f"1 of 2 files changed since snapshot {_snapshot(first)} (main.py; 12 bytes)" in out
    (cluster.dep / "workspace" / "main.py").write_text("print('hi')\n")
    rc, out, err = cluster.verb(capsys, "submit", cluster.dep, "--dry-run")
    assert rc == 0 and "nothing changed since snapshot" in out and "oc rsync" not in out


# --------------------------------------------------------------------------- the volume
def test_an_upload_that_waits_for_the_volume_says_why(cluster, capsys):
    cluster.set(FAKE_OC_VOLUME_BUSY="2")
    out, err, job = _submit(cluster, capsys)
    why = ("waiting for the workspace volume: it is attached to another node, in use by other-job-7f9c2-q8w2r "
           "(ReadWriteOnce: it is mounted on one node at a time)")
    assert out.count(why) == 1  # said once, not at every look
    assert cluster.verbs().count("wait") == 3 and (cluster.volume / ".runs" / _snapshot(job) / "main.py").exists()


def test_an_upload_that_cannot_start_stops_with_the_reason_and_the_way_out(cluster, capsys):
    _submit(cluster, capsys)
    (cluster.dep / "workspace" / "main.py").write_text("print('v2')\n")
    cluster.set(FAKE_OC_VOLUME_BUSY="100000", MLSHIFT_SYNC_TIMEOUT="1")
    cluster.reset()
    start = time.monotonic()
    rc, out, err = cluster.verb(capsys, "submit", cluster.dep)
    assert rc == 2 and time.monotonic() - start < 30
    assert "the pod for the workspace volume did not start within" in err and "in use by other-job-7f9c2-q8w2r" in err
    assert "--no-sync" in err and "Traceback" not in err
    assert cluster.argvs()[-1][:4] == ["delete", "--namespace=team-a", "pod", "train-sync"]  # not left behind
    assert _jobs(cluster) == []


def test_a_snapshot_gone_from_the_volume_is_uploaded_again_whole(cluster, capsys):
    _, _, first = _submit(cluster, capsys)
    shutil.rmtree(cluster.volume / ".runs" / _snapshot(first))
    (cluster.dep / "workspace" / "main.py").write_text("print('v2')\n")
    out, err, job = _submit(cluster, capsys)
    assert f"snapshot {_snapshot(first)} is not (all) on the volume any more; uploading all of workspace/" in err
    assert sorted(_sent(cluster)) == ["main.py", "main.py", "utils.py"]  # the changed file, then everything
    snap = cluster.volume / ".runs" / _snapshot(job)
    assert (snap / "main.py").read_text() == "print('v2')\n" and (snap / "utils.py").read_text() == "SCALE = 1\n"


def test_a_volume_created_again_gets_a_whole_new_snapshot(cluster, capsys):
    _, _, first = _submit(cluster, capsys)
    pvc = str(cluster.dep / "manifests" / "persistentvolumeclaim.yaml")
    env = {**os.environ, **cluster.env}
    for verb in ("delete", "apply"):
        subprocess.run(["oc", verb, "-f", pvc], env=env, check=True, capture_output=True)
    shutil.rmtree(cluster.volume / ".runs")
    out, _, job = _submit(cluster, capsys)
    assert _snapshot(job) != _snapshot(first)
    assert f"snapshot {_snapshot(first)} was on a volume that has been replaced since" in out
    assert sorted(_sent(cluster)) == ["main.py", "utils.py"]


def test_an_empty_workspace_runs_what_is_in_the_working_directory(cluster, capsys):
    for f in ("main.py", "utils.py"):
        (cluster.dep / "workspace" / f).unlink()
    out, err, job = _submit(cluster, capsys)
    assert "workspace/ is empty: the job runs what is on the volume in /workspace/train" in err
    assert cluster.verbs() == ["get", "get", "create"] and _container(job)["workingDir"] == "/workspace/train"
    assert "mlshift.io/snapshot" not in job["metadata"]["labels"]


# --------------------------------------------------------------------------- the record
@pytest.mark.parametrize("text", ["not json", "[]", '{"team-a": 1}', '{"team-a": {"id": "x; rm -rf /", "volume": "", '
                                  '"at": 0, "files": {}}}', '{"team-a": {"id": "250102-130405-k3x9", "volume": "uid-1", '
                                  '"at": 0, "files": {"../../etc/passwd": ["' + "0" * 64 + '", 1, 0, 0, 0]}}}',
                                  "[" * 100_000])
def test_a_damaged_record_means_everything_is_uploaded_again(cluster, capsys, text):
    record = cluster.dep / ".mlshift" / "snapshots.json"
    record.parent.mkdir(exist_ok=True)
    record.write_text(text)
    out, err, job = _submit(cluster, capsys)
    assert "all 2 files" in out and "Traceback" not in err
    assert json.loads(record.read_text())["team-a"]["id"] == _snapshot(job)


def test_a_linked_record_is_refused_before_anything_happens(cluster, capsys, tmp_path):
    victim = tmp_path / "victim.json"
    victim.write_text("precious\n")
    (cluster.dep / ".mlshift").mkdir(exist_ok=True)
    (cluster.dep / ".mlshift" / "snapshots.json").symlink_to(victim)
    cluster.reset()
    rc, _, err = cluster.verb(capsys, "submit", cluster.dep)
    assert rc == 2 and "is a symbolic link" in err and err.count("\n") <= 2
    assert cluster.calls() == [] and victim.read_text() == "precious\n"


# --------------------------------------------------------------------------- why a pod waits for a volume
def test_multi_attach_is_said_in_words():
    from wizard.ops import diagnose

    pod = {"metadata": {"name": "train-sync"}, "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]}}
    event = {"reason": "FailedAttachVolume", "involvedObject": {"name": "train-sync"},
             "message": 'Multi-Attach error for volume "pvc-1" Volume is already used by pod(s) train-250102-130405-k3x9-q8w2r'}
    (problem,) = diagnose.pod_problems(pod, {"items": [event]})
    assert not problem.fatal and "in use by train-250102-130405-k3x9-q8w2r" in problem.summary
    event["message"] = 'Multi-Attach error for volume "pvc-1" Volume is already exclusively attached to one node and can\'t be attached to another'
    (problem,) = diagnose.pod_problems(pod, {"items": [event]})
    assert problem.summary.startswith("waiting for the workspace volume: it is attached to another node (ReadWriteOnce")
    summary, _ = diagnose.scheduling_hint("0/3 nodes are available: 3 node has pod using PersistentVolumeClaim with the same "
                                          "name and ReadWriteOncePod access mode.")
    assert summary.startswith("the workspace volume is in use by another pod (ReadWriteOncePod")


# --------------------------------------------------------------------------- size
def test_one_change_in_a_workspace_of_500_files_uploads_one_file(cluster, capsys):
    ws = cluster.dep / "workspace"
    for i in range(500):
        (ws / f"pkg{i % 10}" / f"m{i}.py").parent.mkdir(exist_ok=True)
        (ws / f"pkg{i % 10}" / f"m{i}.py").write_text(f"X = {i}\n" * 50)
    _submit(cluster, capsys)
    (ws / "pkg3" / "m13.py").write_text("X = -1\n")
    start = time.monotonic()
    out, _, job = _submit(cluster, capsys)
    took = time.monotonic() - start
    assert _sent(cluster) == ["pkg3/m13.py"] and "1 of 502 files changed" in out
    snap = cluster.volume / ".runs" / _snapshot(job)
    assert sum(1 for p in snap.rglob("*") if p.is_file() and not p.is_symlink()) == 502
    assert hashlib.sha256((snap / "pkg3" / "m13.py").read_bytes()).hexdigest() == hashlib.sha256(b"X = -1\n").hexdigest()
    print(f"\n500-file workspace, one change: submitted in {took:.2f}s")
    assert took < 30


def test_an_application_that_runs_no_code_from_workspace_makes_no_snapshot(tmp_path, monkeypatch, capsys):
    c = Cluster(tmp_path, monkeypatch)
    dep = c.new("batch", "application.type=batch_inference", "application.execution.mode=job", "inference.model=tiny-model",
                "inference.engine=transformers",
                "deployment.namespace=team-a")
    (dep / "workspace" / "notes.txt").write_text("not code\n")
    c.seed(dep)
    rc, out, err = c.verb(capsys, "submit", dep, "--no-sync")
    assert rc == 0, err
    assert "does not run code from workspace/; there is nothing to upload" in err
    assert c.verbs() == ["get", "get", "create"] and "mlshift.io/snapshot" not in _jobs(c)[0]["metadata"]["labels"]
