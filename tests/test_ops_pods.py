"""port-forward, test-inference, bench, exec, run-app, sync, jupyter and run-local."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import os
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_oc.harness import Cluster  # noqa: E402
from wizard.ops.pods import port_free  # noqa: E402

SERVER_SELECTOR = "app.kubernetes.io/instance=llm,app.kubernetes.io/component=server"
POD = "llm-5d4f8c7b9-x2x9k"


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    c = Cluster(tmp_path, monkeypatch)
    return c


def _deployed_server(cluster, *sets):
    dep = cluster.server("llm", *sets)
    cluster.seed(dep, "deployment", "service")  # as deploy leaves it, the API key Secret included
    return dep


def _requests(cluster) -> list[dict]:
    f = cluster.log / "requests.jsonl"
    return [json.loads(line) for line in f.read_text().splitlines()] if f.exists() else []


def test_test_inference_completions_through_a_port_forward_found_by_label(cluster, capsys):
    dep = _deployed_server(cluster)
    rc, out, err = cluster.verb(capsys, "test-inference", dep, "--prompt", "Hi there")
    assert rc == 0, err
    get_pods = [a for a in cluster.argvs() if a[:3] == ["get", "--namespace=team-a", "pods"]][0]
    assert get_pods[3:5] == ["-l", SERVER_SELECTOR]
    fwd = [a for a in cluster.argvs() if a[0] == "port-forward"][0]
    assert fwd[2] == f"pod/{POD}" and fwd[3].endswith(":8000")
    (req,) = _requests(cluster)
    assert req["path"] == "/v1/completions"
    assert req["body"] == {"model": "tiny-model", "prompt": "Hi there", "max_tokens": 64}
    assert "answer: Hello from the fake server." in out and "latency:" in out and "7 tokens" in out


def test_test_inference_chat_with_the_api_key_from_the_secret(cluster, capsys):
    dep = _deployed_server(cluster, "inference.endpoint=/v1/chat/completions", "inference.api_key_secret=llm-key")
    cluster.set(FAKE_OC_SECRETS="llm-key")
    rc, out, err = cluster.verb(capsys, "test-inference", dep)
    assert rc == 0, err
    (req,) = _requests(cluster)
    assert req["path"] == "/v1/chat/completions" and req["body"]["messages"][0]["role"] == "user"
    assert req["auth"] == "Bearer sk-test"
    for path in dep.rglob("*"):  # the key is never written anywhere
        if path.is_file():
            assert b"sk-test" not in path.read_bytes()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _on_port(dep: Path, port: int) -> None:
    cfg = dep / "config.yaml"
    cfg.write_text(cfg.read_text().replace("port: 8000", f"port: {port}"))


def _start_port_forward(cluster, dep: Path) -> subprocess.Popen:
    return subprocess.Popen([str(dep / "scripts" / "port-forward.sh")], cwd=cluster.elsewhere, env={**os.environ, **cluster.env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    return proc.communicate(timeout=10)[1]


def test_port_forward_picks_a_free_port_when_the_default_is_taken(cluster):
    dep = _deployed_server(cluster)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        _on_port(dep, taken)
        proc = _start_port_forward(cluster, dep)
        try:
            first = proc.stdout.readline()
        finally:
            err = _stop(proc)
    local = int(first.split("127.0.0.1:")[1].split()[0])
    assert local != taken and f"-> {POD}:{taken}" in first
    assert f"local port {taken} is taken; using {local}" in err


def test_test_inference_leaves_the_served_port_to_port_forward(cluster, capsys):
    """`port-forward.sh &` then test-inference.sh at once, as the README has it: the forward
    test-inference opens for itself takes any free port, never the one port-forward.sh is about to take."""
    dep = _deployed_server(cluster)
    port = _free_port()
    _on_port(dep, port)
    proc = _start_port_forward(cluster, dep)
    try:
        rc, out, err = cluster.verb(capsys, "test-inference", dep)
        assert rc == 0, err
        first = proc.stdout.readline()
        assert first.startswith(f"Forwarding http://127.0.0.1:{port} -> {POD}:{port}")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and port_free(port):
            time.sleep(0.05)
        assert not port_free(port)  # port-forward.sh's oc holds it
        assert proc.poll() is None
    finally:
        err = _stop(proc)
    assert "is taken" not in err and "Unable to listen" not in err
    locals_ = [a[3].split(":")[0] for a in cluster.argvs() if a[0] == "port-forward"]
    assert len(locals_) == 2 and locals_.count(str(port)) == 1  # test-inference's own is another


def test_port_forward_script_runs_in_the_foreground(cluster):
    dep = _deployed_server(cluster)
    proc = subprocess.Popen([str(dep / "scripts" / "port-forward.sh")], cwd=cluster.elsewhere, env={**os.environ, **cluster.env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("Forwarding http://127.0.0.1:") and POD in first
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(a[0] == "port-forward" for a in cluster.argvs()):
            time.sleep(0.05)
        assert [a for a in cluster.argvs() if a[0] == "port-forward"][0][2] == f"pod/{POD}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    # the SIGTERM reached oc too: the local port is free again (no port-forward left on its own)
    port = int(first.split("127.0.0.1:")[1].split()[0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not port_free(port):
        time.sleep(0.05)
    assert port_free(port)


def test_no_ready_pod_says_why(cluster, capsys):
    dep = _deployed_server(cluster)
    cluster.set(FAKE_OC_POD="crashloop")
    rc, _, err = cluster.verb(capsys, "test-inference", dep)
    assert rc == 2 and "no ready pod" in err and "CrashLoopBackOff" in err and "logs.sh --previous" in err
    assert "port-forward" not in cluster.verbs()


def test_test_inference_on_a_job_deployment_is_refused(cluster, capsys):
    dep = cluster.job()
    rc, _, err = cluster.verb(capsys, "test-inference", dep)
    assert rc == 2 and "runs as jobs" in err


def test_bench_runs_the_runtime_benchmark_through_the_forward(cluster, capsys):
    dep = cluster.server()
    rc, out, err = cluster.verb(capsys, "bench", dep, "--dry-run", "--concurrency", "4", "--num-requests", "20", "--stream")
    assert rc == 0, err
    assert f"oc port-forward --namespace=team-a 'pod/<ready pod with {SERVER_SELECTOR}>' 8000:8000" in out
    assert ("python -m runtime bench --url http://127.0.0.1:8000 --concurrency 4 --num-requests 20 --max-tokens 128 "
            "--model tiny-model --stream") in out
    assert cluster.calls() == []


def test_exec_and_run_app_pass_words_without_a_local_shell(cluster, capsys, tmp_path):
    dep = cluster.new("box", "application.execution.mode=manual", "deployment.namespace=team-a")
    subprocess.run(["oc", "apply", "-f", str(dep / "manifests" / "deployment.yaml")], env={**os.environ, **cluster.env},
                   check=True, capture_output=True)
    marker = tmp_path / "pwned"
    rc, _, err = cluster.verb(capsys, "exec", dep, "--", "echo", f"$(touch {marker})")
    assert rc == 0, err
    ex = [a for a in cluster.argvs() if a[0] == "exec"][-1]
    assert ex[-3:] == ["--", "echo", f"$(touch {marker})"] and "pod/box-5d4f8c7b9-x2x9k" in ex
    rc, _, err = cluster.verb(capsys, "run-app", dep, "--", "--note", "a 'b' `c`")
    assert rc == 0, err
    ex = [a for a in cluster.argvs() if a[0] == "exec"][-1]
    i = ex.index("--")
    assert ex[i + 1:i + 3] == ["/bin/sh", "-c"] and ex[i + 4:] == ["mlshift-run", "/workspace/box", "python3",
                                                                  "/workspace/box/main.py", "--note", "a 'b' `c`"]
    assert not marker.exists()
    cluster.set(FAKE_OC_EXEC_RC="7")
    rc, _, _ = cluster.verb(capsys, "exec", dep, "--", "false")
    assert rc == 7


def test_sync_in_job_mode_uses_a_short_lived_pod(cluster, capsys):
    dep = cluster.job()
    cluster.seed(dep)
    rc, out, err = cluster.verb(capsys, "sync", dep)
    assert rc == 0, err
    seq = [a[0] for a in cluster.argvs()]
    assert seq == ["get", "delete", "create", "wait", "exec", "rsync", "delete"]
    rsync = [a for a in cluster.argvs() if a[0] == "rsync"][0]
    assert rsync[3] == "train-sync:/workspace/train"
    cluster.reset()
    rc, out, err = cluster.verb(capsys, "sync", dep, "down")
    assert rc == 0, err
    rsync = [a for a in cluster.argvs() if a[0] == "rsync"][0]
    assert rsync[2] == "train-sync:/workspace/train/results" and rsync[3] == str(dep)


def test_jupyter_dry_run(cluster, capsys):
    dep = cluster.new("box", "application.execution.mode=manual")
    rc, out, err = cluster.verb(capsys, "jupyter", dep, "--dry-run")
    assert rc == 0, err
    assert "jupyterlab" in out and "oc port-forward" in out and "8888:8888" in out


def test_run_local_runs_the_app_here_with_its_workspace(cluster, capfd):
    dep = cluster.new("app", "application.execution.arguments=--x 'a b'")
    (dep / "workspace" / "main.py").write_text("import os, sys; print('cwd', os.getcwd()); print('args', sys.argv[1:]); "
                                               "print('cfg', open(os.environ['MLSHIFT_CONFIG']).read())\n")
    cluster.set(MLSHIFT_PYTHON=sys.executable)
    rc, out, err = cluster.verb(capfd, "run-local", dep, "--python", sys.executable)
    assert rc == 0, err
    assert f"cwd {dep / 'workspace'}" in out and "args ['--x', 'a b']" in out
    assert "\n  cpu: '2'\n" in out and "# cpu" not in out  # the config the pod reads: derived values filled in
    assert "  # cpu: '2'" in (dep / "config.yaml").read_text()  # the user's file is only read
    assert cluster.calls() == []


def test_run_local_serves_the_model_with_the_runtime(cluster, capsys):
    dep = cluster.server()
    rc, out, _ = cluster.verb(capsys, "run-local", dep, "--dry-run")
    assert rc == 0
    assert f"-m runtime serve --config {dep / 'config.yaml'} --host 127.0.0.1" in out
