"""deploy, status, delete against the stand-in oc: the commands run, and what the user reads."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_oc.harness import Cluster  # noqa: E402


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    return Cluster(tmp_path, monkeypatch)


def _kinds(call: dict) -> list[str]:
    import yaml

    return [yaml.safe_load(text)["kind"] for text in call["files"].values()]


def test_deploy_server_sequence_build_context_and_url(cluster, capsys):
    dep = cluster.server("llm", "inference.api_key_secret=llm-key")
    cluster.set(FAKE_OC_SECRETS="llm-key,hf-token")
    rc, out, err = cluster.verb(capsys, "deploy", dep)
    assert rc == 0, err
    calls = cluster.calls()
    seq = [c["argv"][0] for c in calls]
    assert seq == ["get", "get", "apply", "get", "start-build", "get", "apply", "get", "get"]
    assert calls[0]["argv"] == ["get", "project", "team-a", "-o", "name"]
    assert calls[1]["argv"][:4] == ["get", "--namespace=team-a", "secret", "hf-token"] and "llm-key" in calls[1]["argv"]
    assert _kinds(calls[2]) == ["ConfigMap", "PersistentVolumeClaim", "ImageStream", "BuildConfig"]
    build = calls[4]
    assert build["argv"][:3] == ["start-build", "--namespace=team-a", "llm"] and "--follow" in build["argv"]
    ctx = build["build_context"]
    assert "Containerfile" in ctx and "mlshift/requirements-runtime.txt" in ctx
    assert "mlshift/wizard/cli.py" in ctx and any(p.startswith("mlshift/runtime/") for p in ctx)
    assert not any("__pycache__" in p for p in ctx)
    for dep_name in ("fastapi", "uvicorn", "prometheus-client", "transformers", "tqdm", "pydantic", "pyyaml"):
        assert dep_name in build["runtime_requirements"].split()
    # a model promoted to the Deployment on the cluster, looked for before it is applied (promote.py)
    assert calls[5]["argv"][1:] == ["--namespace=team-a", "deployment", "llm", "-o", "json", "--ignore-not-found"]
    assert _kinds(calls[6]) == ["Deployment", "Service", "Route"]
    assert calls[7]["argv"][2:5] == ["deployment", "llm", "-o"]
    assert "Ready: https://llm-api-team-a.apps.example.com/v1/completions" in out
    assert "test-inference.sh" in out


def test_deploy_twice_is_safe_and_skips_an_unchanged_build(cluster, capsys):
    dep = cluster.server()
    assert cluster.verb(capsys, "deploy", dep)[0] == 0
    cluster.reset()
    rc, out, _ = cluster.verb(capsys, "deploy", dep)
    assert rc == 0
    assert "start-build" not in cluster.verbs()
    assert "up to date" in out and "deployment.apps/llm unchanged" in out
    # a config edit reaches the pods: the ConfigMap changes, so they are restarted
    cfg = dep / "config.yaml"
    cfg.write_text(cfg.read_text().replace("max_queue: 256", "max_queue: 512"))
    cluster.reset()
    rc, out, _ = cluster.verb(capsys, "deploy", dep, "--build=never")
    assert rc == 0 and "configmap/llm-config configured" in out
    assert ["rollout", "--namespace=team-a", "restart", "deployment/llm"] in cluster.argvs()


def test_deploy_uploads_the_workspace_before_the_pods_start(cluster, capsys):
    dep = cluster.new("app", "deployment.namespace=team-a", "image.build=false")
    (dep / "workspace" / "main.py").write_text("print('hi')\n")
    rc, out, err = cluster.verb(capsys, "deploy", dep)
    assert rc == 0, err
    seq = cluster.verbs()
    assert seq.index("rsync") < [i for i, v in enumerate(seq) if v == "apply"][1]
    pod = [c for c in cluster.created() if c["kind"] == "Pod"][0]
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "app-workspace"
    rsync = [a for a in cluster.argvs() if a[0] == "rsync"][0]
    assert rsync[2].endswith("/workspace/") and rsync[3] == "app-sync:/workspace/app"
    assert ["delete", "--namespace=team-a", "pod", "app-sync", "--ignore-not-found", "--wait=false"] in cluster.argvs()


def test_job_mode_deploy_creates_only_the_shared_objects(cluster, capsys):
    dep = cluster.job()
    rc, out, err = cluster.verb(capsys, "deploy", dep, "--build=never", "--no-upload")
    assert rc == 0, err
    applied = [k for c in cluster.calls() if c["argv"][0] == "apply" for k in _kinds(c)]
    assert applied == ["ConfigMap", "PersistentVolumeClaim", "ImageStream", "BuildConfig"]
    assert "submit-job.sh" in out


def test_missing_secret_prints_the_command_and_applies_nothing(cluster, capsys):
    # A Secret only the user can fill (W&B online); the API key Secret deploy makes itself (tests/test_security.py).
    dep = cluster.job("train", "experiment.tracking.enabled=true", "experiment.tracking.mode=online")
    rc, out, err = cluster.verb(capsys, "deploy", dep)
    assert rc == 2
    assert "oc create secret generic wandb-api-key --from-literal=WANDB_API_KEY=... -n team-a" in err
    assert "apply" not in cluster.verbs() and "create" not in cluster.verbs()
    assert err.strip().count("\n") <= 1  # the optional hf-token note, then the error


@pytest.mark.parametrize("env, expected", [
    ({"FAKE_OC_LOGGED_OUT": "1"}, "not logged in to the cluster"),
    ({"FAKE_OC_UNREACHABLE": "1"}, "cannot reach the cluster"),
    ({"FAKE_OC_PROJECTS": "other"}, "project 'team-a' does not exist"),
    ({"FAKE_OC_FORBID": "apply"}, 'alice may not create configmaps in team-a'),
    ({"FAKE_OC_QUOTA": "storage"}, "quota storage-quota is exceeded (requested requests.storage=50Gi"),
])
def test_refusals_become_one_line_with_the_next_step(cluster, capsys, env, expected):
    dep = cluster.server()
    cluster.set(**env)
    rc, out, err = cluster.verb(capsys, "deploy", dep)
    assert rc == 3
    line = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(line) == 1 and expected in line[0], err
    assert "(" in line[0]  # a next step in parentheses
    assert "Traceback" not in err


def test_not_logged_in_says_how_to_log_in(cluster, capsys):
    dep = cluster.job()
    cluster.set(FAKE_OC_LOGGED_OUT="1")
    rc, _, err = cluster.verb(capsys, "submit", dep)
    assert rc == 3 and "Copy login command" in err


def test_no_current_project(cluster, capsys):
    dep = cluster.new("app")
    cluster.set(FAKE_OC_PROJECT="")
    rc, _, err = cluster.verb(capsys, "status", dep)
    assert rc == 2 and "no current project" in err and "oc project NAME" in err


@pytest.mark.parametrize("pod, expected, hint", [
    ("imagepull", "cannot pull the image", "pull secret"),
    ("crashloop", "keeps crashing (CrashLoopBackOff, 5 restarts, last exit code 1)", "logs.sh --previous"),
    ("oom", "OOMKilled", "raise resources.memory"),
])
def test_deploy_stops_on_a_pod_that_cannot_start(cluster, capsys, pod, expected, hint):
    dep = cluster.server()
    cluster.set(FAKE_OC_POD=pod)
    rc, out, err = cluster.verb(capsys, "deploy", dep, "--build=never")
    assert rc == 2
    assert expected in err and hint in err and "delete.sh" in err


def test_deploy_waits_for_gpus_and_says_why(cluster, capsys):
    dep = cluster.server()
    cluster.set(FAKE_OC_POD="pending-gpu", MLSHIFT_POLL_SECONDS="0.3")
    rc, out, err = cluster.verb(capsys, "deploy", dep, "--build=never", "--timeout=1")
    assert rc == 2
    assert "waiting for free GPUs: 0/5 nodes are available: 3 Insufficient nvidia.com/gpu" in out
    assert "not ready after 1s" in err and "delete.sh" in err


def test_deploy_reports_a_quota_that_refuses_the_pods(cluster, capsys):
    dep = cluster.server()
    cluster.set(FAKE_OC_QUOTA="pods")
    rc, out, err = cluster.verb(capsys, "deploy", dep, "--build=never")
    assert rc == 2 and "quota gpu-quota refuses the pods" in err and "requests.nvidia.com/gpu=4" in err


def test_failed_build_stops_before_the_application(cluster, capsys):
    dep = cluster.server()
    cluster.set(FAKE_OC_BUILD_FAIL="1")
    rc, out, err = cluster.verb(capsys, "deploy", dep)
    assert rc == 2 and "image build of llm failed" in err
    assert cluster.verbs().count("apply") == 1


def test_status_shows_why_a_pod_is_pending(cluster, capsys):
    dep = cluster.server()
    cluster.seed(dep, "deployment")
    cluster.set(FAKE_OC_POD="pending-gpu")
    rc, out, err = cluster.verb(capsys, "status", dep)
    assert rc == 0
    assert "Pending" in out and "waiting for free GPUs" in out and "Insufficient nvidia.com/gpu" in out
    assert "next:" in out


def test_delete_removes_what_deploy_applied_and_keeps_the_volume(cluster, capsys):
    dep = cluster.server()
    cluster.seed(dep, "deployment")
    rc, out, err = cluster.verb(capsys, "delete", dep)
    assert rc == 0
    first = [c for c in cluster.calls() if c["argv"][0] == "delete"][0]
    assert "PersistentVolumeClaim" not in _kinds(first) and "Deployment" in _kinds(first)
    assert "--ignore-not-found" in first["argv"]
    assert "llm-workspace is kept" in out
    # again: nothing left, still fine
    assert cluster.verb(capsys, "delete", dep)[0] == 0


def test_delete_volumes_needs_confirmation(cluster, capsys):
    dep = cluster.server()
    rc, _, err = cluster.verb(capsys, "delete", dep, "--volumes")
    assert rc == 2 and "--yes" in err
    assert "delete" not in cluster.verbs()
    rc, _, _ = cluster.verb(capsys, "delete", dep, "--volumes", "--yes")
    assert rc == 0
    first = [c for c in cluster.calls() if c["argv"][0] == "delete"][0]
    assert "PersistentVolumeClaim" in _kinds(first)
