"""Sweeps the cluster schedules (issue 14): one Indexed Job per sweep of single-node trials.

The Job's completions are the trials, its parallelism experiment.parallelism, its retries per
trial (backoffLimitPerIndex) where the cluster profile states Kubernetes 1.29+ and one shared
budget (backoffLimit) elsewhere; each pod finds its trial by JOB_COMPLETION_INDEX in the table of
trials (ConfigMaps owned by the Job), read by plain sh. Multi-node trials are one Indexed Job
each, created in one request; bayes runs W&B agents. Against the recording oc (tests/fake_oc).
"""

from __future__ import annotations

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
from fake_oc.harness import Cluster, unescape  # noqa: E402

from wizard.render import TRIAL_WRAPPER, TRIALS_MOUNT, read_trial_file, trial_file  # noqa: E402
from wizard.validate import check_object  # noqa: E402

PROFILES = {
    "k129": {"description": "Kubernetes 1.29 (OpenShift 4.16)", "kubernetes_version": "1.29", "rwx_storage_class": "cephfs"},
    "k128": {"description": "Kubernetes 1.28 (OpenShift 4.15)", "kubernetes_version": "1.28", "rwx_storage_class": "cephfs"},
    "unknown": {"description": "version not stated", "rwx_storage_class": "cephfs"},
}
GRID = {"lr": [0.1, 0.01, 0.001], "bs": [16, 32]}  # 6 trials


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    profiles = tmp_path / "clusters.yaml"
    profiles.write_text(yaml.safe_dump(PROFILES))
    monkeypatch.setattr("wizard.clusters.USER_FILE", profiles)  # this process (the verbs run in it)
    c = Cluster(tmp_path, monkeypatch)
    c.set(MLSHIFT_CLUSTERS=str(profiles))  # the scripts' processes
    return c


def _deploy(cluster: Cluster, profile: str = "k129", *sets: str, sweep: dict | None = None, parallelism: int = 4) -> Path:
    dep = cluster.job("train", f"deployment.cluster={profile}", *sets)
    _set(dep, sweep or {"parameters": GRID}, parallelism)
    cluster.seed(dep)
    return dep


def _set(dep: Path, sweep: dict, parallelism: int | None = None, **sections: dict) -> None:
    cfg = dep / "config.yaml"
    data = yaml.safe_load(cfg.read_text())
    data["experiment"]["sweep"] = sweep
    if parallelism is not None:
        data["experiment"]["parallelism"] = parallelism
        for key in ("access_mode", "storage_class"):  # derived again: ReadWriteMany in the profile's class
            data["resources"]["storage"].pop(key, None)
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    cfg.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def _jobs(cluster: Cluster) -> list[dict]:
    return [o for o in cluster.created() if o["kind"] == "Job"]


def _tables(cluster: Cluster) -> list[dict]:
    return [o for o in cluster.created() if o["kind"] == "ConfigMap"]


def _table(cluster: Cluster) -> dict[int, tuple[list[str], dict[str, str]]]:
    return {int(k): read_trial_file(v) for cm in _tables(cluster) for k, v in cm["data"].items()}


def _container(job: dict) -> dict:
    return job["spec"]["template"]["spec"]["containers"][0]


# --------------------------------------------------------------------------- the Indexed Job
def test_a_sweep_is_one_indexed_job_with_its_trials_parallelism_and_retries_per_trial(cluster, capsys):
    dep = _deploy(cluster, "k129")
    rc, out, err = cluster.verb(capsys, "sweep", dep)
    assert rc == 0, err
    (job,) = _jobs(cluster)
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == 6 and spec["parallelism"] == 4
    assert spec["backoffLimitPerIndex"] == 1 and "backoffLimit" not in spec and "maxFailedIndexes" not in spec
    sweep_id = job["metadata"]["labels"]["mlshift.io/sweep"]
    assert job["metadata"]["name"] == f"train-{sweep_id}"
    assert json.loads(job["metadata"]["annotations"]["mlshift.io/sweep"]) == {"method": "grid", "trials": 6, "parameters": ["lr", "bs"]}
    # the table of trials: created after the Job, owned by it (deleted with it), mounted in its pods
    (table,) = _tables(cluster)
    assert table["metadata"]["name"] == f"train-sweep-{sweep_id}" and sorted(table["data"]) == [str(i) for i in range(6)]
    owner = table["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Job", job["metadata"]["name"], f"uid-{job['metadata']['name']}")
    pod = job["spec"]["template"]["spec"]
    (vol,) = [v for v in pod["volumes"] if v["name"] == "trials"]
    assert vol["projected"]["sources"] == [{"configMap": {"name": table["metadata"]["name"]}}]
    assert {"name": "trials", "mountPath": TRIALS_MOUNT, "readOnly": True} in pod["containers"][0]["volumeMounts"]
    assert _container(job)["command"][:5] == ["/bin/sh", "-c", TRIAL_WRAPPER, "mlshift-trial", TRIALS_MOUNT]
    # the trials, in the grid's order, each its own arguments
    assert [t[0] for _, t in sorted(_table(cluster).items())] == [
        [f"--lr={lr}", f"--bs={bs}"] for lr in GRID["lr"] for bs in GRID["bs"]]
    assert "6 trials (the whole grid), one Indexed Job, 4 at a time" in out and "note:" not in err


def test_max_failed_trials_and_retries_reach_the_job(cluster, capsys):
    dep = _deploy(cluster, "k129", sweep={"parameters": GRID, "retries": 3, "max_failed_trials": 2})
    rc, _, err = cluster.verb(capsys, "sweep", dep)
    assert rc == 0, err
    spec = _jobs(cluster)[0]["spec"]
    assert spec["backoffLimitPerIndex"] == 3 and spec["maxFailedIndexes"] == 2


@pytest.mark.parametrize("profile,said", [("k128", "states Kubernetes 1.28"), ("unknown", "states no kubernetes_version")])
def test_an_older_or_unstated_cluster_falls_back_to_one_shared_retry_budget_and_says_so(cluster, capsys, profile, said):
    dep = _deploy(cluster, profile, sweep={"parameters": GRID, "retries": 2, "max_failed_trials": 1})
    rc, _, err = cluster.verb(capsys, "sweep", dep)
    assert rc == 0, err
    spec = _jobs(cluster)[0]["spec"]
    assert spec["backoffLimit"] == 12 and "backoffLimitPerIndex" not in spec and "maxFailedIndexes" not in spec
    note = [line for line in err.splitlines() if line.startswith("note: retries per trial")]
    assert len(note) == 1 and said in note[0] and "Kubernetes 1.29+" in note[0]
    assert "share one budget of 12 retries (backoffLimit)" in note[0] and "max_failed_trials is not applied" in note[0]


def test_parallelism_is_never_more_than_the_trials(cluster, capsys):
    dep = _deploy(cluster, "k129", sweep={"parameters": {"lr": [1, 2]}}, parallelism=8)
    rc, _, err = cluster.verb(capsys, "sweep", dep)
    assert rc == 0, err
    assert _jobs(cluster)[0]["spec"]["parallelism"] == 2


def test_the_created_objects_pass_the_strict_schemas(cluster, capsys):
    from wizard.validate import check_manifest_text

    dep = _deploy(cluster, "k129", sweep={"parameters": {"note": ["a'b", "$(x)", "line\nbreak"], "lr": [0.1]},
                                          "max_failed_trials": 1})
    rc, _, err = cluster.verb(capsys, "sweep", dep)
    assert rc == 0, err
    objects = _jobs(cluster) + _tables(cluster)
    assert [o["kind"] for o in objects] == ["Job", "ConfigMap"]
    for obj in objects:
        assert check_object(obj) == [], obj["kind"]
        assert check_manifest_text(yaml.safe_dump(obj)) == []


# --------------------------------------------------------------------------- byte for byte, in the real sh
HOSTILE_VALUES = ["a'b", 'say "hi"', "$(touch {marker})", "`touch {marker}`", "line1\nline2", "  two  spaces ", "",
                  "${{HOME}}", "$HOME", "back\\slash", "--x=; rm -rf /", "*", "-n", "é ü 😀", "tab\there", "sep\u2028x", "'"]
SHELLS = [s for s in (["/bin/sh"], ["bash", "--posix"], ["bash"], ["busybox", "sh"]) if shutil.which(s[0])]
FAKE_ENTRY = "import json, os, sys; print(json.dumps({'argv': sys.argv[1:], 'env': {k: v for k, v in os.environ.items() if k.startswith(('MLSHIFT_', 'WANDB_'))}}))"


def _run_trial(job: dict, table_dir: Path, index: str, shell: list[str]) -> subprocess.CompletedProcess:
    """The container's command as Kubernetes runs it (its $(VAR) expansion: $$ is $), in the real
    sh, with the table's files in ``table_dir`` and the application replaced by a fake entry point
    that prints its arguments (from the entry file on) and its run variables."""
    command = [unescape(w) for w in _container(job)["command"]]
    assert command[0] == "/bin/sh" and command[4] == TRIALS_MOUNT
    entry = next(i for i, w in enumerate(command) if w.endswith("/main.py"))
    argv = [*shell, *command[1:4], str(table_dir), sys.executable, "-c", FAKE_ENTRY, *command[entry:]]
    env = {"PATH": os.environ["PATH"], "JOB_COMPLETION_INDEX": index}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("shell", SHELLS, ids=[" ".join(s) for s in SHELLS])
def test_each_trial_reaches_the_process_byte_for_byte_in_the_real_sh(cluster, capsys, tmp_path, shell):
    marker = tmp_path / "pwned"
    values = [v.format(marker=marker) for v in HOSTILE_VALUES]
    base = ["--base", f"it's $(touch {marker}) `x` \"q\""]
    dep = _deploy(cluster, "k129", sweep={"parameters": {"note": values, "n": [1, True]}})
    _set(dep, {"parameters": {"note": values, "n": [1, True]}}, application={"execution": {"mode": "job", "arguments": base}})
    rc, _, err = cluster.verb(capsys, "sweep", dep)
    assert rc == 0, err
    (job,) = _jobs(cluster)
    assert job["spec"]["completions"] == 2 * len(values)
    table_dir = tmp_path / "trials"
    table_dir.mkdir()
    for cm in _tables(cluster):
        for key, text in cm["data"].items():
            (table_dir / key).write_text(text, encoding="utf-8")
    sweep_id = job["metadata"]["labels"]["mlshift.io/sweep"]
    for i, value in enumerate(values):
        for j, n in enumerate([1, True]):
            index = 2 * i + j
            res = _run_trial(job, table_dir, str(index), shell)
            assert res.returncode == 0, res.stderr
            seen = json.loads(res.stdout)
            assert seen["argv"][1:] == [*base, f"--note={value}", f"--n={'true' if n is True else n}"], index
            assert seen["env"]["MLSHIFT_RUN"] == f"{sweep_id}-{index:03d}"
            assert json.loads(seen["env"]["MLSHIFT_PARAMS"]) == {"note": value, "n": n}
            assert seen["env"]["MLSHIFT_RUN_NAME"] == f"train-note={value},n={'true' if n is True else n}"
    assert not marker.exists()


def test_the_wrapper_refuses_a_missing_or_odd_index(cluster, capsys, tmp_path):
    dep = _deploy(cluster, "k129")
    assert cluster.verb(capsys, "sweep", dep)[0] == 0
    (job,) = _jobs(cluster)
    table_dir = tmp_path / "trials"
    table_dir.mkdir()
    for index, said in (("6", "trial 6: its file"), ("", "not a trial index"), ("1;x", "not a trial index"), ("../0", "not a trial index")):
        res = _run_trial(job, table_dir, index, ["/bin/sh"])
        assert res.returncode == 1 and said in res.stderr and res.stdout == ""


def test_a_trial_file_reads_back_what_was_written():
    words = ["--a=b c", "'", '"', "$(x)", "\n", "", "é"]
    env = {"MLSHIFT_RUN": "x-001", "MLSHIFT_PARAMS": json.dumps({"q": "it's\n$HOME"})}
    assert read_trial_file(trial_file(words, env)) == (words, env)
    with pytest.raises(ValueError):
        trial_file([], {"BAD NAME": "x"})


# --------------------------------------------------------------------------- W&B per index
def test_the_wandb_variables_of_each_index_are_in_its_file_and_the_shared_ones_in_the_job(cluster, capsys):
    dep = _deploy(cluster, "k129", "experiment.tracking.enabled=true", "experiment.tracking.mode=online")
    cluster.set(FAKE_OC_SECRETS="wandb-api-key")
    rc, _, err = cluster.verb(capsys, "sweep", dep)
    assert rc == 0, err
    (job,) = _jobs(cluster)
    sweep_id = job["metadata"]["labels"]["mlshift.io/sweep"]
    table = _table(cluster)
    for i, (lr, bs) in enumerate((lr, bs) for lr in GRID["lr"] for bs in GRID["bs"]):
        env = table[i][1]
        assert env["MLSHIFT_RUN"] == env["WANDB_RUN_ID"] == f"{sweep_id}-{i:03d}"
        assert env["MLSHIFT_RUN_NAME"] == env["WANDB_NAME"] == f"train-lr={lr},bs={bs}"
        assert env["MLSHIFT_RESULTS"] == f"/workspace/train/results/{sweep_id}-{i:03d}/"
        assert json.loads(env["MLSHIFT_PARAMS"]) == {"lr": lr, "bs": bs}
    shared = {e["name"]: e.get("value") for e in _container(job)["env"]}
    assert shared["WANDB_RUN_GROUP"] == shared["MLSHIFT_RUN_GROUP"] == sweep_id
    assert shared["WANDB_JOB_TYPE"] == "sweep-trial" and shared["WANDB_RESUME"] == "allow"
    for per_trial in ("MLSHIFT_RUN", "MLSHIFT_RUN_NAME", "MLSHIFT_PARAMS", "MLSHIFT_RESULTS", "WANDB_NAME", "WANDB_RUN_ID"):
        assert per_trial not in shared  # only in the trial's file: one value per index


# --------------------------------------------------------------------------- multi-node trials
def test_multi_node_trials_are_one_indexed_job_each_created_in_one_request(cluster, capsys):
    dep = cluster.job("train", "deployment.cluster=k129", "deployment.mode=multi-node", "deployment.num_nodes=2",
                      "resources.gpus=1")
    _set(dep, {"parameters": {"lr": [0.1, 0.01, 0.001]}}, parallelism=1)
    cluster.seed(dep, "service-headless")
    rc, out, err = cluster.verb(capsys, "sweep", dep)
    assert rc == 0, err
    jobs = _jobs(cluster)
    assert len(jobs) == 3 and cluster.verbs().count("create") == 2  # the upload pod; the 3 Jobs, in one request
    sweep_ids = {j["metadata"]["labels"]["mlshift.io/sweep"] for j in jobs}
    assert len(sweep_ids) == 1
    sweep_id = sweep_ids.pop()
    for i, job in enumerate(jobs):
        assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 2  # the index is the rank
        assert job["metadata"]["labels"]["mlshift.io/trial"] == str(i)
        env = {e["name"]: e.get("value") for e in _container(job)["env"]}
        assert env["MLSHIFT_RUN"] == f"{sweep_id}-{i:03d}" and json.loads(env["MLSHIFT_PARAMS"]) == {"lr": GRID["lr"][i]}
        assert [unescape(w) for w in _container(job)["command"]][-1] == f"--lr={GRID['lr'][i]}"
        assert check_object(job) == []
    assert "without a queue all 3 trials ask for their 2 nodes each at once (6 pods, 6 GPUs in all)" in err
    # watched, listed and shown as one sweep
    rc, out, _ = cluster.verb(capsys, "watch", dep, sweep_id)
    assert rc == 0 and f"Sweep {sweep_id} succeeded" in out and "3/3 done" in out
    rc, out, _ = cluster.verb(capsys, "jobs", dep, "--trials")
    rows = out.splitlines()
    assert rc == 0 and sum(sweep_id in r and "3/3 done" in r for r in rows) == 2  # its line, and the trials' heading
    assert any(r.split()[:3] == ["2", f"{sweep_id}-002", "Succeeded"] and "lr=0.001" in r for r in rows)


# --------------------------------------------------------------------------- bayes
@pytest.mark.parametrize("sets,key", [
    ((), "enabled: false"),
    (("experiment.tracking.enabled=true", "experiment.tracking.mode=offline"), "mode: offline"),
    (("experiment.tracking.enabled=true", "secrets.wandb="), "mode: auto, no secrets.wandb"),
])
def test_bayes_without_online_tracking_is_refused_in_one_line_naming_the_key(cluster, capsys, sets, key):
    dep = _deploy(cluster, "k129", *sets, sweep={"method": "bayes", "max_runs": 5, "metric": "loss", "parameters": GRID})
    rc, out, err = cluster.verb(capsys, "sweep", dep)
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: experiment.tracking.mode: a bayes sweep needs W&B tracking online") and key in err
    assert cluster.calls() == []


def test_bayes_with_mode_auto_and_no_wandb_secret_on_the_cluster_is_refused_before_any_job(cluster, capsys):
    dep = _deploy(cluster, "k129", "experiment.tracking.enabled=true",
                  sweep={"method": "bayes", "max_runs": 3, "metric": "loss", "parameters": GRID})
    rc, _, err = cluster.verb(capsys, "sweep", dep, "--wandb-sweep", "me/proj/xyz9")
    last = err.strip().splitlines()[-1]  # after the tracking note: W&B offline (mode auto, no Secret)
    assert rc == 2 and last.startswith("error: experiment.tracking.mode: a bayes sweep needs W&B online")
    assert "the Secret wandb-api-key is missing" in last and _jobs(cluster) == []


def test_bayes_runs_one_wandb_agent_per_index_of_one_indexed_job(cluster, capsys, monkeypatch):
    dep = _deploy(cluster, "k129", "experiment.tracking.enabled=true", "experiment.tracking.mode=online",
                  "experiment.tracking.entity=team", sweep={"method": "bayes", "max_runs": 5, "metric": "val loss",
                                                            "goal": "maximize", "parameters": GRID})
    cluster.set(FAKE_OC_SECRETS="wandb-api-key")
    asked: list[tuple] = []

    def create(config, project, entity):  # the W&B API, offline
        asked.append((config, project, entity))
        return f"{entity}/{project}/abc123"

    monkeypatch.setattr("wizard.ops.jobs.create_wandb_sweep", create)
    rc, out, err = cluster.verb(capsys, "sweep", dep)
    assert rc == 0, err
    ((config, project, entity),) = asked
    assert (project, entity) == ("train", "team")
    assert config["method"] == "bayes" and config["metric"] == {"name": "val loss", "goal": "maximize"}
    assert config["parameters"] == {"lr": {"values": GRID["lr"]}, "bs": {"values": GRID["bs"]}}
    assert config["command"][-3:] == ["--lr", "0.1", "${args}"]  # the configured arguments, then W&B's choice
    assert any(re.fullmatch(r"/workspace/\.runs/[^/]+/main\.py", w) for w in config["command"])  # the sweep's snapshot
    (job,) = _jobs(cluster)
    assert job["spec"]["completions"] == 5 and job["spec"]["parallelism"] == 4 and job["spec"]["backoffLimitPerIndex"] == 1
    command = [unescape(w) for w in _container(job)["command"]]
    assert command[5:] == ["wandb", "agent", "--count", "1", "team/train/abc123"]
    env = {e["name"]: e.get("value") for e in _container(job)["env"]}
    assert env["WANDB_MODE"] == "online" and env["WANDB_JOB_TYPE"] == "sweep-trial"
    table = _table(cluster)
    assert sorted(table) == list(range(5))
    for i, (words, trial_env) in table.items():
        assert words == [] and "WANDB_RUN_ID" not in trial_env and "MLSHIFT_PARAMS" not in trial_env  # W&B assigns them
        assert trial_env["MLSHIFT_RUN"].endswith(f"-{i:03d}")
    assert "W&B sweep: team/train/abc123" in out and "a retried index runs a new trial" in out
    assert json.loads(job["metadata"]["annotations"]["mlshift.io/sweep"])["wandb_sweep"] == "team/train/abc123"


def test_bayes_with_an_existing_wandb_sweep_needs_no_wandb_api_here(cluster, capsys, monkeypatch):
    dep = _deploy(cluster, "k129", "experiment.tracking.enabled=true", "experiment.tracking.mode=online",
                  sweep={"method": "bayes", "max_runs": 3, "metric": "loss", "parameters": GRID})
    monkeypatch.setattr("wizard.ops.jobs.create_wandb_sweep", lambda *a: pytest.fail("no W&B sweep is created"))
    cluster.set(FAKE_OC_SECRETS="wandb-api-key")
    rc, _, err = cluster.verb(capsys, "sweep", dep, "--wandb-sweep", "me/proj/xyz9")
    assert rc == 0, err
    assert [unescape(w) for w in _container(_jobs(cluster)[0])["command"]][-1] == "me/proj/xyz9"
    rc, _, err = cluster.verb(capsys, "sweep", dep, "--wandb-sweep", "not a path")
    assert rc == 2 and "--wandb-sweep: 'not a path' is not ENTITY/PROJECT/SWEEP_ID" in err


def test_bayes_dry_run_shows_the_wandb_sweep_it_would_create(cluster, capsys):
    dep = _deploy(cluster, "k129", "experiment.tracking.enabled=true", "experiment.tracking.mode=online",
                  sweep={"method": "bayes", "max_runs": 3, "metric": "loss", "parameters": GRID})
    rc, out, err = cluster.verb(capsys, "sweep", dep, "--dry-run", "--yaml")
    assert rc == 0, err
    assert "# create the W&B sweep with the W&B API, from here: " in out and '"${args}"' in out
    assert "- wandb\n" in out and "<sweep id>" in out
    assert cluster.calls() == []


# --------------------------------------------------------------------------- one line in watch, list, status
def test_a_sweep_is_one_line_in_watch_list_and_status_and_each_trial_on_request(cluster, capsys):
    dep = _deploy(cluster, "k129")
    cluster.verb(capsys, "sweep", dep)
    (job,) = _jobs(cluster)
    sweep_id, name = job["metadata"]["labels"]["mlshift.io/sweep"], job["metadata"]["name"]
    cluster.set(FAKE_OC_JOB_POLLS="3")
    rc, out, err = cluster.verb(capsys, "jobs", dep)
    lines = out.splitlines()
    assert rc == 0 and len(lines) == 2 and lines[0].split() == ["NAME", "STATE", "DURATION", "SWEEP", "TRIALS", "ARGUMENTS"]
    assert lines[1].startswith(name) and sweep_id in lines[1] and "0/6 done, 4 running, 0 failed, 2 waiting" in lines[1]
    rc, out, err = cluster.verb(capsys, "watch", dep, sweep_id, "--trials")
    assert rc == 0, err
    assert "Running: 0/6 done, 4 running, 0 failed, 2 waiting" in out
    assert "Succeeded: 6/6 done, 0 running, 0 failed, 0 not run" in out and f"Sweep {sweep_id} succeeded" in out
    trials = [ln.split() for ln in out.splitlines() if re.match(rf"\s+\d+\s+{sweep_id}-\d{{3}}\s", ln)]
    assert [t[:3] for t in trials] == [[str(i), f"{sweep_id}-{i:03d}", "Succeeded"] for i in range(6)]
    assert trials[5][3] == f"{name}-5-q8w2r" and trials[5][4:] == ["lr=0.001", "bs=32"]
    rc, out, _ = cluster.verb(capsys, "status", dep)
    jobs_part = out.split("Jobs (", 1)[1].splitlines()
    assert rc == 0 and jobs_part[0].startswith("1;") and len(jobs_part) == 2
    assert jobs_part[1].split()[:3] == [name, "Succeeded", "sweep"] and "6/6 done" in jobs_part[1]
    rc, out, _ = cluster.verb(capsys, "status", dep, "--trials")
    assert rc == 0 and f"  5      {sweep_id}-005" in out


def test_a_sweep_with_failed_trials_fails_its_watch_naming_them(cluster, capsys):
    dep = _deploy(cluster, "k129")
    cluster.verb(capsys, "sweep", dep)
    cluster.set(FAKE_OC_FAILED_INDEXES="1,4")
    sweep_id = _jobs(cluster)[0]["metadata"]["labels"]["mlshift.io/sweep"]
    rc, out, err = cluster.verb(capsys, "watch", dep, "--trials")  # the newest job: the sweep
    assert rc == 1
    assert f"error: sweep {sweep_id} failed" in err and "4/6 done, 0 running, 2 failed, 0 not run (trials 1, 4)" in err
    states = {ln.split()[0]: ln.split()[2] for ln in out.splitlines() if re.match(rf"\s+\d+\s+{sweep_id}-", ln)}
    assert states == {"0": "Succeeded", "1": "Failed", "2": "Succeeded", "3": "Succeeded", "4": "Failed", "5": "Succeeded"}


def test_an_old_cluster_sweep_shows_its_shared_budget(cluster, capsys):
    dep = _deploy(cluster, "k128")
    cluster.verb(capsys, "sweep", dep)
    cluster.set(FAKE_OC_FAILED_INDEXES="2")
    rc, out, err = cluster.verb(capsys, "watch", dep)
    assert rc == 1 and "5/6 done, 0 running, 0 failed, 1 not run; 1 failed attempt(s) of the 6 the trials share" in err


# --------------------------------------------------------------------------- oc requests
def _sweep_calls(cluster: Cluster, capsys, dep: Path, trials: int) -> list[str]:
    _set(dep, {"parameters": {"seed": list(range(trials))}})
    cluster.reset()
    rc, _, err = cluster.verb(capsys, "sweep", dep)
    assert rc == 0, err
    return cluster.verbs()


def test_the_oc_requests_do_not_grow_with_the_trials(cluster, capsys):
    dep = _deploy(cluster, "k129")
    cluster.verb(capsys, "sweep", dep)  # the first snapshot of workspace/
    few = _sweep_calls(cluster, capsys, dep, 2)
    many = _sweep_calls(cluster, capsys, dep, 3000)  # a table of more than one ConfigMap
    assert few == many == ["get", "get", "create", "create"]  # session, shared objects; the Job; its table
    maps = [o for o in cluster.created() if o["kind"] == "ConfigMap"]
    assert len(maps) >= 2 and sum(len(m["data"]) for m in maps) == 3000
    job = [o for o in cluster.created() if o["kind"] == "Job"][-1]
    (vol,) = [v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "trials"]
    assert [s["configMap"]["name"] for s in vol["projected"]["sources"]] == [m["metadata"]["name"] for m in maps]
    assert len({m["metadata"]["name"] for m in maps}) == len(maps)
    for listing in (["jobs", "--trials"], ["status", "--trials"]):
        cluster.reset()
        assert cluster.verb(capsys, listing[0], dep, *listing[1:])[0] == 0
        assert len(cluster.calls()) <= 5, cluster.verbs()


def test_a_table_that_cannot_be_created_takes_the_job_back(cluster, capsys):
    dep = _deploy(cluster, "k129")
    cluster.set(FAKE_OC_FORBID="create:ConfigMap")
    rc, _, err = cluster.verb(capsys, "sweep", dep)
    assert rc != 0 and "may not create configmaps" in err and "is deleted again" in err
    (job,) = _jobs(cluster)  # created, then its table refused: the Job is deleted, no pod waits for a table
    assert cluster.argvs()[-1][:3] == ["delete", "--namespace=team-a", "job"] and job["metadata"]["name"] in cluster.argvs()[-1]
    rc, out, _ = cluster.verb(capsys, "jobs", dep)
    assert rc == 0 and "No jobs of train" in out


# --------------------------------------------------------------------------- the dry run
def test_the_dry_run_shows_the_table_of_trials_first_then_two_creates(cluster):
    dep = _deploy(cluster, "k129")
    res = cluster.script(dep, "run-sweep.sh", "--dry-run")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert re.match(r"# Sweep \S+: 6 trials \(the whole grid\), one Indexed Job, 4 at a time", lines[1])
    assert lines[2].split()[1:] == ["TRIAL", "RUN", "lr", "bs"] and len([ln for ln in lines[3:9] if ln.startswith("#   ")]) == 6
    creates = [ln for ln in lines if ln.startswith("# oc create")]
    assert len(creates) == 2 and "the sweep's Indexed Job" in creates[0] and "the table of 6 trials, 1 ConfigMap(s)" in creates[1]
    assert "kind: Job" not in res.stdout and cluster.calls() == []
