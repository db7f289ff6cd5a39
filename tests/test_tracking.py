"""Tracking (issue 14): what every run gets, the launcher (run for real, with the real wandb library
offline), experiment.tracking.mode auto, and sync-runs against the recording oc."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from fake_oc.harness import Cluster, unescape  # noqa: E402

from wizard.blueprint import LAUNCHER_FILE, WANDB_AUTO_WRAPPER, run_identity  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RUN_ID = "251130-031200-ab12"
TRACKED = ("experiment.tracking.enabled=true", "experiment.tracking.tags=[nightly, lr]")


def _launch_module():
    spec = importlib.util.spec_from_file_location("mlshift_launch", LAUNCHER_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    c = Cluster(tmp_path, monkeypatch)
    c.dep = c.job("train", *TRACKED, "experiment.tracking.base_url=https://wandb.example.com")
    c.seed(c.dep)
    return c


def _job(cluster) -> dict:
    (job,) = [o for o in cluster.created() if o["kind"] == "Job"]
    return job


def _container_env(job: dict) -> dict[str, str]:
    """The container's environment as Kubernetes makes it: labels read, $(VAR) expanded, Secrets named."""
    pod = job["spec"]["template"]
    out: dict[str, str] = {}
    for e in pod["spec"]["containers"][0]["env"]:
        if "value" in e:
            out[e["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: out.get(m[1], m[0]), e["value"])
            continue
        ref = e["valueFrom"]
        if "fieldRef" in ref:
            path = ref["fieldRef"]["fieldPath"]
            label = re.fullmatch(r"metadata\.labels\['(.+)'\]", path)
            out[e["name"]] = pod["metadata"]["labels"].get(label[1], "") if label else f"<{path}>"
        else:
            key = ref["secretKeyRef"]
            out[e["name"]] = f"<secret {key['name']}/{key['key']}{' optional' if key.get('optional') else ''}>"
    return out


# --------------------------------------------------------------------------- what every run gets
def test_a_submitted_job_gets_the_environment_of_the_contract(cluster, capsys):
    cluster.set(FAKE_OC_SECRETS="wandb-api-key")
    rc, out, err = cluster.verb(capsys, "submit", cluster.dep)
    assert rc == 0, err
    job = _job(cluster)
    sub = job["metadata"]["labels"]["mlshift.io/submission"]
    env = _container_env(job)
    assert {k: env[k] for k in env if k.startswith(("MLSHIFT_RUN", "MLSHIFT_RESULTS", "MLSHIFT_PARAMS", "WANDB_"))} == {
        "MLSHIFT_RUN": sub, "MLSHIFT_RUN_NAME": "train", "MLSHIFT_RUN_GROUP": sub,
        "MLSHIFT_RESULTS": f"/workspace/train/results/{sub}/", "MLSHIFT_PARAMS": "{}",
        "WANDB_RUN_GROUP": sub, "WANDB_JOB_TYPE": "train", "WANDB_NAME": "train", "WANDB_RUN_ID": sub,
        "WANDB_RESUME": "allow", "WANDB_PROJECT": "train", "WANDB_TAGS": "nightly,lr", "WANDB_DIR": "/workspace/train/wandb/",
        "WANDB_MODE": "online", "WANDB_BASE_URL": "https://wandb.example.com",
        "WANDB_API_KEY": "<secret wandb-api-key/WANDB_API_KEY>",
    }
    assert env["MLSHIFT_TRACKING"] == "wandb"
    # the same values as the one function that computes them (the sweep's trials use its sibling)
    assert run_identity(yaml_config(cluster.dep), sub).items() <= env.items()
    # the entry point starts through the launcher, which the ConfigMap carries next to the run's config.yaml
    spec = job["spec"]["template"]["spec"]
    command = [unescape(w) for w in spec["containers"][0]["command"]]
    snapshot = job["metadata"]["labels"]["mlshift.io/snapshot"]
    assert command == ["python3", "/etc/mlshift/launch.py", f"/workspace/.runs/{snapshot}/main.py", "--lr", "0.1"]
    (config_volume,) = [v for v in spec["volumes"] if v["name"] == "config"]
    sources = config_volume["projected"]["sources"]
    assert sources[1] == {"configMap": {"name": "train-config", "items": [{"key": "launch.py", "path": "launch.py"}]}}
    assert "mode: online" in job["spec"]["template"]["metadata"]["annotations"]["mlshift.io/config"]  # as decided
    assert "W&B tracking: online (experiment.tracking.mode auto: the Secret wandb-api-key exists)" in out
    # one more request than without tracking: the Secret, looked up once
    assert [c["argv"][2:4] for c in cluster.calls() if c["argv"][0] == "get" and "secret" in c["argv"]] == [["secret", "wandb-api-key"]]


def yaml_config(dep: Path):
    from wizard.deployment import load_deployment

    return load_deployment(dep)[1]


def test_the_configmap_carries_the_launcher_byte_for_byte_and_the_image_gets_wandb(cluster):
    cm = yaml.safe_load((cluster.dep / "manifests" / "configmap.yaml").read_text())
    assert cm["data"]["launch.py"] == LAUNCHER_FILE.read_text()
    assert 'pip install --quiet --upgrade-strategy only-if-needed "wandb>=0.17"' in (cluster.dep / "Containerfile").read_text()
    plain = cluster.job("plain")
    assert "wandb" not in (plain / "Containerfile").read_text()  # tracking off: no wandb installed
    cm = yaml.safe_load((plain / "manifests" / "configmap.yaml").read_text())
    assert "launch.py" in cm["data"]  # records are written with tracking off too


def test_a_server_has_no_launcher_and_no_run_variables(tmp_path, monkeypatch):
    c = Cluster(tmp_path, monkeypatch)
    dep = c.server("llm")
    assert "launch.py" not in yaml.safe_load((dep / "manifests" / "configmap.yaml").read_text())["data"]
    text = (dep / "manifests" / "deployment.yaml").read_text()
    assert "MLSHIFT_RUN" not in text and "launch.py" not in text


def test_a_deployment_with_mode_auto_decides_when_its_pod_starts(tmp_path, monkeypatch):
    c = Cluster(tmp_path, monkeypatch)
    dep = c.new("app", "application.execution.mode=auto_start", *TRACKED)
    deployment = yaml.safe_load((dep / "manifests" / "deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:4] == ["/bin/sh", "-c", WANDB_AUTO_WRAPPER, "mlshift-wandb"]
    names = {e["name"]: e for e in container["env"]}
    assert "WANDB_MODE" not in names and names["WANDB_API_KEY"]["valueFrom"]["secretKeyRef"]["optional"] is True
    show = ["/bin/sh", "-c", WANDB_AUTO_WRAPPER, "mlshift-wandb", "/bin/sh", "-c", 'echo "$WANDB_MODE"']
    base = {"PATH": os.environ["PATH"]}
    assert subprocess.run(show, env=base, capture_output=True, text=True).stdout == "offline\n"
    assert subprocess.run(show, env={**base, "WANDB_API_KEY": "k"}, capture_output=True, text=True).stdout == "online\n"


# --------------------------------------------------------------------------- mode auto
def test_mode_auto_without_the_secret_is_offline_and_said_once(cluster, capsys):
    rc, out, err = cluster.verb(capsys, "submit", cluster.dep)
    assert rc == 0, err
    env = _container_env(_job(cluster))
    assert env["WANDB_MODE"] == "offline" and "WANDB_API_KEY" not in env
    assert err.count("W&B tracking: offline") == 1
    assert ("no Secret wandb-api-key in team-a" in err and "sync-runs.sh" in err
            and "oc create secret generic wandb-api-key --from-literal=WANDB_API_KEY=... -n team-a" in err)


def test_mode_online_without_the_secret_is_refused_with_the_fix(cluster, capsys):
    cfg = cluster.dep / "config.yaml"
    cfg.write_text(cfg.read_text().replace("    mode: auto\n", "    mode: online\n", 1))
    rc, out, err = cluster.verb(capsys, "submit", cluster.dep)
    assert rc != 0 and "the Secret wandb-api-key (Weights & Biases API key) is missing" in err
    assert "oc create secret generic wandb-api-key --from-literal=WANDB_API_KEY=... -n team-a" in err
    assert not [o for o in cluster.created() if o["kind"] == "Job"]
    rc, out, err = cluster.verb(capsys, "deploy", cluster.dep)  # deploy refuses it as well
    assert rc != 0 and "wandb-api-key" in err and "experiment.tracking.mode: auto" in err


def test_deploy_with_mode_auto_no_longer_refuses_without_the_secret(cluster, capsys):
    rc, out, err = cluster.verb(capsys, "deploy", cluster.dep)
    assert rc == 0, err
    assert "W&B tracking: offline" in err and "Ready for jobs" in out
    secret_gets = [c["argv"] for c in cluster.calls() if "secret" in c["argv"]]
    assert len(secret_gets) == 1 and "wandb-api-key" in secret_gets[0] and "hf-token" in secret_gets[0]  # the one request
    cluster.set(FAKE_OC_SECRETS="wandb-api-key")
    rc, out, err = cluster.verb(capsys, "deploy", cluster.dep)
    assert rc == 0 and "W&B tracking: online" in out


# --------------------------------------------------------------------------- the launcher, for real
def _run_launcher(tmp_path: Path, script: str, *args: str, extra: dict | None = None, drop=("WANDB_MODE",),
                  timeout: float = 120) -> tuple[subprocess.CompletedProcess, Path]:
    (tmp_path / "train.py").write_text(script)
    results = tmp_path / "results" / RUN_ID
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "MLSHIFT_", "RANK", "LOCAL_RANK"))}
    env.update({"HOME": str(tmp_path), "PYTHONUNBUFFERED": "1", "MLSHIFT_TRACKING": "wandb", "WANDB_PROJECT": "train",
                "WANDB_TAGS": "nightly,lr", "WANDB_MODE": "offline", "WANDB_DIR": f"{tmp_path}/wandb/",
                "WANDB_RESUME": "allow", "MLSHIFT_RUN": RUN_ID, "MLSHIFT_RUN_NAME": "train", "MLSHIFT_RUN_GROUP": RUN_ID,
                "MLSHIFT_RESULTS": f"{results}/", "MLSHIFT_PARAMS": json.dumps({"lr": 0.1}), "WANDB_RUN_ID": RUN_ID,
                "WANDB_NAME": "train", "WANDB_JOB_TYPE": "train", "WANDB_RUN_GROUP": RUN_ID})
    for k in drop:
        env.pop(k, None)
    env.update(extra or {})
    done = subprocess.run([sys.executable, str(LAUNCHER_FILE), str(tmp_path / "train.py"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return done, results


WANDB_LOG_ONLY = """\
import json, sys
import wandb

for i in range(3):
    wandb.log({"loss": 1.0 / (i + 1), "note": "text is not a metric"})
print("val_acc=0.75, val_loss=0.5")
print("epoch 3 done: loss=0.1")  # not only name=value pairs: not a metric line
run = wandb.run
print("RUN " + json.dumps({"id": run.id, "name": run.name, "project": run.project, "group": run.group,
                           "job_type": run.job_type, "tags": list(run.tags), "lr": run.config["lr"],
                           "mode": run.settings.mode, "argv": sys.argv[1:]}))
sys.exit(3)
"""


def test_the_launcher_starts_the_run_and_writes_the_records(tmp_path):
    done, results = _run_launcher(tmp_path, WANDB_LOG_ONLY, "--lr", "0.1")
    assert done.returncode == 3, done.stderr[-3000:]  # the script's exit code
    # the real wandb library wrote an offline run under WANDB_DIR, with the run's id
    (run_dir,) = (tmp_path / "wandb" / "wandb").glob(f"offline-run-*-{RUN_ID}")
    assert (run_dir / f"run-{RUN_ID}.wandb").stat().st_size > 0
    # the run was started with project, name, tags and the parameters as config (auto: no key -> offline)
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("RUN "))
    seen = json.loads(line[4:])
    assert seen == {"id": RUN_ID, "name": "train", "project": "train", "group": RUN_ID, "job_type": "train",
                    "tags": ["nightly", "lr"], "lr": 0.1, "mode": "offline", "argv": ["--lr", "0.1"]}
    assert "W&B mode offline (experiment.tracking.mode auto: WANDB_API_KEY is not set)" in done.stderr
    run = json.loads((results / "run.json").read_text())
    started, finished = run.pop("started"), run.pop("finished")
    assert run == {"id": RUN_ID, "name": "train", "group": RUN_ID, "job_type": "train", "params": {"lr": 0.1},
                   "sweep": None, "index": None, "state": "failed", "exit_code": 3}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", started) and finished >= started
    metrics = [json.loads(ln) for ln in (results / "metrics.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in m.items() if k != "_time"} for m in metrics] == [
        {"_step": 0, "loss": 1.0}, {"_step": 1, "loss": 0.5}, {"_step": 2, "loss": pytest.approx(1 / 3)},
        {"_step": 3, "val_acc": 0.75, "val_loss": 0.5}]
    assert all(abs(m["_time"] - time.time()) < 600 for m in metrics)
    log = (results / "stdout.log").read_text()
    assert "val_acc=0.75, val_loss=0.5\nepoch 3 done: loss=0.1\n" in log and "wandb: Run summary:" in log


def test_a_plain_wandb_init_in_the_script_joins_the_run(tmp_path):
    script = ("import wandb\nrun = wandb.init(config={'bs': 32}, tags=['mine'])\nwandb.log({'loss': 2.0})\n"
              "print('joined', run.id, run.config['bs'], run.config['lr'], sorted(run.tags))\n")
    done, results = _run_launcher(tmp_path, script)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"joined {RUN_ID} 32 0.1 ['lr', 'mine', 'nightly']" in done.stdout
    assert len(list((tmp_path / "wandb" / "wandb").glob("offline-run-*"))) == 1
    assert json.loads((results / "run.json").read_text())["state"] == "finished"
    assert json.loads((results / "metrics.jsonl").read_text())["loss"] == 2.0


def test_under_another_rank_wandb_is_not_started_and_the_script_still_runs(tmp_path):
    done, results = _run_launcher(tmp_path, WANDB_LOG_ONLY.replace("run = wandb.run", "run = None\nsys.exit(5)"),
                                  extra={"RANK": "1", "LOCAL_RANK": "1"})
    assert done.returncode == 5, done.stderr[-3000:]  # it ran (its wandb.log calls did nothing) and kept its exit code
    assert "val_acc=0.75" in done.stdout
    assert not list(tmp_path.glob("wandb/wandb/offline-run-*")) and not results.exists()


def test_records_without_tracking_and_a_failing_script(tmp_path):
    done, results = _run_launcher(tmp_path, "def f():\n    raise ValueError('boom')\nprint('loss=1.5')\nf()\n",
                                  drop=("WANDB_MODE", "MLSHIFT_TRACKING"))
    assert done.returncode == 1
    assert "ValueError: boom" in done.stderr and "launch.py" not in done.stderr  # the script's traceback, as Python prints it
    run = json.loads((results / "run.json").read_text())
    assert run["state"] == "failed" and run["exit_code"] == 1
    assert "ValueError: boom" in (results / "stdout.log").read_text()
    assert json.loads((results / "metrics.jsonl").read_text())["loss"] == 1.5
    assert not (tmp_path / "wandb").exists()


def test_a_signal_ends_the_launcher_as_it_would_the_script_after_the_records(tmp_path):
    (tmp_path / "train.py").write_text("import time\nprint('ready', flush=True)\ntime.sleep(60)\n")
    results = tmp_path / "results" / "r1"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "MLSHIFT_"))},
           "MLSHIFT_RUN": "r1", "MLSHIFT_RESULTS": str(results)}
    proc = subprocess.Popen([sys.executable, str(LAUNCHER_FILE), str(tmp_path / "train.py")], env=env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == -signal.SIGTERM
    run = json.loads((results / "run.json").read_text())
    assert run["state"] == "failed" and run["exit_code"] == 128 + signal.SIGTERM and run["finished"]


def test_name_value_lines_are_metrics_only_when_made_of_pairs():
    launch = _launch_module()
    assert launch.metrics_of_line("loss=0.5 acc=1e-3") == {"loss": 0.5, "acc": 0.001}
    assert launch.metrics_of_line("loss = 0.5, step=3,") == {"loss": 0.5, "step": 3.0}
    for line in ("epoch 1 loss=0.5", "loss=high", "", "loss=", "=3", "lr=0.1 note"):
        assert launch.metrics_of_line(line) is None, line
    assert launch.is_main_rank({}) and launch.is_main_rank({"RANK": "0", "LOCAL_RANK": "3"})
    assert not launch.is_main_rank({"RANK": "2"}) and not launch.is_main_rank({"LOCAL_RANK": "1"})


def test_steps_of_wandb_log_and_of_stdout_lines(tmp_path):
    launch = _launch_module()
    records = launch.Records(str(tmp_path / "r"), env={"MLSHIFT_RUN": "s-007", "MLSHIFT_RUN_GROUP": "s"})
    assert (records.run["sweep"], records.run["index"], records.run["job_type"]) == ("s", 7, "sweep-trial")
    records.log({"loss": 1, "acc": 0.5}, commit=False)  # wandb.log(..., commit=False): the same step goes on
    records.log({"lr": 0.1})
    records.log({"loss": 0.5}, step=10)
    records.log(launch.metrics_of_line("step=20 val_loss=0.25"), step_keys=launch.STEP_KEYS)
    records.log({"step": 3, "x": 1})  # from wandb.log: "step" is a metric, as in W&B
    records.finish(0)
    lines = [json.loads(ln) for ln in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [(m["_step"], sorted(k for k in m if not k.startswith("_"))) for m in lines] == [
        (0, ["acc", "loss"]), (0, ["lr"]), (10, ["loss"]), (20, ["val_loss"]), (21, ["step", "x"])]
    assert json.loads((tmp_path / "r" / "run.json").read_text())["state"] == "finished"


# --------------------------------------------------------------------------- the models a run saved, marked complete
# A trainer's model folder: its final model in the folder itself, checkpoints in it, and what the
# checkpoint watcher does not look at (a folder the Trainer is still saving into, a hidden one, a
# folder without a model, one two levels down). Exits with argv[1] (or raises with "raise").
SAVES = """\
import os, sys
root = os.environ["MLSHIFT_MODEL_DIR"]
for sub in ("", "checkpoint-1", "checkpoint-2", "tmp-checkpoint-3", ".partial", "checkpoint-1/nested"):
    os.makedirs(os.path.join(root, sub), exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        with open(os.path.join(root, sub, name), "w") as f:
            f.write("{}")
os.makedirs(os.path.join(root, "logs"), exist_ok=True)
with open(os.path.join(root, "checkpoint-2", "mlshift-complete"), "w") as f:
    f.write("the trainer's own")  # already marked: left as it is
print("saved", flush=True)
if sys.argv[1] == "raise":
    raise RuntimeError("boom")
if sys.argv[1] == "sleep":
    import time
    time.sleep(60)
sys.exit(int(sys.argv[1]))
"""


def _markers(model_dir: Path) -> list[str]:
    return sorted(p.parent.relative_to(model_dir).as_posix() for p in model_dir.rglob("mlshift-complete"))


def test_the_launcher_keeps_the_watchers_names():
    from runtime import watch

    launch = _launch_module()
    assert launch.MARKER == watch.MARKER and launch.SAVING == watch.SAVING


def test_a_run_that_exits_0_has_its_models_marked_complete_as_the_watcher_looks(tmp_path):
    model_dir = tmp_path / "models" / "app" / RUN_ID
    done, _ = _run_launcher(tmp_path, SAVES, "0", drop=("WANDB_MODE", "MLSHIFT_TRACKING"),
                            extra={"MLSHIFT_MODEL_DIR": str(model_dir)})
    assert done.returncode == 0, done.stderr
    assert _markers(model_dir) == [".", "checkpoint-1", "checkpoint-2"]
    assert (model_dir / "mlshift-complete").read_bytes() == b""  # empty, as the watcher wants it
    assert (model_dir / "checkpoint-2" / "mlshift-complete").read_text() == "the trainer's own"
    assert "mlshift:" not in done.stderr  # nothing to say
    # the watcher's own finding agrees: every model folder it would evaluate in this run is marked
    from runtime.watch import find_checkpoints

    found = find_checkpoints(model_dir.parent)
    assert found and all((folder / "mlshift-complete").is_file() for folder in found)


# The last checkpoint saved by a thread of its own (async saving), still writing when the script's
# main code ends: the launcher marks it once the thread has ended, as Python waits for it anyway.
SAVES_IN_THE_BACKGROUND = """\
import os, threading, time
root = os.environ["MLSHIFT_MODEL_DIR"]

def save():
    time.sleep(0.5)
    os.makedirs(os.path.join(root, "checkpoint-9"))
    for name in ("config.json", "model.safetensors"):
        with open(os.path.join(root, "checkpoint-9", name), "w") as f:
            f.write("{}")

threading.Thread(target=save).start()
"""


def test_a_checkpoint_saved_in_the_background_is_marked_once_its_thread_ends(tmp_path):
    model_dir = tmp_path / "models" / "app" / RUN_ID
    model_dir.mkdir(parents=True)
    done, _ = _run_launcher(tmp_path, SAVES_IN_THE_BACKGROUND, "0", drop=("WANDB_MODE", "MLSHIFT_TRACKING"),
                            extra={"MLSHIFT_MODEL_DIR": str(model_dir)})
    assert done.returncode == 0, done.stderr
    assert _markers(model_dir) == ["checkpoint-9"]


@pytest.mark.parametrize("outcome, extra, code", [
    ("1", {}, 1),  # a failed run: its models may be half written
    ("raise", {}, 1),
    ("0", {"RANK": "1", "LOCAL_RANK": "1"}, 0),  # another rank: rank 0 marks them
])
def test_no_marker_after_a_failure_or_on_another_rank(tmp_path, outcome, extra, code):
    model_dir = tmp_path / "models" / RUN_ID
    done, _ = _run_launcher(tmp_path, SAVES, outcome, drop=("WANDB_MODE", "MLSHIFT_TRACKING"),
                            extra={"MLSHIFT_MODEL_DIR": str(model_dir), **extra})
    assert done.returncode == code, done.stderr
    assert _markers(model_dir) == ["checkpoint-2"]  # only the trainer's own


def test_no_marker_after_a_signal(tmp_path):
    (tmp_path / "train.py").write_text(SAVES)
    model_dir = tmp_path / "models" / "r1"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "MLSHIFT_", "RANK", "LOCAL_RANK"))},
           "MLSHIFT_RUN": "r1", "MLSHIFT_RESULTS": str(tmp_path / "results"), "MLSHIFT_MODEL_DIR": str(model_dir)}
    proc = subprocess.Popen([sys.executable, str(LAUNCHER_FILE), str(tmp_path / "train.py"), "sleep"], env=env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "saved\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == -signal.SIGTERM
    assert _markers(model_dir) == ["checkpoint-2"]


def test_a_model_dir_that_is_missing_or_cannot_take_the_marker_leaves_the_exit_code_alone(tmp_path):
    done, _ = _run_launcher(tmp_path, "print('saved nothing')\n", drop=("WANDB_MODE", "MLSHIFT_TRACKING"),
                            extra={"MLSHIFT_MODEL_DIR": str(tmp_path / "never-made")})
    assert done.returncode == 0 and "mlshift:" not in done.stderr, done.stderr
    assert not (tmp_path / "never-made").exists()
    # A write that fails for any user, root included: the marker's path is longer than the system
    # takes (PATH_MAX, 4096 bytes with its end), while the folder's and its config.json's are not.
    model_dir = str(tmp_path / "m")
    while len(model_dir) < 4081:
        model_dir = os.path.join(model_dir, "d" * min(200, max(1, 4081 - len(model_dir) - 1)))
    assert 4096 - len("/mlshift-complete") <= len(model_dir) < 4096 - len("/config.json")
    os.makedirs(model_dir)
    (Path(model_dir) / "config.json").write_text("{}")
    done, results = _run_launcher(tmp_path, "print('saved')\n", drop=("WANDB_MODE", "MLSHIFT_TRACKING"),
                                  extra={"MLSHIFT_MODEL_DIR": model_dir})
    assert done.returncode == 0, done.stderr
    (said,) = [line for line in done.stderr.splitlines() if line.startswith("mlshift:")]
    assert said.startswith(f"mlshift: cannot write mlshift-complete in {model_dir} (")
    assert "quiet period" in said
    assert json.loads((results / "run.json").read_text())["state"] == "finished"
    assert said in (results / "stdout.log").read_text()  # said in the run's log too


# --------------------------------------------------------------------------- sync-runs
def _offline_run(volume: Path, run_id: str, *, synced: bool = False, state: str | None = None) -> Path:
    folder = volume / "train" / "wandb" / "wandb" / f"offline-run-20251130_031200-{run_id}"
    folder.mkdir(parents=True)
    (folder / f"run-{run_id}.wandb").write_bytes(b":W&B\x00")
    if synced:
        (folder / f"run-{run_id}.wandb.synced").write_text("")
    if state:
        (volume / "train" / "results" / run_id).mkdir(parents=True)
        (volume / "train" / "results" / run_id / "run.json").write_text(json.dumps({"id": run_id, "state": state}))
    return folder


@pytest.fixture
def volume(cluster, tmp_path):
    """The workspace volume (FAKE_OC_VOLUME), a stand-in `wandb` that marks what it syncs as wandb does."""
    vol = tmp_path / "volume"
    vol.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "wandb"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/wandb-calls\n'
                    'for f in "$2"/*.wandb; do : > "$f.synced"; done\necho "synced $2"\n')
    fake.chmod(0o755)
    cluster.set(FAKE_OC_VOLUME=str(vol), FAKE_OC_SECRETS="wandb-api-key", PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return vol


def test_sync_runs_uploads_each_offline_run_once_from_a_pod(cluster, volume, capfd, tmp_path):
    rc, _, err = cluster.verb(capfd, "submit", cluster.dep)  # a job that still runs: its run is left for later
    assert rc == 0, err
    running = _job(cluster)["metadata"]["labels"]["mlshift.io/submission"]
    new = _offline_run(volume, "251130-010000-aaaa", state="finished")
    _offline_run(volume, "251130-020000-bbbb", synced=True)
    _offline_run(volume, running, state="running")
    cluster.reset()
    rc, out, err = cluster.verb(capfd, "sync-runs", cluster.dep)
    assert rc == 0, err
    assert cluster.verbs() == ["get", "get", "get", "delete", "create", "wait", "exec", "delete"]
    calls = cluster.calls()
    assert calls[1]["argv"][2:4] == ["secret", "wandb-api-key"] and calls[2]["argv"][2] == "jobs"
    (pod,) = [o for o in cluster.created() if o["kind"] == "Pod"]
    c = pod["spec"]["containers"][0]
    assert c["image"] == "train:latest" and pod["metadata"]["annotations"]  # the application's image: it has wandb
    env = {e["name"]: e for e in c["env"]}
    assert env["WANDB_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "wandb-api-key"
    assert env["WANDB_BASE_URL"]["value"] == "https://wandb.example.com"
    assert c["volumeMounts"] == [{"name": "workspace", "mountPath": "/workspace"}]
    assert (tmp_path / "wandb-calls").read_text().splitlines() == [f"sync {new}"]
    assert "already synced: 1; still running: 1; to upload: 1" in out and running in out
    # again: nothing is sent twice
    cluster.reset()
    rc, out, err = cluster.verb(capfd, "sync-runs", cluster.dep)
    assert rc == 0, err
    assert len((tmp_path / "wandb-calls").read_text().splitlines()) == 1
    assert "already synced: 2; still running: 1; to upload: 0" in out


def test_sync_runs_needs_the_secret_and_says_the_other_way(cluster, volume, capfd):
    cluster.set(FAKE_OC_SECRETS="")
    rc, out, err = cluster.verb(capfd, "sync-runs", cluster.dep)
    assert rc != 0 and "the Secret wandb-api-key (the W&B API key the upload uses) is missing" in err
    assert "oc create secret generic wandb-api-key" in err and "sync-workspace.sh down --remote /workspace/train/wandb/" in err
    assert "create" not in cluster.verbs()


def test_sync_runs_says_which_runs_failed_and_tries_them_next_time(cluster, volume, capfd, tmp_path):
    _offline_run(volume, "251130-010000-aaaa", state="failed")
    (tmp_path / "bin" / "wandb").write_text("#!/bin/sh\necho 'wandb: ERROR network unreachable' >&2\nexit 1\n")
    rc, out, err = cluster.verb(capfd, "sync-runs", cluster.dep)
    assert rc != 0 and "Not uploaded: 251130-010000-aaaa" in err and "tried again by the next sync-runs" in err
    assert "delete" == cluster.verbs()[-1]  # the upload pod is gone either way
