"""Every generated script, run as a user would: --help, --dry-run, from any directory."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_oc.harness import Cluster  # noqa: E402

from wizard.verbs import VERBS as SCRIPTS  # noqa: E402

JOB_VERBS = {"submit", "watch", "jobs", "sweep", "compare", "promote"}


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    return Cluster(tmp_path, monkeypatch)


def test_every_verb_has_help(cluster, capsys):
    from wizard.cli import main

    server = cluster.server()
    for script in SCRIPTS:
        with pytest.raises(SystemExit) as exit_:
            main([script.verb, str(server), "--help"])
        out = capsys.readouterr().out
        assert exit_.value.code == 0 and "--dry-run" in out and script.verb in out, script.verb
    res = cluster.script(server, "submit-job.sh", "--help")  # and through a script, from elsewhere
    assert res.returncode == 0 and "--set KEY=VALUE" in res.stdout and "-- --lr 0.01" in res.stdout
    assert cluster.calls() == []


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.file for s in SCRIPTS])
def test_every_script_dry_run_prints_oc_commands_and_runs_none(cluster, script):
    sets = ["experiment.sweep={parameters: {lr: [0.1, 0.01]}}"] if script.verb == "sweep" else []
    if script.verb == "promote":
        sets = ["experiment.promote={to: llm, metric: loss}"]
    dep = cluster.job("train", *sets) if script.verb in JOB_VERBS else cluster.server("llm")
    before = (dep / "config.yaml").read_bytes()
    res = cluster.script(dep, script.file, "--dry-run")
    assert res.returncode == 0, res.stderr
    assert cluster.calls() == [], "a dry run ran oc"
    lines = [line for line in res.stdout.splitlines() if line.strip()]
    if script.verb == "run-local":
        assert "runtime serve --config" in res.stdout
        return
    assert lines[0].startswith("# dry run of")
    assert any(line.startswith("oc ") for line in lines), res.stdout
    assert (dep / "config.yaml").read_bytes() == before
    assert "Traceback" not in res.stderr


def test_scripts_pass_arguments_through(cluster):
    dep = cluster.job()
    res = cluster.script(dep, "submit-job.sh", "--set", "resources.gpus=1", "--dry-run", "--", "--lr", "0.5")
    assert res.returncode == 0, res.stderr
    assert "oc create --namespace=team-a -f - -o name <<" in res.stdout
    assert "nvidia.com/gpu: 1" in res.stdout
    assert "- '0.5'" in res.stdout or "- \"0.5\"" in res.stdout


def test_every_run_re_reads_config_yaml_and_only_deploy_re_renders(cluster):
    dep = cluster.server()
    cfg = dep / "config.yaml"
    cfg.write_text(cfg.read_text().replace("port: 8000", "port: 8123"))
    res = cluster.script(dep, "status.sh")
    assert res.returncode == 0, res.stderr
    assert "port: 8000" in (dep / "manifests" / "service.yaml").read_text()  # status only reads
    res = cluster.script(dep, "deploy.sh", "--build=never", "--no-wait")
    assert res.returncode == 0, res.stderr
    assert "port: 8123" in (dep / "manifests" / "service.yaml").read_text()
    applied = [text for c in cluster.calls() if c["argv"][0] == "apply" for text in c["files"].values()]
    assert any("kind: Service" in text and "port: 8123" in text for text in applied)


def test_a_bad_config_is_one_line_and_no_oc(cluster):
    dep = cluster.server()
    cfg = dep / "config.yaml"
    cfg.write_text(cfg.read_text().replace("gpus: 0", "gpuz: 0"))
    res = cluster.script(dep, "deploy.sh")
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "gpuz" in res.stderr and "did you mean 'gpus'" in res.stderr
    assert cluster.calls() == []


def test_no_oc_on_path_says_how_to_get_it(cluster, capsys, monkeypatch):
    dep = cluster.server()
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    rc, out, err = cluster.verb(capsys, "status", dep)
    assert rc == 2 and "'oc' is not on PATH" in err and "Command line tools" in err
