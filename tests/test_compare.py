"""compare-experiments.sh: real W&B offline runs (written here by the installed ``wandb``, offline) and
run records of the shared contract, compared from a folder (``--from``) and from the volume through
the recording oc; the table, CSV, JSON, PNG and HTML; nothing to compare; a metric no run has."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from fake_oc.harness import Cluster  # noqa: E402

SWEEP = "251130-031200-ab12"
OLDER = "251129-090000-zz99"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Three trials of SWEEP logged with wandb (offline): loss = (1 + 10 lr) / (step + 1), acc = 0.5 + lr * step.
WANDB_SCRIPT = r"""
import json, os, sys, wandb
for trial in json.loads(sys.argv[1]):
    run = wandb.init(project="lr-sweep", id=trial["id"], name=trial["name"], group=trial["group"],
                     job_type="sweep-trial", config=trial["config"], reinit="finish_previous")
    for step in range(6):
        lr = trial["config"]["lr"]
        wandb.log({"loss": (1 + 10 * lr) / (step + 1), "acc": 0.5 + lr * step})
    run.finish()
"""
TRIALS = [
    {"id": f"{SWEEP}-000", "name": "train-lr=0.1,bs=16", "group": SWEEP, "config": {"lr": 0.1, "bs": 16, "epochs": 5}},
    {"id": f"{SWEEP}-001", "name": "train-lr=0.01,bs=16", "group": SWEEP, "config": {"lr": 0.01, "bs": 16, "epochs": 5}},
    {"id": f"{SWEEP}-002", "name": "train-lr=0.001,bs=32", "group": SWEEP, "config": {"lr": 0.001, "bs": 32, "epochs": 5}},
]


def write_wandb_runs(root: Path, trials: list[dict]) -> None:
    """Real offline runs, written by the installed wandb in a process of their own, into root/wandb/."""
    pytest.importorskip("wandb", reason="wandb is part of the runtime extra (installed by make test)")
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(root), "WANDB_SILENT": "true"}
    done = subprocess.run([sys.executable, "-c", WANDB_SCRIPT, json.dumps(trials)], env=env, cwd=root,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]


def write_record(results: Path, run_id: str, *, params: dict, losses: list[float] | None, accs: list[float] | None = None,
                 state: str = "finished", sweep: str = SWEEP, started: str = "2025-11-30T03:12:00Z",
                 finished: str | None = "2025-11-30T03:24:04Z") -> Path:
    """One run's record folder, as the contract says: run.json, metrics.jsonl, stdout.log."""
    folder = results / run_id
    folder.mkdir(parents=True)
    index = int(run_id.rsplit("-", 1)[1])
    record = {"id": run_id, "name": "train-" + ",".join(f"{k}={v}" for k, v in params.items()), "group": sweep,
              "job_type": "sweep-trial", "params": params, "sweep": sweep, "index": index, "state": state,
              "started": started, "finished": finished,
              "exit_code": None if state == "running" else (0 if state == "finished" else 1)}
    (folder / "run.json").write_text(json.dumps(record))
    if losses is not None:
        rows = []
        for step, loss in enumerate(losses):
            row = {"_step": step, "_time": 1764472320 + step, "loss": loss}
            if accs:
                row["acc"] = accs[step]
            rows.append(json.dumps(row))
        (folder / "metrics.jsonl").write_text("\n".join(rows) + "\n" + '{"_step": 99, "loss": 0.0')  # a torn last line
    (folder / "stdout.log").write_text("loss=0.9\n")
    return folder


def write_records(results: Path) -> None:
    # two trials only in records; trial 000 has a record too, with no metrics (W&B's offline run has them)
    write_record(results, f"{SWEEP}-003", params={"lr": 0.003, "bs": 32},
                 losses=[0.9, 0.4, 0.12, 0.15], accs=[0.6, 0.7, 0.72, 0.71])
    write_record(results, f"{SWEEP}-004", params={"lr": 0.03, "bs": 16}, losses=[1.2, 0.8], accs=[0.55, 0.58],
                 state="failed", finished="2025-11-30T03:14:30Z")
    write_record(results, f"{SWEEP}-000", params={"lr": 0.1, "bs": 16}, losses=None)
    write_record(results, f"{OLDER}-000", params={"lr": 1.0}, losses=[0.01], sweep=OLDER)  # an older sweep


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    """Offline W&B runs (wandb/offline-run-*) and records (results/<id>/) in one folder."""
    root = tmp_path_factory.mktemp("runs")
    write_wandb_runs(root, TRIALS)
    write_records(root / "results")
    return root


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    c = Cluster(tmp_path, monkeypatch)
    c.dep = c.job()
    data = yaml.safe_load((c.dep / "config.yaml").read_text())
    data["experiment"]["sweep"] = {"parameters": {"lr": [0.1, 0.01], "bs": [16, 32]}, "metric": "loss", "goal": "minimize"}
    (c.dep / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    c.seed(c.dep)
    return c


def _table(out: str) -> list[list[str]]:
    """The rows of the printed table (after the header lines): the mark ("*" or ""), then the cells."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if "RUN" in line and "STATE" in line)
    rows = []
    for line in lines[start + 1:]:
        if not re.match(r"^[ *] ", line):
            break
        rows.append([line[0].strip(), *line[1:].split()])
    return rows


def _jobs(cluster, sweep: str, count: int) -> list[str]:
    """Jobs of a sweep as the cluster holds them (labelled like submit's), created in the recording
    oc directly: what compare reads of them does not depend on how they were submitted."""
    names, items = [], []
    for i in range(count):
        sub = f"{sweep[:-4]}{i:04d}"
        labels = {"app.kubernetes.io/instance": "train", "app.kubernetes.io/component": "job",
                  "mlshift.io/submission": sub, "mlshift.io/sweep": sweep}
        names.append(f"train-{sub}")
        items.append({"apiVersion": "batch/v1", "kind": "Job",
                      "metadata": {"name": names[-1], "labels": labels,
                                   "annotations": {"mlshift.io/parameters": json.dumps({"lr": 10.0 ** -(i + 1)})}},
                      "spec": {"template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "app"}]}}}})
    subprocess.run([str(Path(__file__).parent / "fake_oc" / "oc"), "create", "-f", "-"], check=True, capture_output=True,
                   input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}), text=True,
                   env={**os.environ, **cluster.env})
    cluster.reset()
    return names


def _ids(rows: list[list[str]]) -> list[str]:
    return [next(c for c in r if c.startswith((SWEEP, OLDER))) for r in rows]


# --------------------------------------------------------------------------- --from: the table
def test_from_a_folder_ranks_offline_runs_and_records_together_lowest_first(cluster, capsys, runs_dir):
    rc, out, err = cluster.verb(capsys, "compare", cluster.dep, "--from", str(runs_dir))
    assert rc == 0, err
    assert cluster.calls() == []  # no cluster
    head = out.splitlines()[0]
    assert head.startswith(f"Sweep {SWEEP}: 5 runs (") and "ranked by the best loss each reached, lowest first" in head
    assert "from records" in head and "from W&B offline runs" in head
    rows = _table(out)
    # the newest sweep only; trial 000 is one run (its record completed by its W&B run)
    assert _ids(rows) == [f"{SWEEP}-003", f"{SWEEP}-002", f"{SWEEP}-001", f"{SWEEP}-000", f"{SWEEP}-004"]
    assert rows[0][0] == "*" and all(r[0] != "*" for r in rows[1:])  # the best run marked
    header = next(line for line in out.splitlines() if "RUN" in line)
    assert header.split()[:4] == ["RUN", "lr", "bs", "STATE"]  # only what differs: epochs is the same everywhere
    assert "epochs" not in out
    best = rows[0]
    assert best[1:5] == [f"{SWEEP}-003", "0.003", "32", "finished"] and best[5] == "12m04s"
    assert best[6:8] == ["0.15", "0.12"]  # loss: final, best
    failed = rows[-1]
    assert failed[4] == "failed" and failed[5] == "2m30s"
    assert f"best: {SWEEP}-003 (lr=0.003, bs=32): loss 0.12 at step 2 (final 0.15)" in out


def test_the_goal_max_ranks_highest_first_and_marks_that_run(cluster, capsys, runs_dir):
    rc, out, err = cluster.verb(capsys, "compare", cluster.dep, "--from", str(runs_dir), "--metric", "acc", "--goal", "max")
    assert rc == 0, err
    rows = _table(out)
    assert _ids(rows)[0] == f"{SWEEP}-000" and rows[0][0] == "*"  # acc 0.5 + 0.1 * 5 = 1.0
    assert "ranked by the best acc each reached, highest first" in out.splitlines()[0]
    assert "loss" not in out.splitlines()[1]  # --metric names what is shown


def test_sweep_chooses_an_older_one_and_all_shows_every_run(cluster, capsys, runs_dir):
    rc, out, _ = cluster.verb(capsys, "compare", cluster.dep, "--from", str(runs_dir), "--sweep", OLDER)
    assert rc == 0 and _ids(_table(out)) == [f"{OLDER}-000"]
    rc, out, _ = cluster.verb(capsys, "compare", cluster.dep, "--from", str(runs_dir), "--sweep", "all")
    assert rc == 0 and len(_table(out)) == 6


# --------------------------------------------------------------------------- --csv, --json, --plot, --html
def test_csv_has_a_row_per_run_ranked_with_params_and_final_and_best(cluster, capsys, runs_dir, tmp_path):
    path = tmp_path / "out" / "runs.csv"
    rc, out, err = cluster.verb(capsys, "compare", cluster.dep, "--from", str(runs_dir), "--csv", str(path))
    assert rc == 0, err
    assert f"wrote {path}" in out
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert [r["run"] for r in rows][:2] == [f"{SWEEP}-003", f"{SWEEP}-002"]
    first = rows[0]
    assert first["rank"] == "1" and first["lr"] == "0.003" and first["bs"] == "32" and first["state"] == "finished"
    assert float(first["loss.final"]) == 0.15 and float(first["loss.best"]) == 0.12 and first["loss.best_step"] == "2"
    assert first["duration_s"] == "724.0" and first["source"] == "record"
    w = next(r for r in rows if r["run"] == f"{SWEEP}-000")
    assert w["source"] == "record+wandb offline" and w["epochs"] == "5"  # every parameter in the CSV
    assert float(w["loss.final"]) == pytest.approx(2 / 6) and w["loss.best_step"] == "5"


def test_json_to_stdout(cluster, capsys, runs_dir):
    rc, out, err = cluster.verb(capsys, "compare", cluster.dep, "--from", str(runs_dir), "--json")
    assert rc == 0, err
    data = json.loads(out)  # nothing but JSON on stdout
    assert data["best"] == f"{SWEEP}-003" and data["metric"] == "loss" and data["goal"] == "min"
    assert data["params"] == ["lr", "bs"]
    assert len(data["runs"]) == 5
    run = data["runs"][0]
    assert run["rank"] == 1 and run["metrics"]["loss"]["best"] == 0.12 and run["metrics"]["loss"]["final"] == 0.15
    assert run["history"]["loss"] == [[0, 0.9], [1, 0.4], [2, 0.12], [3, 0.15]]
    w = next(r for r in data["runs"] if r["id"] == f"{SWEEP}-002")
    assert w["params"] == {"lr": 0.001, "bs": 32, "epochs": 5} and w["state"] == "finished"
    assert [s for s, _ in w["history"]["loss"]] == [0, 1, 2, 3, 4, 5]
    assert w["metrics"]["acc"]["goal"] == "max" and w["metrics"]["loss"]["goal"] == "min"


def test_plot_is_a_real_png(cluster, capsys, runs_dir, tmp_path):
    from matplotlib.image import imread

    path = tmp_path / "sweep.png"
    rc, out, err = cluster.verb(capsys, "compare", cluster.dep, "--from", str(runs_dir), "--plot", str(path))
    assert rc == 0, err
    assert path.read_bytes()[:8] == PNG_MAGIC
    pixels = imread(str(path))
    assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 600  # three panels: steps, lr, bs


def test_html_is_one_self_contained_page_with_the_table_and_the_plot(cluster, capsys, runs_dir, tmp_path):
    path = tmp_path / "report.html"
    rc, out, err = cluster.verb(capsys, "compare", cluster.dep, "--from", str(runs_dir), "--html", str(path))
    assert rc == 0, err
    page = path.read_text()
    assert not re.search(r"https?://", page)  # nothing fetched from the network
    assert re.findall(r'\b(?:src|href)="([^"]*)"', page) and all(
        u.startswith("data:") for u in re.findall(r'\b(?:src|href)="([^"]*)"', page))
    assert '<table id="runs">' in page and f"<td>{SWEEP}-003</td>" in page and 'class="best"' in page
    (data,) = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert base64.b64decode(data)[:8] == PNG_MAGIC


# --------------------------------------------------------------------------- nothing, or a metric no run has
def test_nothing_to_compare_is_one_line(cluster, capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, out, err = cluster.verb(capsys, "compare", cluster.dep, "--from", str(empty), "--plot", str(tmp_path / "x.png"))
    assert rc == 0, err
    assert out == (f"Nothing to compare in {empty}: no run records (results/*/run.json) and no W&B offline runs "
                   "(wandb/offline-run-*).\n")
    assert not (tmp_path / "x.png").exists()
    rc, out, _ = cluster.verb(capsys, "compare", cluster.dep)  # on the cluster: no records, no jobs
    assert rc == 0 and out == "Nothing to compare: no runs of train in team-a (no run records on the volume, no jobs).\n"


def test_a_metric_no_run_has_names_those_they_have(cluster, capsys, runs_dir):
    rc, out, err = cluster.verb(capsys, "compare", cluster.dep, "--from", str(runs_dir), "--metric", "val_loss")
    assert rc == 2 and out == ""
    assert err == ("error: no run has the metric 'val_loss'; the metrics the runs have: acc, loss "
                   "(pass one of them with --metric NAME)\n")


def test_a_configured_metric_no_run_has_is_a_note_and_the_table_is_shown(cluster, capsys, runs_dir):
    data = yaml.safe_load((cluster.dep / "config.yaml").read_text())
    data["experiment"]["sweep"]["metric"] = "final_loss"
    (cluster.dep / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    rc, out, err = cluster.verb(capsys, "compare", cluster.dep, "--from", str(runs_dir))
    assert rc == 0
    assert "note: no run has the metric 'final_loss'; the metrics the runs have: acc, loss" in err
    assert "no metric to rank by" in out.splitlines()[0] and len(_table(out)) == 5
    assert all(r[0] != "*" for r in _table(out))


# --------------------------------------------------------------------------- the W&B reader
def test_the_wandb_reader_is_checked_against_the_installed_wandb(runs_dir):
    """The reader of .wandb files is wandb's format, not its API: when wandb is upgraded, this file's
    tests run against runs the new version wrote, and WANDB_CHECKED says which version they passed with."""
    import wandb

    from wizard.ops.compare import WANDB_CHECKED, read_wandb_file

    assert wandb.__version__.startswith(WANDB_CHECKED + "."), (
        f"wandb {wandb.__version__} is installed; the .wandb reader was checked with {WANDB_CHECKED}: "
        "run tests/test_compare.py and, when it passes, set WANDB_CHECKED in wizard/ops/compare.py")
    (f,) = (runs_dir / "wandb").glob(f"offline-run-*-{SWEEP}-001/run-*.wandb")
    run = read_wandb_file(f)
    assert (run.id, run.name, run.group, run.sweep, run.job_type) == (
        f"{SWEEP}-001", "train-lr=0.01,bs=16", SWEEP, SWEEP, "sweep-trial")
    assert run.params == {"lr": 0.01, "bs": 16, "epochs": 5} and run.state == "finished"
    assert run.history["loss"] == [(s, pytest.approx(1.1 / (s + 1))) for s in range(6)]
    assert run.started and run.finished and run.finished >= run.started


def test_a_run_still_writing_is_read_up_to_its_last_whole_record(runs_dir, tmp_path):
    from wizard.ops.compare import read_wandb_file

    (f,) = (runs_dir / "wandb").glob(f"offline-run-*-{SWEEP}-002/run-*.wandb")
    data = f.read_bytes()
    torn = tmp_path / "run-torn.wandb"
    torn.write_bytes(data[: len(data) * 2 // 3])
    run = read_wandb_file(torn)
    assert run.state == "running" and 0 < len(run.history["loss"]) < 6


def test_job_logs_give_named_metrics_and_katib_lines():
    from wizard.ops.compare import log_history

    text = "epoch 1\nloss=0.5 acc=0.7\nnote: loss=0.4 seen\nFinal loss: 0.125\nloss=0.3, acc=0.8\n"
    got = log_history(text, ["Final loss"])
    assert got == {"loss": [(0, 0.5), (1, 0.3)], "acc": [(0, 0.7), (1, 0.8)], "Final loss": [(0, 0.125)]}


# --------------------------------------------------------------------------- from the volume, through oc
def _volume(cluster) -> Path:
    volume = cluster.root / "volume"
    (volume / "train").mkdir(parents=True, exist_ok=True)
    cluster.set(FAKE_OC_VOLUME=str(volume))
    return volume


def test_records_are_fetched_from_the_volume_in_a_constant_number_of_requests(cluster, capsys, runs_dir):
    volume = _volume(cluster)
    results = volume / "train" / "results"
    write_record(results, f"{SWEEP}-003", params={"lr": 0.003, "bs": 32}, losses=[0.9, 0.4, 0.12, 0.15])
    write_record(results, f"{SWEEP}-004", params={"lr": 0.03, "bs": 16}, losses=[1.2, 0.8], state="failed")
    cluster.reset()
    rc, out, err = cluster.verb(capsys, "compare", cluster.dep)
    assert rc == 0, err
    two = cluster.verbs()
    # the project; the jobs (none); the volume; the short-lived sync pod: delete, create, wait, exec, delete
    assert two == ["get", "get", "get", "delete", "create", "wait", "exec", "delete"]
    assert len(_table(out)) == 2
    assert "Starting train-sync" in err  # the sync pod's progress: not on stdout
    # W&B offline runs where the contract puts them (WANDB_DIR=/workspace/<name>/wandb/), and more records
    shutil.copytree(runs_dir / "wandb", volume / "train" / "wandb" / "wandb", ignore=shutil.ignore_patterns("*.log"))
    for i in range(5, 30):
        write_record(results, f"{SWEEP}-{i:03d}", params={"lr": 0.5 + i, "bs": 16}, losses=[2.0, 1.5 + i])
    cluster.reset()
    rc, out, err = cluster.verb(capsys, "compare", cluster.dep)
    assert rc == 0, err
    assert cluster.verbs() == two
    rows = _table(out)
    assert len(rows) == 2 + 3 + 25 and _ids(rows)[0] == f"{SWEEP}-003" and rows[0][0] == "*"
    (exec_call,) = [a for a in cluster.argvs() if a[0] == "exec"]
    assert exec_call[exec_call.index("--") + 1:][-1] == "/workspace/train"
    assert "from W&B offline runs" in out.splitlines()[0]


def test_while_a_job_runs_its_pod_reads_the_volume_and_jobs_with_records_need_no_logs(cluster, capsys):
    volume = _volume(cluster)
    names = _jobs(cluster, SWEEP, 2)  # running, in the recording oc
    for i, lr in enumerate([0.1, 0.01]):
        write_record(volume / "train" / "results", f"{SWEEP}-{i:03d}", params={"lr": lr, "bs": 16},
                     losses=[1.0, 0.5 * (2 - i)], state="running", finished=None)
    rc, out, err = cluster.verb(capsys, "compare", cluster.dep)
    assert rc == 0, err
    # the project, the jobs (running), the volume, their pods, one exec in a running job's pod; no logs
    assert cluster.verbs() == ["get", "get", "get", "get", "exec"]
    (exec_call,) = [a for a in cluster.argvs() if a[0] == "exec"]
    assert exec_call[2:5] == [f"{names[0]}-q8w2r", "-c", "app"]
    assert out.splitlines()[0].startswith(f"Sweep {SWEEP}: 2 runs (2 from records)")
    rows = _table(out)
    assert _ids(rows) == [f"{SWEEP}-001", f"{SWEEP}-000"] and all("running" in r for r in rows)


def test_jobs_without_records_fall_back_to_their_logs(cluster, capsys):
    _jobs(cluster, OLDER, 2)  # an older sweep: its logs are not read
    _jobs(cluster, SWEEP, 4)
    cluster.set(FAKE_OC_LOGS="step 1 loss=0.50\nstep 2 loss=0.25\nFinal loss: 0.125")
    rc, out, err = cluster.verb(capsys, "compare", cluster.dep, "--metric", "loss")
    assert rc == 0, err
    assert cluster.verbs().count("logs") == 4  # one per job of the sweep shown, as before records
    assert all(f"job/train-{SWEEP[:-4]}" in " ".join(a) for a in cluster.argvs() if a[0] == "logs")
    rows = _table(out)
    assert len(rows) == 4 and all(r[-2:] == ["0.125", "0.125"] for r in rows)  # the last "loss: ..." of each log
    assert rows[0][0] == "*" and "lr" in out.splitlines()[2]  # the parameters from the jobs' annotations
    assert out.splitlines()[0].startswith(f"Sweep {SWEEP}: 4 runs (4 from job logs)")


def test_dry_run_prints_the_requests_and_runs_none(cluster, capsys):
    rc, out, err = cluster.verb(capsys, "compare", cluster.dep, "--dry-run")
    assert rc == 0, err
    assert cluster.calls() == []
    assert "oc exec --namespace=team-a train-sync -- /bin/sh -c" in out and "tar -czf -" in out
    assert "oc logs --namespace=team-a 'job/<each job>'" in out


def test_wandb_api_runs_come_first_and_records_complete_them(cluster, capsys, monkeypatch):
    """The plumbing around W&B's API (the API itself needs the network: wandb_api_runs is stood in for)."""
    from wizard.ops import compare as compare_ops

    data = yaml.safe_load((cluster.dep / "config.yaml").read_text())
    data["experiment"]["tracking"] = {"enabled": True, "backend": "wandb", "mode": "online", "project": "lr-sweep"}
    (cluster.dep / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    asked = []

    def api(project, entity, group, base_url=None, most=500):
        asked.append((project, group))
        return [compare_ops.Run(id=f"{SWEEP}-000", name="train-lr=0.1", group=SWEEP, sweep=SWEEP, params={"lr": 0.1},
                                state="finished", history={"loss": [(0, 0.7), (1, 0.2)]}, sources=["wandb"])]

    monkeypatch.setattr(compare_ops, "wandb_api_runs", api)
    volume = _volume(cluster)
    write_record(volume / "train" / "results", f"{SWEEP}-000", params={"lr": 0.1}, losses=[9.0, 9.0])  # W&B's history wins
    write_record(volume / "train" / "results", f"{SWEEP}-001", params={"lr": 0.01}, losses=[0.5, 0.3])
    rc, out, err = cluster.verb(capsys, "compare", cluster.dep, "--sweep", SWEEP)
    assert rc == 0, err
    assert asked == [("lr-sweep", SWEEP)]
    assert out.splitlines()[0].startswith(f"Sweep {SWEEP}: 2 runs (1 from W&B, 1 from records)")
    assert _ids(_table(out)) == [f"{SWEEP}-000", f"{SWEEP}-001"] and _table(out)[0][-2:] == ["0.2", "0.2"]

    def down(*args, **kwargs):
        raise ConnectionError("no route to api.wandb.ai")

    monkeypatch.setattr(compare_ops, "wandb_api_runs", down)
    rc, out, err = cluster.verb(capsys, "compare", cluster.dep, "--sweep", SWEEP)
    assert rc == 0 and "note: W&B's API did not answer (ConnectionError: no route to api.wandb.ai)" in err
    assert out.splitlines()[0].startswith(f"Sweep {SWEEP}: 2 runs (2 from records)")


def test_without_the_wandb_package_offline_runs_are_named_and_records_still_compared(cluster, capsys, runs_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb.proto", None)  # as if wandb were not installed
    rc, out, err = cluster.verb(capsys, "compare", cluster.dep, "--from", str(runs_dir))
    assert rc == 0, err
    assert re.search(r"^note: 3 W&B offline run\(s\) not read \(wandb/offline-run-[^)]*-002\): "
                     r"the wandb package is not installed here \(wandb\.proto\): pip install wandb$", err, re.M), err
    assert _ids(_table(out)) == [f"{SWEEP}-003", f"{SWEEP}-004", f"{SWEEP}-000"]  # 000: a record with no metrics, last


LONG_RUN = r"""
import os, sys, wandb
run = wandb.init(project="p", id="long-run", config={"notes": "x" * 80000, "lr": 0.5})
for step in range(3000):
    wandb.log({"loss": 1.0 / (step + 1)})
run.finish()
"""


def test_a_long_run_spans_many_blocks_and_records_split_across_them(tmp_path):
    """A record longer than a 32 KiB block (the config) is split in chunks; a long history fills many blocks."""
    pytest.importorskip("wandb", reason="wandb is part of the runtime extra (installed by make test)")
    from wizard.ops.compare import BLOCK, read_wandb_file

    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}
    done = subprocess.run([sys.executable, "-c", LONG_RUN], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    (f,) = (tmp_path / "wandb").glob("offline-run-*/run-long-run.wandb")
    assert f.stat().st_size > 4 * BLOCK
    run = read_wandb_file(f)
    assert run.params == {"notes": "x" * 80000, "lr": 0.5} and run.state == "finished"
    assert len(run.history["loss"]) == 3000 and run.history["loss"][-1] == (2999, pytest.approx(1 / 3000))


def test_equal_best_values_rank_the_newest_first_as_promote_picks():
    """compare's best run and promote's pick are the same run when values tie (one ranking)."""
    from runtime.promote import pick
    from runtime.records import Run
    from wizard.ops.compare import compare_runs

    def run(i: str, finished: float, values: list[float]) -> Run:
        return Run(id=i, state="finished", started=finished - 60, finished=finished,
                   history={"val_loss": list(enumerate(values))}, model_dir=f"/models/x/{i}")

    runs = [run("a-old", 1000, [0.9, 0.5]), run("b-new", 3000, [0.5, 0.6]), run("c-mid", 2000, [0.5]),
            run("d-worse", 4000, [0.7])]
    table = compare_runs(runs, title="t", source="records", metric="val_loss", metric_given=True,
                         goal="min", shown=None, now=5000)
    assert [r.id for r in table.runs] == ["b-new", "c-mid", "a-old", "d-worse"]
    assert table.best.id == pick(runs, "val_loss", "min").run.id == "b-new"
    # a run without the metric goes last, whatever its age
    runs.append(Run(id="e-none", state="finished", finished=9000))
    table = compare_runs(runs, title="t", source="records", metric="val_loss", metric_given=True,
                         goal="min", shown=None, now=9999)
    assert table.runs[-1].id == "e-none"
