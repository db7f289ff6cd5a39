"""Promotion: promote.sh against the recording oc (the runs' records and model folders as real files
on the stand-in volumes), python -m runtime promote against a real HTTPS server on loopback standing
in for the Kubernetes API, and RUNTIME_MODEL honoured by runtime serve."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from fake_oc.harness import FAKE_DIR, REPO, Cluster  # noqa: E402
from runtime_helpers import free_port, run_cli, tiny_llama_path, wait_until  # noqa: E402

SWEEP = "251130-031200-ab12"  # the sample sweep of docs/gen_transcripts.py --sample-runs
OLDER = "251120-090000-zz99"
BEST = f"{SWEEP}-004"  # its best by val_loss: 0.4048 at step 6
NEXT = f"{SWEEP}-005"  # the second best: 0.4248
TOKEN = "sa-token-for-the-test"


def _fake_oc_module():
    """The recording oc as a module (for its strategic merge patch, used by the API stand-in)."""
    loader = importlib.machinery.SourceFileLoader("fake_oc_script", str(FAKE_DIR / "oc"))
    spec = importlib.util.spec_from_loader("fake_oc_script", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def sample_runs(dest: Path) -> None:
    """The records of a finished sweep of 8 runs (fixed numbers), written by the docs' own command."""
    done = subprocess.run([sys.executable, str(REPO / "docs" / "gen_transcripts.py"), "--sample-runs", str(dest)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def write_record(results: Path, run_id: str, val_losses: list[float], *, state: str = "finished",
                 model_dir: str | None = None, sweep: str = OLDER) -> None:
    """One run's record as the launcher writes it (run.json, metrics.jsonl)."""
    folder = results / run_id
    folder.mkdir(parents=True)
    record = {"id": run_id, "name": f"train-{run_id}", "group": sweep, "job_type": "sweep-trial", "params": {"lr": 0.5},
              "sweep": sweep, "index": 0, "state": state, "started": "2025-11-20T09:00:00Z",
              "finished": None if state == "running" else "2025-11-20T09:30:00Z",
              "exit_code": None if state == "running" else 0}
    if model_dir:
        record["model_dir"] = model_dir
    (folder / "run.json").write_text(json.dumps(record))
    (folder / "metrics.jsonl").write_text("".join(json.dumps({"_step": i, "val_loss": v}) + "\n"
                                                  for i, v in enumerate(val_losses)))


@pytest.fixture
def loop(tmp_path, monkeypatch):
    """A training deployment `train` (job mode, the model store, experiment.promote.to: llm) whose
    sweep wrote its records on the workspace volume and its models on the store; a serving
    deployment `llm` (the included server, the model store mounted) deployed on the recording oc."""
    c = Cluster(tmp_path, monkeypatch)
    c.train = c.job("train", "resources.storage.models.enabled=true", "experiment.promote.to=llm",
                    "experiment.promote.metric=val_loss")
    c.llm = c.server("llm", "resources.storage.models.enabled=true")
    c.seed(c.train)
    c.seed(c.llm, "deployment")
    c.volume, c.models = tmp_path / "volume", tmp_path / "models"
    sample_runs(c.volume / "train")
    for run in (c.volume / "train" / "results").iterdir():
        (c.models / "train" / run.name).mkdir(parents=True)
    c.set(FAKE_OC_VOLUME=str(c.volume), FAKE_OC_MODELS=str(c.models))
    c.llm_config = (c.llm / "config.yaml").read_text()
    return c


def patches(c: Cluster) -> list[dict]:
    """The bodies of the `oc patch deployment llm` calls."""
    out = []
    for argv in c.argvs():
        if argv[0] == "patch":
            assert argv[1:6] == ["--namespace=team-a", "deployment", "llm", "--type=strategic", "-p"]
            out.append(json.loads(argv[6]))
    return out


def promoted(body: dict) -> dict:
    return json.loads(body["metadata"]["annotations"]["mlshift.io/promoted"])


def live(c: Cluster) -> dict:
    """The serving Deployment as the recording oc holds it now."""
    done = subprocess.run([str(FAKE_DIR / "oc"), "get", "deployment", "llm", "-n", "team-a", "-o", "json"],
                          env={**os.environ, **c.env}, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def env_of(deployment: dict) -> dict[str, str]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in container["env"]}


# --------------------------------------------------------------------------- promote.sh
def test_if_better_promotes_the_best_run_in_one_patch_and_the_checkout_follows(loop, capsys):
    before = live(loop)
    rc, out, err = loop.verb(capsys, "promote", loop.train, "--if-better")
    assert rc == 0, err
    # the model folders were looked for in a pod of llm, in one exec, before the patch
    assert [a[0] for a in loop.argvs()][-3:] == ["get", "exec", "patch"]
    (body,) = patches(loop)
    folder = f"/models/train/{BEST}"
    record = promoted(body)
    assert {k: record[k] for k in ("model", "run", "metric", "value", "goal", "previous")} == {
        "model": folder, "run": BEST, "metric": "val_loss", "value": 0.4048, "goal": "min", "previous": "tiny-model"}
    assert record["at"].endswith("Z")
    assert body["spec"]["template"]["spec"]["containers"] == [{"name": "app", "env": [{"name": "RUNTIME_MODEL", "value": folder}]}]
    # merged by name on the cluster: the other variables, the volumes and the rest of the pod as they were
    after = live(loop)
    assert env_of(after) == {**env_of(before), "RUNTIME_MODEL": folder}
    assert after["spec"]["template"]["spec"]["volumes"] == before["spec"]["template"]["spec"]["volumes"]
    assert f"Best of sweep {SWEEP} by val_loss (lowest is best): {BEST} (lr=0.01, batch_size=16), val_loss 0.4048" in out
    assert "nothing was promoted to llm yet" in out
    assert f"Undo: {loop.llm.parent / 'train'}/scripts/promote.sh --to llm --model tiny-model" in out
    # the checkout says what the cluster serves: inference.model, every other line as it was, rendered again
    lines = (loop.llm / "config.yaml").read_text().splitlines()
    old = loop.llm_config.splitlines()
    assert [i for i, (a, b) in enumerate(zip(old, lines)) if a != b] == [old.index("  model: tiny-model")]
    assert len(lines) == len(old) and f"  model: {folder}" in lines
    manifest = yaml.safe_load((loop.llm / "manifests" / "deployment.yaml").read_text())
    assert env_of(manifest)["RUNTIME_MODEL"] == folder
    assert "served_model_name" in err  # clients ask for the model by name: said once


def test_if_better_changes_nothing_when_the_served_run_is_better(loop, capsys):
    # an older sweep's run, better than every run of the newest one, promoted first (--sweep all)
    results = loop.volume / "train" / "results"
    write_record(results, f"{OLDER}-000", [0.9, 0.31, 0.35], model_dir=f"/models/train/{OLDER}-000")
    (loop.models / "train" / f"{OLDER}-000").mkdir()
    rc, out, err = loop.verb(capsys, "promote", loop.train, "--sweep", "all")
    assert rc == 0, err
    assert promoted(patches(loop)[0])["run"] == f"{OLDER}-000"
    promoted_config = (loop.llm / "config.yaml").read_text()
    loop.reset()
    rc, out, err = loop.verb(capsys, "promote", loop.train, "--if-better")  # the newest sweep's best: 0.4048
    assert rc == 0, err
    assert patches(loop) == []
    assert f"val_loss 0.4048 > 0.31 of the served run {OLDER}-000 (lower is better): worse" in out
    assert "Not promoted (--if-better): llm keeps /models/train/" in out
    assert (loop.llm / "config.yaml").read_text() == promoted_config
    # the same run again: already served
    loop.reset()
    rc, out, _ = loop.verb(capsys, "promote", loop.train, "--if-better", "--sweep", "all")
    assert rc == 0 and patches(loop) == [] and "that is the best run's model already" in out


def test_a_run_whose_model_folder_is_missing_is_left_out(loop, capsys):
    shutil.rmtree(loop.models / "train" / BEST)
    rc, out, err = loop.verb(capsys, "promote", loop.train)
    assert rc == 0, err
    assert f"run {BEST} (val_loss 0.4048) left out: its model folder /models/train/{BEST} does not exist" in err
    assert promoted(patches(loop)[0])["run"] == NEXT


def test_undo_with_model_and_a_hand_choice_is_left_to_its_chooser(loop, capsys):
    rc, out, err = loop.verb(capsys, "promote", loop.train)
    assert rc == 0, err
    undo = next(line for line in out.splitlines() if line.startswith("Undo: "))
    words = undo.split()[2:]  # after "Undo: <script>"
    assert words == ["--to", "llm", "--model", "tiny-model"]
    loop.reset()
    rc, out, err = loop.verb(capsys, "promote", loop.train, *words)
    assert rc == 0, err
    (body,) = patches(loop)
    record = promoted(body)
    assert record["model"] == "tiny-model" and record["metric"] is None and record["previous"] == f"/models/train/{BEST}"
    assert env_of(live(loop))["RUNTIME_MODEL"] == "tiny-model"
    assert (loop.llm / "config.yaml").read_text() == loop.llm_config  # back as it was, byte for byte
    assert f"Undo: {loop.train}/scripts/promote.sh --to llm --model /models/train/{BEST}" in out
    # a schedule's --if-better leaves a model chosen by hand alone
    loop.reset()
    rc, out, _ = loop.verb(capsys, "promote", loop.train, "--if-better")
    assert rc == 0 and patches(loop) == [] and "chosen by hand" in out


def test_model_promotes_a_given_folder(loop, capsys):
    rc, out, err = loop.verb(capsys, "promote", loop.train, "--model", f"/models/train/{NEXT}/")
    assert rc == 0, err
    record = promoted(patches(loop)[0])
    assert record["model"] == f"/models/train/{NEXT}" and record["run"] is None and record["value"] is None
    assert "Promoted to llm by hand (no metric): RUNTIME_MODEL=/models/train/" in out
    # a folder the serving pods do not see is refused before anything changes
    loop.reset()
    rc, _, err = loop.verb(capsys, "promote", loop.train, "--model", "/models/train/nothing-here")
    assert rc == 2 and "/models/train/nothing-here does not exist in llm's pods" in err and patches(loop) == []


@pytest.mark.parametrize("args, expected", [
    (["--metric", "bleu"], "no run has the metric 'bleu'; the metrics the runs have: accuracy, loss, val_loss"),
    (["--model", "./here"], "--model './here': give a model folder as the serving pods see it"),
    (["--model", "/m", "--if-better"], "--model promotes the folder given; --if-better chooses among runs"),
    (["--to", "train"], "--to train is this deployment"),
    (["--to", 'llm"; $(rm -rf x)'], "is not a valid deployment name"),
])
def test_bad_input_is_one_line_and_changes_nothing(loop, capsys, args, expected):
    rc, out, err = loop.verb(capsys, "promote", loop.train, *args)
    assert rc == 2
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert expected in line and "Traceback" not in err
    assert patches(loop) == [] and (loop.llm / "config.yaml").read_text() == loop.llm_config


def test_no_target_is_one_line(tmp_path, monkeypatch, capsys):
    c = Cluster(tmp_path, monkeypatch)
    train = c.job("train", "experiment.promote.metric=loss")
    rc, _, err = c.verb(capsys, "promote", train)
    assert rc == 2 and err.strip() == ("error: no serving deployment to promote to (set experiment.promote.to in "
                                       "config.yaml to its application name, or pass --to NAME)")
    assert c.calls() == []


def test_a_target_without_the_model_store_is_refused(loop, capsys):
    plain = loop.server("plain")  # no resources.storage.models: its pods cannot read /models
    loop.seed(plain, "deployment")
    before = (plain / "config.yaml").read_text()
    rc, _, err = loop.verb(capsys, "promote", loop.train, "--to", "plain")
    assert rc == 2
    assert f"error: deployment plain does not mount the claim mlshift-models that holds /models/train/{BEST}, so it " \
           "could not read it: use the model store (resources.storage.models) in plain's config.yaml" in err
    assert "patch" not in loop.verbs() and (plain / "config.yaml").read_text() == before
    assert not [a for a in loop.argvs() if a[0] == "exec" and "deployment/plain" in a]  # refused before its pods are asked
    # a folder on the training deployment's own workspace volume: llm mounts its own at /workspace
    (loop.volume / "train" / "models" / "by-hand").mkdir(parents=True)
    rc, _, err = loop.verb(capsys, "promote", loop.train, "--model", "/workspace/train/models/by-hand")
    assert rc == 2 and "error: deployment llm mounts /workspace from the claim llm-workspace, not the claim " \
                       "train-workspace that holds /workspace/train/models/by-hand" in err
    assert "patch" not in loop.verbs() and (loop.llm / "config.yaml").read_text() == loop.llm_config


def test_a_server_that_does_not_read_runtime_model_is_refused(loop, capsys):
    custom = loop.new("vllm-own", "application.type=custom_command", "application.source.command=vllm serve x",
                      "inference.enabled=true", "deployment.namespace=team-a", "resources.storage.models.enabled=true")
    loop.seed(custom, "deployment")
    rc, _, err = loop.verb(capsys, "promote", loop.train, "--to", "vllm-own")
    assert rc == 2 and "deployment vllm-own does not take its model from RUNTIME_MODEL" in err
    assert "patch" not in loop.verbs()


@pytest.mark.parametrize("edited", [{"goal": "up"}, {"goal": ["min"]}, {"value": "x"}, {"value": float("nan")}, {"metric": 3}])
def test_a_hand_edited_annotation_is_not_readable_never_a_traceback(edited):
    from runtime.promote import read_served

    deployment = {"metadata": {"annotations": {"mlshift.io/promoted": json.dumps(
        {"model": "/models/m", "run": "r", "metric": "val_loss", "value": 0.5, "goal": "min", **edited})}},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "env": [{"name": "RUNTIME_MODEL", "value": "/models/m"}]}]}}}}
    served = read_served(deployment, "llm")
    assert served.promoted is None and "annotation is not readable" in served.why_not


def test_a_missing_serving_deployment_is_one_line(loop, capsys):
    rc, _, err = loop.verb(capsys, "promote", loop.train, "--to", "gone")
    assert rc == 3 and "cannot read the serving deployment gone: deployments.apps 'gone' not found in team-a" in err
    assert "patch" not in loop.verbs()


def test_from_a_folder_and_dry_run_change_nothing(loop, capsys):
    rc, out, err = loop.verb(capsys, "promote", loop.train, "--from", str(loop.volume / "train"), "--dry-run")
    assert rc == 0, err
    assert loop.calls() == []
    assert f"# Best of sweep {SWEEP} by val_loss" in out
    assert "oc get --namespace=team-a deployment llm -o json" in out
    assert f"oc patch --namespace=team-a deployment llm --type=strategic -p '<the annotation mlshift.io/promoted and " \
           f"RUNTIME_MODEL=/models/train/{BEST}>'" in out
    assert (loop.llm / "config.yaml").read_text() == loop.llm_config


def test_deploy_says_when_the_cluster_serves_a_promoted_model_config_yaml_does_not_name(loop, capsys):
    rc, _, err = loop.verb(capsys, "promote", loop.train)
    assert rc == 0, err
    (loop.llm / "config.yaml").write_text(loop.llm_config)  # a checkout that did not follow (another machine)
    loop.set(FAKE_OC_SECRETS="llm-api-keys,hf-token")
    loop.reset()
    rc, _, err = loop.verb(capsys, "deploy", loop.llm, "--build=never", "--no-wait")
    assert rc == 0, err
    assert (f"note: llm serves the model promoted to it on the cluster, /models/train/{BEST} (run {BEST}, val_loss 0.4048"
            in err) and "this deploy puts tiny-model back" in err
    # a checkout that follows the cluster: no note
    loop.reset()
    rc, _, err = loop.verb(capsys, "promote", loop.train, "--model", f"/models/train/{BEST}")
    assert rc == 0, err
    rc, _, err = loop.verb(capsys, "deploy", loop.llm, "--build=never", "--no-wait")
    assert rc == 0 and "promoted to it" not in err


def test_the_generated_script_runs_promote(loop):
    done = loop.script(loop.train, "promote.sh", "--if-better")
    assert done.returncode == 0, done.stderr
    assert promoted(patches(loop)[0])["run"] == BEST


# --------------------------------------------------------------------------- the decision, as functions
def test_pick_takes_finished_runs_ties_by_newest_and_says_why_not():
    from runtime.errors import UsageError
    from runtime.promote import pick
    from runtime.records import Run

    def run(rid, values, state="finished", finished=0.0, model_dir=None):
        return Run(rid, state=state, finished=finished, model_dir=model_dir,
                   history={"acc": [(i, v) for i, v in enumerate(values)]})

    runs = [run("a", [0.5, 0.9], finished=10), run("b", [0.9, 0.7], finished=20), run("c", [0.99], state="running"),
            run("d", [0.2], model_dir="/models/x/custom")]
    best = pick(runs, "acc", "max", "/models/x")
    assert (best.run.id, best.value, best.step, best.model) == ("b", 0.9, 0, "/models/x/b")  # a tie: b is newer
    assert pick(runs, "acc", "min", "/models/x").model == "/models/x/custom"  # its record's model_dir
    best = pick(runs, "acc", "max", "/models/x", available=lambda f: f != "/models/x/b")
    assert best.run.id == "a" and "run b (acc 0.9) left out" in best.notes[0]
    with pytest.raises(UsageError, match="no finished run has the metric 'acc' \\(1 run has it: 1 running\\)"):
        pick([runs[2]], "acc", "max")
    with pytest.raises(UsageError, match="no run has the metric 'loss'; the metrics the runs have: acc"):
        pick(runs, "loss", "min")
    with pytest.raises(UsageError, match="none of the 3 finished run\\(s\\) with the metric 'acc' has a model folder"):
        pick(runs, "acc", "max", "/models/x", available=lambda f: False)


def serving(model: str = "tiny-model", promoted: dict | None = None, claim: str = "mlshift-models") -> dict:
    """A serving Deployment as the API returns it: RUNTIME_MODEL, the model store mounted at /models."""
    annotations = {"mlshift.io/promoted": json.dumps(promoted)} if promoted else {}
    return {"metadata": {"name": "llm", "annotations": annotations},
            "spec": {"template": {"spec": {
                "containers": [{"name": "app", "env": [{"name": "RUNTIME_MODEL", "value": model}],
                                "volumeMounts": [{"name": "models", "mountPath": "/models"}]}],
                "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": claim}}]}}}}


def decision_runs() -> list:
    from runtime.records import Run

    return [Run("a", state="finished", finished=10, params={"lr": 0.1}, history={"val_loss": [(0, 0.9), (1, 0.5)]}),
            Run("b", state="finished", finished=20, params={"lr": 0.2}, history={"val_loss": [(0, 0.7), (1, 0.4), (2, 0.45)]}),
            Run("c", state="running", params={"lr": 0.3}, history={"val_loss": [(0, 0.1)]})]


def decide_for(deployment: dict, **how):
    """runtime.promote.decide as the scheduled pod calls it (app train, the model store, namespace team-a)."""
    from runtime.promote import Store, decide

    given = {"metric": "val_loss", "goal": "minimize", "models_root": "/models/train", "app": "train", "store": Store(),
             "where": "team-a", "title": "sweep s1", "checkout": "train", "now": 0.0, **how}
    if "model" in how:
        given = {k: v for k, v in given.items() if k not in ("metric", "goal", "models_root", "title")}
        return decide(deployment, "llm", **given)
    return decide(deployment, "llm", decision_runs(), **given)


def test_decide_promotes_the_best_finished_run_and_says_what_both_callers_say():
    d = decide_for(serving())
    assert (d.action, d.better, d.candidate.run.id, d.model) == ("promote", True, "b", "/models/train/b")
    assert d.record == {"model": "/models/train/b", "run": "b", "metric": "val_loss", "value": 0.4, "goal": "min",
                        "at": "1970-01-01T00:00:00Z", "previous": "tiny-model"}
    assert d.patch == {"metadata": {"annotations": {"mlshift.io/promoted": json.dumps(d.record, separators=(",", ":"))}},
                       "spec": {"template": {"spec": {"containers": [
                           {"name": "app", "env": [{"name": "RUNTIME_MODEL", "value": "/models/train/b"}]}]}}}}
    assert d.notes == [] and d.lines == [
        "Best of sweep s1 by val_loss (lowest is best): b (lr=0.2), val_loss 0.4 at step 1; its model: /models/train/b",
        "Served by llm in team-a: tiny-model; nothing was promoted to llm yet (no mlshift.io/promoted annotation): "
        "the best run counts as better"]
    assert d.promoted == ("Promoted run b (val_loss 0.4) to llm: RUNTIME_MODEL=/models/train/b; its pods roll out now "
                          "(the annotation mlshift.io/promoted records it).")
    assert d.undo_line == "Undo (from the checkout of train): scripts/promote.sh --to llm --model tiny-model"
    # promote.sh's: its script as the user types it, no checkout to name
    d = decide_for(serving(), script="deployments/train/scripts/promote.sh", checkout=None)
    assert d.undo_line == "Undo: deployments/train/scripts/promote.sh --to llm --model tiny-model"
    # a run whose folder is not there is left out, with a note, and the next best taken
    d = decide_for(serving(), available=lambda f: f != "/models/train/b")
    assert d.candidate.run.id == "a" and d.notes and "run b (val_loss 0.4) left out" in d.notes[0]


def test_decide_keeps_a_better_served_model_under_if_better_only():
    old = {"model": "/models/train/old", "run": "old", "metric": "val_loss", "value": 0.3, "goal": "min",
           "at": "2025-11-01T00:00:00Z", "previous": "tiny-model"}
    d = decide_for(serving("/models/train/old", old), if_better=True)
    assert (d.action, d.better, d.record, d.patch, d.undo_line, d.promoted) == ("keep", False, None, None, None, "")
    assert d.why == "val_loss 0.4 > 0.3 of the served run old (lower is better): worse"
    assert d.lines[1:] == [f"Served by llm in team-a: /models/train/old; {d.why}",
                           "Not promoted (--if-better): llm keeps /models/train/old."]
    d = decide_for(serving("/models/train/old", old))  # without --if-better: the best run, whatever is served
    assert d.action == "promote" and d.record["previous"] == "/models/train/old"
    assert d.undo_line.endswith("--to llm --model /models/train/old")
    # a served model promoted by a worse value is replaced under --if-better
    d = decide_for(serving("/models/train/old", {**old, "value": 0.6}), if_better=True)
    assert d.action == "promote" and d.why.endswith(": better")


def test_decide_changes_nothing_when_the_best_run_is_served_already():
    record = {"model": "/models/train/b", "run": "b", "metric": "val_loss", "value": 0.4, "goal": "min",
              "at": "2025-11-01T00:00:00Z", "previous": "tiny-model"}
    d = decide_for(serving("/models/train/b", record))
    assert (d.action, d.patch, d.lines[-1]) == ("same", None, "Nothing to do: llm already serves /models/train/b.")
    d = decide_for(serving("/models/train/b", record), if_better=True)
    assert (d.action, d.why) == ("keep", "that is the best run's model already")
    assert d.lines[-1] == "Not promoted (--if-better): llm keeps /models/train/b."


def test_decide_by_hand_promotes_the_model_given_with_no_metric():
    d = decide_for(serving("/models/train/b"), model="org/m$x", script="train/scripts/promote.sh", checkout=None)
    assert (d.action, d.candidate, d.lines, d.notes) == ("promote", None, [], [])
    assert d.record == {"model": "org/m$x", "run": None, "metric": None, "value": None, "goal": None,
                        "at": "1970-01-01T00:00:00Z", "previous": "/models/train/b"}
    assert d.patch["spec"]["template"]["spec"]["containers"] == [
        {"name": "app", "env": [{"name": "RUNTIME_MODEL", "value": "org/m$$x"}]}]  # as it is after $(VAR) expansion
    assert d.promoted.startswith("Promoted to llm by hand (no metric): RUNTIME_MODEL=org/m$x; its pods roll out now")
    assert d.undo_line == "Undo: train/scripts/promote.sh --to llm --model /models/train/b"
    d = decide_for(serving("org/m"), model="org/m")
    assert (d.action, d.lines) == ("same", ["Nothing to do: llm already serves org/m."])


def test_decide_refuses_in_one_line_only_what_it_would_patch():
    from runtime.errors import UsageError

    other = serving(claim="other-models")
    with pytest.raises(UsageError, match="deployment llm mounts /models from the claim other-models, not the claim "
                                         "mlshift-models that holds /models/train/b"):
        decide_for(other)
    with pytest.raises(UsageError, match="mounts /models from the claim other-models"):
        decide_for(other, model="/models/train/by-hand")
    # nothing to patch, nothing refused: a served model that stays
    kept = {"model": "/models/train/x", "run": "x", "metric": "val_loss", "value": 0.1, "goal": "min"}
    assert decide_for(serving("/models/train/x", kept, claim="other-models"), if_better=True).action == "keep"
    plain = serving()
    plain["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "OTHER", "value": "1"}]
    with pytest.raises(UsageError, match="deployment llm does not take its model from RUNTIME_MODEL"):
        decide_for(plain)
    with pytest.raises(UsageError, match="no run has the metric 'bleu'; the metrics the runs have: val_loss"):
        decide_for(serving(), metric="bleu")
    from runtime.promote import decide

    with pytest.raises(UsageError, match="no finished run has the metric 'val_loss' \\(1 run has it: 1 running\\)"):
        decide(serving(), "llm", decision_runs()[2:], metric="val_loss", app="train", where="team-a")


def test_the_launcher_records_the_model_folder_and_compare_reads_it(tmp_path):
    from runtime.records import read_record

    (tmp_path / "train.py").write_text("print('loss=0.5')\n")
    env = {**os.environ, "MLSHIFT_RESULTS": str(tmp_path / "results" / "r1"), "MLSHIFT_RUN": "r1",
           "MLSHIFT_MODEL_DIR": "/models/train/r1"}
    done = subprocess.run([sys.executable, str(REPO / "wizard" / "launch.py"), str(tmp_path / "train.py")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "results" / "r1" / "run.json").read_text())["model_dir"] == "/models/train/r1"
    run = read_record(tmp_path / "results" / "r1")
    assert run.model_dir == "/models/train/r1" and run.history == {"loss": [(0, 0.5)]} and run.state == "finished"
    import wizard.ops.compare as compare  # one reader: compare's is the runtime's

    assert compare.read_record is read_record


def test_the_workspace_claim_the_pod_assumes_is_the_wizards():
    from runtime.promote import folder_claim
    from runtime.pod import CONFIG_PATH_IN_POD
    from wizard.blueprint import Blueprint
    from wizard.loader import validate

    name = "a" * 63  # the longest application name: its claim is never shortened
    config = validate({"application": {"name": name, "execution": {"mode": "job"}}}, source="test")
    assert folder_claim(f"/workspace/{name}/models/r", name, None) == Blueprint(config, name).workspace_claim
    assert f"{Blueprint(config, name).config_mount}/config.yaml" == CONFIG_PATH_IN_POD  # where the pods mount config.yaml is where promote reads it


def test_the_config_key_is_declared_once_and_checked():
    from runtime.settings import PromoteSettings
    from wizard.config import Experiment
    from wizard.errors import ConfigError
    from wizard.loader import validate

    assert Experiment.model_fields["promote"].annotation == PromoteSettings | None
    base = {"application": {"name": "train", "execution": {"mode": "job"}}}
    c = validate({**base, "experiment": {"promote": {"to": "llm", "goal": "max"}}}, source="t")
    assert c.experiment.promote.goal == "maximize"
    for bad, said in (({"to": "LLM"}, "'LLM' is not an application name"), ({"to": "train"}, "train is this deployment"),
                      ({"metrc": "x"}, "did you mean 'metric'")):
        with pytest.raises(ConfigError, match=said):
            validate({**base, "experiment": {"promote": bad}}, source="t")


# --------------------------------------------------------------------------- python -m runtime promote, in a pod
class Api:
    """A real HTTPS server on loopback standing in for the Kubernetes API: GET and PATCH of one
    Deployment, with the bearer token and the patch's content type checked; or a canned refusal."""

    def __init__(self, tmp: Path, deployment: dict, namespace: str = "team-a"):
        if shutil.which("openssl") is None:
            pytest.skip("openssl makes the server's certificate")
        self.sa = tmp / "serviceaccount"
        self.sa.mkdir(parents=True)
        key, cert = tmp / "key.pem", self.sa / "ca.crt"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                       check=True, capture_output=True, timeout=60)
        (self.sa / "token").write_text(TOKEN + "\n")
        (self.sa / "namespace").write_text(namespace)
        self.deployment, self.requests, self.refuse, self.refuse_patch = deployment, [], None, None
        self.path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{deployment['metadata']['name']}"
        merge = _fake_oc_module().strategic_patch
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code: int, reason: str, message: str) -> None:
                self._answer(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                                    "reason": reason, "code": code})

            def _handle(self, method: str) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                api.requests.append({"method": method, "path": self.path, "auth": self.headers.get("Authorization"),
                                     "type": self.headers.get("Content-Type"), "body": json.loads(body) if body else None})
                if api.refuse:
                    return self._status(*api.refuse)
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._status(401, "Unauthorized", "Unauthorized")
                if self.path != api.path:
                    return self._status(404, "NotFound", f"the server could not find the requested resource {self.path}")
                if method == "PATCH":
                    if api.refuse_patch:
                        return self._status(*api.refuse_patch)
                    if self.headers.get("Content-Type") != "application/strategic-merge-patch+json":
                        return self._status(415, "UnsupportedMediaType", "the body of the request was in an unknown format")
                    api.deployment = merge(api.deployment, json.loads(body))
                self._answer(200, api.deployment)

            def do_GET(self):
                self._handle("GET")

            def do_PATCH(self):
                self._handle("PATCH")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def env(self, port: int | None = None) -> dict[str, str]:
        return {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(port or self.port)}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pod(loop, tmp_path):
    """What the scheduled promote step has in its pod: the training deployment's resolved config.yaml
    (its ConfigMap), the records on the workspace volume, the ServiceAccount; and the API stand-in
    serving llm's Deployment as deploy applied it."""
    configmap = yaml.safe_load((loop.train / "manifests" / "configmap.yaml").read_text())
    config = tmp_path / "pod-config.yaml"
    config.write_text(configmap["data"]["config.yaml"])
    api = Api(tmp_path / "api", yaml.safe_load((loop.llm / "manifests" / "deployment.yaml").read_text()))
    yield loop, api, ["promote", "--config", str(config), "--results", str(loop.volume / "train" / "results"),
                      "--service-account", str(api.sa)]
    api.close()


def test_runtime_promote_gets_and_patches_the_deployment_with_the_service_account(pod):
    loop, api, args = pod
    done = run_cli(*args, "--if-better", env=api.env(), timeout=120)
    assert done.returncode == 0, done.stderr
    assert [(r["method"], r["path"], r["auth"]) for r in api.requests] == [
        ("GET", api.path, f"Bearer {TOKEN}"), ("PATCH", api.path, f"Bearer {TOKEN}")]
    patch = api.requests[1]
    assert patch["type"] == "application/strategic-merge-patch+json"
    record = promoted(patch["body"])
    assert (record["run"], record["model"], record["value"], record["previous"]) == (BEST, f"/models/train/{BEST}", 0.4048, "tiny-model")
    assert env_of(api.deployment)["RUNTIME_MODEL"] == f"/models/train/{BEST}"
    # the lines promote.sh says (runtime.promote.decide says them for both)
    assert f"by val_loss (lowest is best): {BEST} (lr=0.01, batch_size=16), val_loss 0.4048 at step 6" in done.stdout
    assert "Served by llm in team-a: tiny-model; nothing was promoted to llm yet" in done.stdout
    assert f"Promoted run {BEST} (val_loss 0.4048) to llm: RUNTIME_MODEL=/models/train/{BEST}; its pods roll out now " \
           "(the annotation mlshift.io/promoted records it)." in done.stdout
    assert "Undo (from the checkout of train): scripts/promote.sh --to llm --model tiny-model" in done.stdout
    # the same again: what is served is the best, so --if-better changes nothing
    api.requests.clear()
    done = run_cli(*args, "--if-better", env=api.env(), timeout=120)
    assert done.returncode == 0, done.stderr
    assert [r["method"] for r in api.requests] == ["GET"] and "Not promoted (--if-better)" in done.stdout


def test_runtime_promote_if_better_leaves_a_better_served_model(pod):
    _, api, args = pod
    (container,) = api.deployment["spec"]["template"]["spec"]["containers"]
    next(e for e in container["env"] if e["name"] == "RUNTIME_MODEL")["value"] = "/models/train/older"
    api.deployment["metadata"].setdefault("annotations", {})["mlshift.io/promoted"] = json.dumps(
        {"model": "/models/train/older", "run": "older", "metric": "val_loss", "value": 0.2, "goal": "min",
         "at": "2025-11-01T00:00:00Z", "previous": "tiny-model"})
    done = run_cli(*args, "--if-better", env=api.env(), timeout=120)
    assert done.returncode == 0, done.stderr
    assert [r["method"] for r in api.requests] == ["GET"]
    assert "val_loss 0.4048 > 0.2 of the served run older (lower is better): worse" in done.stdout
    # --dry-run, without --if-better: the patch printed, not sent
    api.requests.clear()
    done = run_cli(*args, "--dry-run", env=api.env(), timeout=120)
    assert done.returncode == 0 and [r["method"] for r in api.requests] == ["GET"]
    assert '"RUNTIME_MODEL"' in done.stdout and f"/models/train/{BEST}" in done.stdout


@pytest.mark.parametrize("refusal, expected", [
    ((403, "Forbidden", 'deployments.apps "llm" is forbidden: User "system:serviceaccount:team-a:train-promote" cannot '
                        'get resource "deployments" in API group "apps" in the namespace "team-a"'),
     "error: the pod's ServiceAccount may not get deployment llm in team-a (403 Forbidden): deployments.apps \"llm\" is "
     "forbidden: User \"system:serviceaccount:team-a:train-promote\" cannot get resource"),
    ((404, "NotFound", 'deployments.apps "llm" not found'),
     "error: cannot get deployment llm in team-a: it does not exist (404 Not Found; deploy the serving deployment first"),
])
def test_runtime_promote_refusals_are_one_line(pod, refusal, expected):
    _, api, args = pod
    api.refuse = refusal
    done = run_cli(*args, env=api.env(), timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(expected), done.stderr
    assert "Traceback" not in done.stderr and [r["method"] for r in api.requests] == ["GET"]


def test_runtime_promote_a_refused_patch_and_a_wrong_token_are_one_line(pod):
    _, api, args = pod
    (api.sa / "token").write_text("not-the-token")
    done = run_cli(*args, env=api.env(), timeout=120)
    assert done.returncode == 1 and "refused the pod's ServiceAccount token (401 Unauthorized)" in done.stderr
    assert "Traceback" not in done.stderr
    # the token is right and the Deployment may be read, but not changed (a Role without patch)
    (api.sa / "token").write_text(TOKEN)
    api.requests.clear()
    api.refuse_patch = (403, "Forbidden", 'deployments.apps "llm" is forbidden: cannot patch')
    done = run_cli(*args, env=api.env(), timeout=120)
    assert done.returncode == 1 and [r["method"] for r in api.requests] == ["GET", "PATCH"]
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert "the pod's ServiceAccount may not" in line and "(403 Forbidden)" in line and "Traceback" not in done.stderr


def test_runtime_promote_without_the_api_is_one_line(pod):
    _, api, args = pod
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    done = run_cli(*args, env=api.env(closed), timeout=120)
    assert done.returncode == 1
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: cannot reach the Kubernetes API at https://127.0.0.1:{closed} to get deployment llm")
    done = run_cli(*args, env={"KUBERNETES_SERVICE_HOST": ""}, timeout=120)
    assert done.returncode == 2 and "KUBERNETES_SERVICE_HOST is not set" in done.stderr


def test_runtime_promote_refuses_a_target_without_the_store_and_config_without_a_target(pod, tmp_path):
    loop, api, args = pod
    volumes = api.deployment["spec"]["template"]["spec"]["volumes"]
    next(v for v in volumes if v["name"] == "models")["persistentVolumeClaim"]["claimName"] = "other-models"
    done = run_cli(*args, env=api.env(), timeout=120)
    assert done.returncode == 2 and [r["method"] for r in api.requests] == ["GET"]
    assert "error: deployment llm mounts /models from the claim other-models, not the claim mlshift-models that holds" in done.stderr
    config = Path(args[2])
    data = yaml.safe_load(config.read_text())
    del data["experiment"]["promote"]
    config.write_text(yaml.safe_dump(data))
    done = run_cli(*args, env=api.env(), timeout=120)
    assert done.returncode == 2 and "experiment.promote.to is not set" in done.stderr


# --------------------------------------------------------------------------- RUNTIME_MODEL
@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    return tiny_llama_path(tmp_path_factory)


def test_runtime_model_replaces_the_configured_model_for_serve_only(tmp_path, tiny_llama):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"inference": {"engine": "transformers", "model": "/no/such/model"}}))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "runtime", "serve", "--config", str(config), "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning"], cwd=REPO,
                            env={**os.environ, "RUNTIME_MODEL": str(tiny_llama)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        import httpx

        def ready() -> bool:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                return httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, what="the server on RUNTIME_MODEL")
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).json()
        assert [m["id"] for m in models["data"]] == [str(tiny_llama)]
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
    # empty: config.yaml's model; a flag wins over it; batch does not read it
    assert "model path /no/such/model does not exist" in run_cli("serve", "--config", str(config),
                                                                 env={"RUNTIME_MODEL": ""}).stderr
    done = run_cli("serve", "--config", str(config), "--model", "/flag/model", env={"RUNTIME_MODEL": str(tiny_llama)})
    assert done.returncode == 2 and "model path /flag/model does not exist" in done.stderr
    done = run_cli("batch", "--config", str(config), "--input", "x", "--output", "y", env={"RUNTIME_MODEL": str(tiny_llama)})
    assert done.returncode == 2 and "model path /no/such/model does not exist" in done.stderr


def test_vllm_image_takes_its_model_from_runtime_model(deployments):
    from wizard.blueprint import Blueprint
    from wizard.loader import validate

    config = validate({"application": {"name": "llm", "type": "model_server",
                                       "execution": {"arguments": "--chat-template '$(kept)'"}},
                       "inference": {"enabled": True, "engine": "vllm", "model": "org/m$x"},
                       "image": {"build": False}, "resources": {"gpus": 1}}, source="t")
    b = Blueprint(config, "llm")
    assert config.stock_vllm and b.container_command[:3] == ["vllm", "serve", "$(RUNTIME_MODEL)"]
    assert b.container_command[-2:] == ["--chat-template", "$$(kept)"]  # the user's words still kept as they are
    assert {"name": "RUNTIME_MODEL", "value": "org/m$$x"} in b.env  # $$: org/m$x after Kubernetes' expansion
    assert b.app_argv()[:3] == ["vllm", "serve", "org/m$x"]  # run-app in the pod: no expansion there


def test_a_record_whose_model_dir_is_not_absolute_is_left_out_by_both_callers():
    """A hand-written model_dir such as 'org/hub-model' is no folder in the pods: the run is left out
    with a note and the next best one taken, whether the folders can be seen or not."""
    from runtime.records import Run

    runs = [*decision_runs(), Run("z", state="finished", finished=30, model_dir="org/hub-model",
                                  history={"val_loss": [(0, 0.01)]})]
    for available in (None, lambda f: True):
        from runtime.promote import Store, decide

        d = decide(serving(), "llm", runs, metric="val_loss", goal="min", models_root="/models/train", app="train",
                   store=Store(), where="team-a", title="sweep s1", available=available, now=0.0)
        assert d.candidate.run.id == "b" and d.model == "/models/train/b"
        assert d.notes == ["note: run z (val_loss 0.01) left out: its record's model_dir 'org/hub-model' is not an absolute path"]
