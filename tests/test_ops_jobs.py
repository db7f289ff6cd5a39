"""submit (one job, a batch of 50 in one request, hostile arguments), watch, jobs, logs, sweep (more: test_sweeps_indexed.py)."""

from __future__ import annotations

import itertools
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from fake_oc.harness import Cluster, unescape  # noqa: E402

NAME_RE = re.compile(r"^train-\d{6}-\d{6}-[a-z0-9]{4}$")


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    c = Cluster(tmp_path, monkeypatch)
    c.dep = c.job()
    c.seed(c.dep)
    return c


def _jobs(cluster) -> list[dict]:
    return [o for o in cluster.created() if o["kind"] == "Job"]


def test_submit_one_job_unique_name_labels_and_next_step(cluster, capsys):
    before = (cluster.dep / "config.yaml").read_bytes()
    rc, out, err = cluster.verb(capsys, "submit", cluster.dep)
    assert rc == 0, err
    # project, shared objects; the first snapshot of workspace/ (the short-lived pod: delete an old
    # one, create, wait; rsync, exec; delete); the job
    assert cluster.verbs() == ["get", "get", "delete", "create", "wait", "rsync", "exec", "delete", "create"]
    (job,) = _jobs(cluster)
    name = job["metadata"]["name"]
    assert NAME_RE.match(name) and len(name) <= 63
    labels = job["metadata"]["labels"]
    sub = name[len("train-"):]
    assert labels["mlshift.io/submission"] == sub and labels["app.kubernetes.io/instance"] == "train"
    assert job["spec"]["template"]["metadata"]["labels"]["mlshift.io/submission"] == sub
    assert f"watch-job.sh {sub}" in out
    assert (cluster.dep / "config.yaml").read_bytes() == before
    # the run's config travels with its pods, mounted where the application reads it
    pod = job["spec"]["template"]
    assert "version: 1" in pod["metadata"]["annotations"]["mlshift.io/config"]
    vol = [v for v in pod["spec"]["volumes"] if v["name"] == "config"][0]
    down, launcher = vol["projected"]["sources"]  # with the launcher from the ConfigMap (tests/test_tracking.py)
    assert down["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"] == "metadata.annotations['mlshift.io/config']"
    assert launcher["configMap"]["items"] == [{"key": "launch.py", "path": "launch.py"}]


HOSTILE = ['a"b', "it's", "$(touch {marker})", "`touch {marker}`", "line1\nline2", "$HOME", "${{PATH}}", "--x=; rm -rf /", "\\n", ""]


def test_hostile_arguments_reach_the_container_byte_for_byte(cluster, capsys, tmp_path):
    marker = tmp_path / "pwned"
    words = [w.format(marker=marker) for w in HOSTILE]
    res = cluster.script(cluster.dep, "submit-job.sh", "--", *words)
    assert res.returncode == 0, res.stderr
    (job,) = _jobs(cluster)
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    snapshot = job["metadata"]["labels"]["mlshift.io/snapshot"]
    assert command[:3] == ["python3", "/etc/mlshift/launch.py", f"/workspace/.runs/{snapshot}/main.py"]
    assert [unescape(w) for w in command[3:]] == words
    assert "$(touch" not in "".join(command).replace("$$(touch", "")  # every $ doubled for Kubernetes
    assert not marker.exists()


def test_hostile_arguments_through_set_and_config(cluster, capsys, tmp_path):
    marker = tmp_path / "pwned"
    text = f"--note 'say \"hi\" $(touch {marker})' --q `touch {marker}`"
    rc, _, err = cluster.verb(capsys, "submit", cluster.dep, "--set", f"application.execution.arguments={text}")
    assert rc == 0, err
    (job,) = _jobs(cluster)
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    import shlex

    assert [unescape(w) for w in command[3:]] == shlex.split(text)
    assert not marker.exists()
    assert "--lr 0.1" in (cluster.dep / "config.yaml").read_text()


def test_set_overrides_this_submission_only(cluster, capsys):
    rc, _, err = cluster.verb(capsys, "submit", cluster.dep, "--set", "resources.gpus=2")
    assert rc == 0, err
    (job,) = _jobs(cluster)
    res = job["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert res["limits"]["nvidia.com/gpu"] == 2
    assert "gpus: 0" in (cluster.dep / "config.yaml").read_text()
    assert "gpus: 2" in job["spec"]["template"]["metadata"]["annotations"]["mlshift.io/config"]


def test_a_bad_set_is_one_line_and_submits_nothing(cluster, capsys):
    rc, _, err = cluster.verb(capsys, "submit", cluster.dep, "--set", "resources.gpu=2")
    assert rc == 2 and "did you mean 'gpus'" in err and err.count("\n") == 1
    assert cluster.calls() == []
    rc, _, err = cluster.verb(capsys, "submit", cluster.dep, "--set", "application.execution.mode=auto_start")
    assert rc == 2 and "does not run as jobs" in err


def test_batch_of_50_jobs_uses_as_many_oc_requests_as_one(cluster, capsys, tmp_path):
    cluster.verb(capsys, "submit", cluster.dep)  # uploads workspace/: its first snapshot
    cluster.reset()
    rc, _, _ = cluster.verb(capsys, "submit", cluster.dep)  # nothing changed: nothing to upload
    assert rc == 0
    one = len(cluster.calls())
    cluster.reset()
    batch = tmp_path / "runs.yaml"
    batch.write_text("\n".join(f"- {{set: [resources.cpu={1 + i % 3}], args: [--seed, '{i}']}}" for i in range(50)) + "\n")
    start = time.monotonic()
    rc, out, err = cluster.verb(capsys, "submit", cluster.dep, "--batch", str(batch))
    took = time.monotonic() - start
    assert rc == 0, err
    assert len(cluster.calls()) == one == 3
    assert [c["argv"][0] for c in cluster.calls()].count("create") == 1
    jobs = _jobs(cluster)
    assert len(jobs) == 50 and len({j["metadata"]["name"] for j in jobs}) == 50
    seeds = [unescape(j["spec"]["template"]["spec"]["containers"][0]["command"][-1]) for j in jobs]
    assert seeds == [str(i) for i in range(50)]
    assert "Submitted 50 jobs" in out
    print(f"\n50 jobs: {len(cluster.calls())} oc requests in {took:.2f}s")
    assert took < 20


def test_repeat_submits_identical_jobs_in_one_request(cluster, capsys):
    rc, out, _ = cluster.verb(capsys, "submit", cluster.dep, "--repeat", "5")
    assert rc == 0 and len(_jobs(cluster)) == 5 and cluster.verbs().count("create") == 2  # the upload pod, the jobs


def test_submit_before_deploy_says_deploy_first(tmp_path, monkeypatch, capsys):
    c = Cluster(tmp_path, monkeypatch)
    dep = c.job()
    rc, _, err = c.verb(capsys, "submit", dep)
    assert rc == 2 and "not deployed" in err and "deploy.sh" in err
    assert "create" not in c.verbs()


def test_quota_refusing_jobs(cluster, capsys):
    cluster.set(FAKE_OC_QUOTA="create")
    rc, _, err = cluster.verb(capsys, "submit", cluster.dep)
    assert rc == 3
    assert "quota job-count is exceeded (requested count/jobs.batch=1, used count/jobs.batch=20" in err


def test_watch_follows_logs_and_exits_with_the_outcome(cluster, capsys):
    cluster.verb(capsys, "submit", cluster.dep)
    res = cluster.script(cluster.dep, "watch-job.sh")
    assert res.returncode == 0, res.stderr
    assert "Final loss: 0.125" in res.stdout and "succeeded" in res.stdout
    logs = [a for a in cluster.argvs() if a[0] == "logs"]
    assert logs and logs[0][2].startswith("job/train-") and "-f" in logs[0]


def test_watch_a_failed_job_exits_1(cluster, capsys):
    cluster.set(FAKE_OC_JOB="Failed")
    cluster.verb(capsys, "submit", cluster.dep)
    name = _jobs(cluster)[0]["metadata"]["name"]
    rc, out, err = cluster.verb(capsys, "watch", cluster.dep, name[len("train-"):], "--no-logs")
    assert rc == 1 and "failed" in err and "backoff limit" in err


def test_watch_a_pending_job_says_why_and_times_out(cluster, capsys):
    cluster.set(FAKE_OC_POD="pending-gpu", FAKE_OC_JOB_POLLS="1000", MLSHIFT_POLL_SECONDS="0.3")
    cluster.verb(capsys, "submit", cluster.dep)
    rc, out, err = cluster.verb(capsys, "watch", cluster.dep, "--timeout", "1")
    assert rc == 2 and "waiting for free GPUs" in out and "has not started after 1s" in err


def test_watch_an_unknown_job(cluster, capsys):
    rc, _, err = cluster.verb(capsys, "watch", cluster.dep, "nope")
    assert rc == 2 and "no job train-nope" in err and "list-jobs.sh" in err


def test_jobs_and_logs(cluster, capfd):
    cluster.verb(capfd, "submit", cluster.dep, "--", "--lr", "0.3")
    rc, out, _ = cluster.verb(capfd, "jobs", cluster.dep)
    assert rc == 0 and "NAME" in out and "--lr 0.3" in out
    rc, out, _ = cluster.verb(capfd, "logs", cluster.dep)
    assert rc == 0 and "Final loss" in out


def test_sweep_submits_the_grid_as_one_indexed_job_and_its_table(cluster, capsys):
    cfg = cluster.dep / "config.yaml"
    import yaml

    from wizard.render import read_trial_file

    data = yaml.safe_load(cfg.read_text())
    data["experiment"]["sweep"] = {"parameters": {"lr": [0.1, 0.01], "bs": [16, 32, 64]}, "metric": "Final loss"}
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    rc, out, err = cluster.verb(capsys, "sweep", cluster.dep)
    assert rc == 0, err
    (job,) = _jobs(cluster)  # the trials are the indexes of one Job (tests/test_sweeps_indexed.py)
    assert job["spec"]["completions"] == 6 and cluster.verbs().count("create") == 3  # the upload pod, the job, its table
    cmd = [unescape(w) for w in job["spec"]["template"]["spec"]["containers"][0]["command"]]
    assert cmd[-2:] == ["--lr", "0.1"]  # the configured arguments; each trial's follow from its file
    (table,) = [o for o in cluster.created() if o["kind"] == "ConfigMap"]
    assert read_trial_file(table["data"]["0"])[0] == ["--lr=0.1", "--bs=16"]
    assert read_trial_file(table["data"]["5"])[0] == ["--lr=0.01", "--bs=64"]



# Sweeps over spaces far too large to list: 8 parameters of 20 values is 25,600,000,000 combinations.
HUGE = {f"p{i}": list(range(100 * i, 100 * i + 20)) for i in range(8)}
ADDRESS_SPACE = 1 << 30  # run-sweep.sh runs in 1 GiB; listing the product would need hundreds of GiB


def _set_sweep(cluster, sweep: dict) -> None:
    cfg = cluster.dep / "config.yaml"
    data = yaml.safe_load(cfg.read_text())
    data["experiment"]["sweep"] = sweep
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))


def _run_sweep(cluster, sweep: dict, *args: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """run-sweep.sh as a user runs it, with its address space capped; returns it and each job's parameters."""
    _set_sweep(cluster, sweep)
    if "--dry-run" in args:
        args = (*args, "--yaml")  # a dry run prints the Jobs themselves only with --yaml
    res = subprocess.run([str(cluster.dep / "scripts" / "run-sweep.sh"), *args], cwd=cluster.elsewhere,
                         env={**os.environ, **cluster.env}, capture_output=True, text=True, timeout=300,
                         preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE)))
    from wizard.render import read_trial_file

    if "--dry-run" in args and res.returncode == 0:
        body = res.stdout.rsplit("<<'MLSHIFT_STDIN_END'\n", 1)[1].split("\nMLSHIFT_STDIN_END", 1)[0]  # the last: the table
        tables = yaml.safe_load(body)["items"]
    else:
        tables = [o for o in cluster.created() if o["kind"] == "ConfigMap"]
    files = {int(k): v for t in tables for k, v in t["data"].items()}
    return res, [json.loads(read_trial_file(files[i])[1]["MLSHIFT_PARAMS"]) for i in sorted(files)]


def _within(params: dict, space: dict) -> bool:
    return list(params) == list(space) and all(params[k] in space[k] for k in space)


def test_random_sweep_over_a_huge_space_draws_max_runs_distinct_combinations(cluster):
    res, trials = _run_sweep(cluster, {"method": "random", "max_runs": 5, "parameters": HUGE}, "--dry-run", "--seed", "7")
    assert res.returncode == 0, res.stderr[-2000:]
    assert len(trials) == 5 and all(_within(t, HUGE) for t in trials)
    assert len({tuple(t.values()) for t in trials}) == 5
    again, same = _run_sweep(cluster, {"method": "random", "max_runs": 5, "parameters": HUGE}, "--dry-run", "--seed", "7")
    assert again.returncode == 0 and same == trials  # a seed repeats the draw


def test_grid_over_a_huge_space_with_max_runs_takes_the_first_combinations(cluster):
    res, trials = _run_sweep(cluster, {"method": "grid", "max_runs": 7, "parameters": HUGE}, "--dry-run")
    assert res.returncode == 0, res.stderr[-2000:]
    first = [dict(zip(HUGE, combo)) for combo in itertools.islice(itertools.product(*HUGE.values()), 7)]
    assert trials == first and len({tuple(t.values()) for t in trials}) == 7
    res, trials = _run_sweep(cluster, {"method": "grid", "max_runs": 7, "parameters": HUGE}, "--max-runs", "3")
    assert res.returncode == 0, res.stderr[-2000:]
    assert trials == first[:3] and cluster.verbs().count("create") == 3  # the upload pod; the sweep's Job; its table


def test_a_grid_too_large_to_submit_is_refused_with_its_size_and_largest_parameter(cluster):
    space = {**HUGE, "p3": list(range(50))}  # 20**7 * 50 combinations; p3 has the most values
    res, trials = _run_sweep(cluster, {"method": "grid", "parameters": space}, "--dry-run")
    assert res.returncode != 0 and trials == []
    message = res.stderr.strip()
    assert "\n" not in message and "Traceback" not in message and "MemoryError" not in message
    assert "experiment.sweep.parameters" in message
    assert f"{20 ** 7 * 50:,} combinations" in message and "'p3' contributes most (50 values)" in message
    assert "10,000" in message and "max_runs" in message


def test_max_runs_above_the_bound_is_refused_in_one_line(cluster, capsys):
    _set_sweep(cluster, {"parameters": {"lr": [0.1, 0.01]}})
    rc, out, err = cluster.verb(capsys, "sweep", cluster.dep, "--max-runs", "10001")
    assert rc != 0 and "--max-runs: 10,001 is more than the 10,000 trials one sweep may run" in err
    assert "Traceback" not in err and _jobs(cluster) == []


def test_submitted_jobs_pass_the_strict_kubernetes_schema(cluster, capsys, tmp_path):
    from wizard.validate import check_object

    res = cluster.script(cluster.dep, "submit-job.sh", "--", *[w.format(marker=tmp_path / "m") for w in HOSTILE])
    assert res.returncode == 0, res.stderr
    (job,) = _jobs(cluster)
    assert check_object(job) == []
