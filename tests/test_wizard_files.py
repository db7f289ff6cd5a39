"""What the wizard may do to files: only its own, only inside the deployment, only when asked.

Its state file, the folders of a deployment (which a user may replace with links) and the
staging folders of earlier runs are all input; none of them makes the wizard write or remove
anything outside the deployment, or anything the user made.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, run_wizard

sys.path.insert(0, str(Path(__file__).parent))
from fake_oc.harness import Cluster  # noqa: E402

STATE = ".mlshift/state.json"


def new(deployments: Path, name: str = "demo", *sets: str) -> Path:
    result = run_wizard("new", name, "--defaults", "--deployments-dir", str(deployments),
                        *[a for s in sets for a in ("--set", s)])
    assert result.returncode == 0, result.stderr
    return deployments / name


def tree(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: its kind, bytes (or link target) and mtime; what any write changes."""
    out: dict[str, tuple] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        if path.is_symlink():
            out[str(path.relative_to(root))] = ("link", os.readlink(path), info.st_mtime_ns)
        elif path.is_dir():
            out[str(path.relative_to(root))] = ("dir", None, info.st_mtime_ns)
        else:
            out[str(path.relative_to(root))] = ("file", path.read_bytes(), info.st_mtime_ns, info.st_mode)
    return out


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def set_state(target: Path, files: dict[str, str]) -> None:
    state = json.loads((target / STATE).read_text())
    state["files"].update(files)
    (target / STATE).write_text(json.dumps(state))


def edit(path: Path, old: str, new_text: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new_text))


def reported(stdout: str, status: str) -> list[str]:
    """The paths that a render or new reported with ``status`` (created, removed, left, ignored, ...)."""
    return [line.split()[1] for line in stdout.splitlines() if line.startswith("  ") and line.split()[0] == status]


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


# --------------------------------------------------------------------------- the state file
@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file of the user's, outside the deployment."""
    path = tmp_path / "outside-files" / "victim.yaml"
    path.parent.mkdir()
    path.write_text("precious: true\n")
    return path


@pytest.mark.parametrize("spelling", ["absolute", "parent", "inner-parent"])
@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_a_state_file_naming_a_file_outside_the_deployment_removes_nothing(deployments, victim, spelling, force):
    target = new(deployments)
    rel = {"absolute": str(victim), "parent": os.path.relpath(victim, target),
           "inner-parent": "manifests/" + os.path.relpath(victim, target / "manifests")}[spelling]
    set_state(target, {rel: sha(victim.read_bytes())})
    result = run_wizard("render", str(target), *(["--force"] if force else []))
    assert result.returncode == 0, result.stderr
    assert victim.read_text() == "precious: true\n"
    assert reported(result.stdout, "removed") == []
    notes = [line for line in result.stdout.splitlines() if "state.json" in line]
    assert len(notes) == 1 and notes[0].split()[0] == "ignored" and "outside the deployment" in notes[0], result.stdout
    assert rel not in json.loads((target / STATE).read_text())["files"]  # said once, then dropped
    assert "state.json" not in run_wizard("render", str(target)).stdout


def test_a_read_only_verb_never_removes_what_the_state_file_names(tmp_path, monkeypatch, victim):
    cluster = Cluster(tmp_path, monkeypatch)
    target = cluster.server()
    set_state(target, {str(victim): sha(victim.read_bytes()), "manifests/../../../outside-files/victim.yaml": sha(victim.read_bytes())})
    before = tree(target)
    result = cluster.script(target, "status.sh")
    assert result.returncode == 0, result.stderr
    assert victim.read_text() == "precious: true\n" and tree(target) == before
    assert "no longer needed" not in result.stdout + result.stderr


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_a_file_no_longer_generated_is_removed_only_while_it_is_as_the_wizard_wrote_it(deployments, force):
    target = new(deployments, "srv", "application.type=model_server", "inference.enabled=true",
                 "inference.route.enabled=true", "inference.model=tiny", "inference.engine=transformers")
    route = target / "manifests" / "route.yaml"
    route.write_text(route.read_text() + "# mine\n")
    edit(target / "config.yaml", "route:\n    enabled: true", "route:\n    enabled: false")
    result = run_wizard("render", str(target), *(["--force"] if force else []))
    assert result.returncode == 0, result.stderr
    assert route.read_text().endswith("# mine\n")
    assert reported(result.stdout, "left") == ["manifests/route.yaml"] and "you edited it" in result.stdout
    # unedited, it goes
    route.write_text(route.read_text().removesuffix("# mine\n"))
    result = run_wizard("render", str(target))
    assert "removed   manifests/route.yaml" in result.stdout and not route.exists()


def test_a_link_the_state_file_names_is_left_alone(deployments, victim):
    target = new(deployments, "srv", "application.type=model_server", "inference.enabled=true",
                 "inference.route.enabled=true", "inference.model=tiny", "inference.engine=transformers")
    route = target / "manifests" / "route.yaml"
    route.unlink()
    route.symlink_to(victim)
    set_state(target, {"manifests/route.yaml": sha(victim.read_bytes())})
    edit(target / "config.yaml", "route:\n    enabled: true", "route:\n    enabled: false")
    result = run_wizard("render", str(target), "--force")
    assert result.returncode == 0, result.stderr
    assert route.is_symlink() and victim.read_text() == "precious: true\n"
    assert reported(result.stdout, "left") == ["manifests/route.yaml"] and "is a symbolic link" in result.stdout


HOSTILE_STATES = {
    "not-json": b"{files: oops",
    "not-utf8": b"\xff\xfe{}",
    "a-list": b"[1, 2]",
    "deeply-nested": b"[" * 100_000,
    "files-a-list": b'{"files": ["manifests/route.yaml"]}',
    "hash-not-text": b'{"files": {"manifests/deployment.yaml": 5}}',
    "hash-not-sha256": b'{"files": {"manifests/deployment.yaml": "abc"}}',
    "nul-in-path": b'{"files": {"manifests/a\\u0000.yaml": "' + b"0" * 64 + b'"}}',
    "a-folder": b'{"files": {"manifests": "' + b"0" * 64 + b'"}}',
    "not-the-wizards": b'{"files": {".git/config": "' + b"0" * 64 + b'"}}',
}


@pytest.mark.parametrize("content", HOSTILE_STATES.values(), ids=HOSTILE_STATES.keys())
def test_a_malformed_state_file_is_one_note_never_a_traceback(deployments, content):
    target = new(deployments)
    (target / STATE).write_bytes(content)
    (target / ".git").mkdir()
    (target / ".git" / "config").write_text("[core]\n")
    edit(target / "config.yaml", "gpus: 0", "gpus: 1")
    result = run_wizard("render", str(target), "--force")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    notes = [line for line in result.stdout.splitlines() if "state.json" in line]
    assert len(notes) == 1 and notes[0].split()[0] == "ignored", result.stdout
    assert (target / "manifests").is_dir() and (target / ".git" / "config").is_file()
    assert reported(result.stdout, "removed") == []
    json.loads((target / STATE).read_text())  # written again, whole
    assert "state.json" not in run_wizard("render", str(target)).stdout


def test_deploy_reads_a_hostile_build_state_and_never_writes_through_a_link(tmp_path, monkeypatch, capsys, victim):
    cluster = Cluster(tmp_path, monkeypatch)
    dep = cluster.server()
    build_state = dep / ".mlshift" / "build.json"
    build_state.write_text("[" * 100_000)
    rc, _, err = cluster.verb(capsys, "deploy", dep, "--no-wait")
    assert rc == 0, err
    assert json.loads(build_state.read_text())  # written again, whole
    build_state.unlink()
    build_state.symlink_to(victim)
    cluster.reset()
    rc, _, err = cluster.verb(capsys, "deploy", dep, "--no-wait", "--build=always")
    assert rc == 2 and err.strip().splitlines() == [line for line in err.splitlines() if line.startswith("error: ")]
    assert "llm/.mlshift/build.json is a symbolic link" in err
    assert victim.read_text() == "precious: true\n" and build_state.is_symlink()
    assert cluster.calls() == []  # refused before anything happened


# --------------------------------------------------------------------------- read-only verbs
SERVER_VERBS = {
    "status": [], "logs": [], "delete": [], "exec": ["--", "true"], "run-app": [], "test-inference": [],
    "bench": ["--num-requests", "2", "--concurrency", "1"], "sync": [],
}
JOB_VERBS = {"submit": [], "watch": [], "jobs": [], "sweep": [], "compare": [], "logs": [],
             "run-local": ["--python", sys.executable]}
FOREGROUND_SCRIPTS = ["port-forward.sh", "jupyter.sh", "vscode.sh"]  # they run until stopped


def _edited_server(cluster: Cluster) -> Path:
    """A deployed server whose config.yaml and route.yaml were both edited since the last render."""
    dep = cluster.server("llm", "inference.route.enabled=true")
    cluster.seed(dep, "deployment", "service")
    route = dep / "manifests" / "route.yaml"
    route.write_text(route.read_text() + "# mine\n")
    edit(dep / "config.yaml", "max_queue: 256", "max_queue: 512")
    return dep


def _edited_job(cluster: Cluster, capsys) -> Path:
    dep = cluster.job("train", "experiment.sweep={parameters: {lr: [0.1, 0.01]}}")
    cluster.seed(dep)
    assert cluster.verb(capsys, "submit", dep)[0] == 0
    job = dep / "manifests" / "job.yaml"
    job.write_text(job.read_text() + "# mine\n")
    edit(dep / "config.yaml", "gpus: 0", "gpus: 1")
    return dep


@pytest.mark.parametrize("verb", SERVER_VERBS)
def test_read_only_verbs_on_a_server_change_no_file(tmp_path, monkeypatch, capfd, verb):
    cluster = Cluster(tmp_path, monkeypatch)
    dep = _edited_server(cluster)
    before = tree(dep)
    for _ in range(2):
        rc, out, err = cluster.verb(capfd, verb, dep, *SERVER_VERBS[verb])
        assert rc == 0, err
        assert tree(dep) == before
        assert "you edited" not in err and "Traceback" not in err


@pytest.mark.parametrize("verb", JOB_VERBS)
def test_read_only_verbs_on_jobs_change_no_file(tmp_path, monkeypatch, capfd, verb):
    cluster = Cluster(tmp_path, monkeypatch)
    dep = _edited_job(cluster, capfd)
    before = tree(dep)
    for _ in range(2):
        rc, out, err = cluster.verb(capfd, verb, dep, *JOB_VERBS[verb])
        assert rc == 0, err
        assert tree(dep) == before
        assert "you edited" not in err and "Traceback" not in err


@pytest.mark.parametrize("script", FOREGROUND_SCRIPTS)
def test_foreground_verbs_change_no_file(tmp_path, monkeypatch, script):
    cluster = Cluster(tmp_path, monkeypatch)
    dep = _edited_server(cluster)
    before = tree(dep)
    proc = subprocess.Popen([str(dep / "scripts" / script)], cwd=cluster.elsewhere, env={**os.environ, **cluster.env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None and "port-forward" not in cluster.verbs():
            time.sleep(0.05)
        assert "port-forward" in cluster.verbs(), proc.stderr.read() if proc.poll() is not None else "no port-forward"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert tree(dep) == before
    assert "you edited" not in err and "Traceback" not in err


def test_deploy_and_render_are_what_write(tmp_path, monkeypatch, capsys):
    cluster = Cluster(tmp_path, monkeypatch)
    dep = _edited_server(cluster)
    rc, _, err = cluster.verb(capsys, "deploy", dep, "--build=never", "--no-wait")
    assert rc == 0, err
    assert "you edited manifests/route.yaml" in err and (dep / "manifests" / "route.yaml.new").is_file()
    assert "max_queue: 512" in (dep / "manifests" / "configmap.yaml").read_text()
    before = tree(dep)
    assert run_wizard("render", str(dep)).returncode == 0
    assert tree(dep) == before  # up to date: not even the state file is written again


# --------------------------------------------------------------------------- links
@pytest.mark.parametrize("folder", ["scripts", "manifests", ".mlshift"])
@pytest.mark.parametrize("command", ["render", "render --force", "new"])
def test_a_folder_replaced_by_a_link_is_refused_and_nothing_is_written(deployments, tmp_path, folder, command):
    target = new(deployments)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.rename(target / folder, tmp_path / "moved")
    (target / folder).symlink_to(outside, target_is_directory=True)
    edit(target / "config.yaml", "gpus: 0", "gpus: 1")
    before_target, before_outside = tree(target), tree(outside)
    if command == "new":
        result = run_wizard("new", "demo", "--set", "resources.cpu=2", "--deployments-dir", str(deployments))
    else:
        result = run_wizard(*command.split(), str(target))
    assert_one_line_error(result, f"demo/{folder} is a symbolic link", "wrote none")
    assert tree(outside) == before_outside == {}
    assert tree(target) == before_target


@pytest.mark.parametrize("rel,force", [(rel, force) for rel in ("manifests/deployment.yaml", "scripts/deploy.sh", "README.md", STATE)
                                       for force in (False, True)] + [("manifests/deployment.yaml.new", False)])
def test_a_file_replaced_by_a_link_is_refused(deployments, victim, rel, force):
    target = new(deployments)
    if rel.endswith(".new"):  # an edited manifest: its new version would go beside it
        (target / "manifests" / "deployment.yaml").write_text("# mine\n")
    else:
        (target / rel).unlink()
    (target / rel).symlink_to(victim)
    edit(target / "config.yaml", "gpus: 0", "gpus: 1")
    before = tree(target)
    result = run_wizard("render", str(target), *(["--force"] if force else []))
    assert_one_line_error(result, f"demo/{rel} is a symbolic link")
    assert (target / rel).is_symlink() and victim.read_text() == "precious: true\n"
    assert tree(target) == before


def test_deployments_folder_may_be_a_link_and_workspace_may_hold_links(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "deployments").symlink_to(real, target_is_directory=True)
    target = new(tmp_path / "deployments")
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("a,b\n")
    (target / "workspace" / "data").symlink_to(data, target_is_directory=True)
    edit(target / "config.yaml", "gpus: 0", "gpus: 1")
    before = tree(data)
    result = run_wizard("render", str(target))
    assert result.returncode == 0, result.stderr
    assert "changed   manifests/deployment.yaml" in result.stdout
    assert (real / "demo" / "manifests" / "deployment.yaml").is_file() and tree(data) == before


def test_a_workspace_that_is_a_link_is_never_written_through(deployments, tmp_path):
    target = new(deployments, "app", "application.type=single_file", "application.source.path=main.py")
    data = tmp_path / "data"
    data.mkdir()
    os.rename(target / "workspace", tmp_path / "old-workspace")
    (target / "workspace").symlink_to(data, target_is_directory=True)
    (tmp_path / "main.py").write_text("print('hi')\n")
    result = run_wizard("new", "app", "--set", "resources.gpus=1", "--deployments-dir", str(deployments), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert list(data.iterdir()) == []  # neither main.py nor workspace/.gitkeep went through the link
    assert "workspace/ is a link" in result.stdout
    assert run_wizard("render", str(target)).returncode == 0
    assert list(data.iterdir()) == []


# --------------------------------------------------------------------------- staging folders and modes
KILLED_AT_RENAME = ("import os, signal, sys; from wizard.cli import main; "
                    "os.rename = lambda *a: os.kill(os.getpid(), signal.SIGKILL); main(sys.argv[1:])")


def staging(deployments: Path) -> list[str]:
    return sorted(p.name for p in deployments.iterdir() if p.name.endswith(".tmp"))


def test_a_killed_new_leaves_a_staging_folder_that_the_next_run_removes(deployments):
    killed = subprocess.run([sys.executable, "-c", KILLED_AT_RENAME, "new", "demo", "--defaults",
                             "--deployments-dir", str(deployments)],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL
    (left,) = staging(deployments)
    assert left.startswith(".demo.") and not (deployments / "demo").exists()
    result = run_wizard("new", "other", "--defaults", "--deployments-dir", str(deployments))
    assert result.returncode == 0, result.stderr
    assert f"note: removed {left}, left behind by an interrupted run" in result.stdout
    assert staging(deployments) == []


def test_only_unlocked_staging_folders_of_the_wizard_are_removed(deployments, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine\n")
    kept = [".demo.tmp", "demo.abcd1234.tmp", ".demo.ABCD1234.tmp", ".demo.abcd1234.tmp.bak", ".in-use.abcd1234.tmp"]
    for name in kept:
        (deployments / name).mkdir()
        (deployments / name / "file").write_text("x\n")
    (deployments / ".link.abcd1234.tmp").symlink_to(outside, target_is_directory=True)
    kept.append(".link.abcd1234.tmp")
    (deployments / ".stale.abcd1234.tmp").mkdir()
    fd = os.open(deployments / ".in-use.abcd1234.tmp", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running wizard holds its own
        result = run_wizard("new", "demo", "--defaults", "--deployments-dir", str(deployments))
    finally:
        os.close(fd)
    assert result.returncode == 0, result.stderr
    assert "removed .stale.abcd1234.tmp" in result.stdout
    assert sorted(p.name for p in deployments.iterdir()) == sorted([*kept, "demo"])
    assert (outside / "keep.txt").read_text() == "mine\n"


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_new_folders_and_files_follow_the_umask(deployments, umask):
    result = subprocess.run([sys.executable, "-m", "wizard", "new", "demo", "--defaults", "--deployments-dir", str(deployments)],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                            preexec_fn=lambda: os.umask(umask))
    assert result.returncode == 0, result.stderr
    target = deployments / "demo"
    for path, mode in [(target, 0o777), (target / "manifests", 0o777), (target / "scripts" / "deploy.sh", 0o755),
                       (target / "manifests" / "deployment.yaml", 0o644), (target / STATE, 0o644)]:
        assert oct(path.stat().st_mode & 0o777) == oct(mode & ~umask), path
