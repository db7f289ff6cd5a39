"""What a change costs a served application (docs/rollouts.md): the Deployment's strategy by its
number of replicas, the server's preStop pause and grace period (inference.drain_timeout), the
readiness probe, and what the wizard's summary says about it. Rendered manifests, checked against
the strict schemas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from wizard.blueprint import DEFAULT_GRACE_SECONDS, PRESTOP_PAUSE_SECONDS, STOP_MARGIN_SECONDS, Blueprint
from wizard.config import Config
from wizard.errors import ConfigError
from wizard.loader import validate, with_default_name
from wizard.render import render_files
from wizard.summary import summary_lines
from wizard.validate import check_manifest_text

ROLLING = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
RECREATE = {"type": "Recreate"}


def config(inference: dict[str, Any] | None = None, **sections: Any) -> Config:
    """A served application: the included server on transformers (CPU) unless told otherwise."""
    data: dict[str, Any] = {
        "application": {"type": "model_server"},
        "inference": {"enabled": True, "engine": "transformers", "model": "gpt2", **(inference or {})},
        "image": {"build": True},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return validate(with_default_name(data, "llm"), source="test")


def vllm(**inference: Any) -> Config:
    """The included server on vLLM's own image (no build), one GPU."""
    return config({"engine": "vllm", **inference}, resources={"gpus": 1}, image={"build": False})


def manifests(c: Config) -> dict[str, dict]:
    files = render_files(c, c.name)
    for rel, (text, _) in files.items():
        if rel.startswith("manifests/"):
            assert check_manifest_text(text) == [], rel
    return {rel.removeprefix("manifests/"): yaml.safe_load(text) for rel, (text, _) in files.items() if rel.startswith("manifests/")}


def pod(objs: dict[str, dict], kind: str = "deployment.yaml") -> dict:
    return objs[kind]["spec"]["template"]["spec"]


# --------------------------------------------------------------------------- the strategy
@pytest.mark.parametrize(("made", "strategy"), [
    (lambda: config(), RECREATE),
    (lambda: vllm(), RECREATE),  # one replica with a GPU and a ReadWriteOnce volume
    (lambda: config({"replicas": 0}), RECREATE),
    (lambda: config({"replicas": 3}, resources={"storage": {"access_mode": "ReadWriteMany"}}), ROLLING),
    (lambda: config({"engine": "vllm", "replicas": 2}, resources={"gpus": 8, "storage": {"access_mode": "ReadWriteMany"}},
                    image={"build": False}), ROLLING),  # GPUs: no spare set of them is needed
    (lambda: config({"replicas": 1, "autoscaling": {"enabled": True, "min_replicas": 1, "max_replicas": 3}},
                    resources={"storage": {"access_mode": "ReadWriteMany"}}), ROLLING),  # up to 3 at once
    (lambda: config(application={"type": "single_file", "source": {"path": "a.py"}}, inference={"enabled": False}), RECREATE),
    (lambda: config(application={"type": "single_file", "source": {"path": "a.py"}, "execution": {"mode": "manual"}},
                    inference={"enabled": False}), RECREATE),
], ids=["one-replica", "one-vllm-replica-with-a-gpu", "no-replica", "three-replicas", "two-replicas-with-8-gpus",
        "autoscaled-to-3", "an-application-that-does-not-serve", "a-pod-to-work-in"])
def test_one_replica_is_recreated_and_more_are_replaced_one_at_a_time(made, strategy) -> None:
    objs = manifests(made())
    assert objs["deployment.yaml"]["spec"]["strategy"] == strategy


def test_replicas_on_a_read_write_once_volume_are_still_refused_by_the_sharing_rule() -> None:
    """A rolling update with maxSurge 0 never needs an extra pod, but two replicas on several
    nodes cannot share a ReadWriteOnce volume in the first place: that stays refused, in one line."""
    with pytest.raises(ConfigError) as info:
        config({"replicas": 2}, resources={"storage": {"access_mode": "ReadWriteOnce"}})
    assert "2 replicas on several nodes cannot share a ReadWriteOnce volume" in str(info.value)


# --------------------------------------------------------------------------- pause, grace period, probes
def test_a_server_gets_the_pause_and_a_grace_period_for_its_drain() -> None:
    spec = pod(manifests(config()))
    c = spec["containers"][0]
    assert c["lifecycle"] == {"preStop": {"exec": {"command": ["sleep", "10"]}}}
    assert spec["terminationGracePeriodSeconds"] == 10 + 30 + 15 == PRESTOP_PAUSE_SECONDS + 30 + STOP_MARGIN_SECONDS
    # readiness notices a draining server (503) within 10 s; liveness stays as it was
    assert {k: c["readinessProbe"][k] for k in ("periodSeconds", "failureThreshold")} == {"periodSeconds": 5, "failureThreshold": 2}
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}

    longer = pod(manifests(config({"drain_timeout": 300})))
    assert longer["terminationGracePeriodSeconds"] == 10 + 300 + 15


def test_vllms_image_gets_the_pause_the_grace_period_and_the_drain_as_its_shutdown_timeout() -> None:
    spec = pod(manifests(vllm(drain_timeout=120)))
    c = spec["containers"][0]
    assert c["command"][:2] == ["vllm", "serve"]
    assert c["command"][c["command"].index("--shutdown-timeout") + 1] == "120"
    assert c["lifecycle"] == {"preStop": {"exec": {"command": ["sleep", "10"]}}}
    assert spec["terminationGracePeriodSeconds"] == 10 + 120 + 15
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"  # vLLM's readiness is its /health

    none = pod(manifests(vllm(drain_timeout=0)))  # 0: vLLM's own default, left off its command line
    assert "--shutdown-timeout" not in none["containers"][0]["command"]
    assert none["terminationGracePeriodSeconds"] == 10 + 0 + 15


def test_a_server_of_its_own_gets_the_same_pause_and_grace_period() -> None:
    c = config({"port": 8080}, application={"type": "custom_command", "source": {"command": "python -m http.server 8080"}})
    spec = pod(manifests(c))
    assert spec["containers"][0]["lifecycle"]["preStop"] == {"exec": {"command": ["sleep", "10"]}}
    assert spec["terminationGracePeriodSeconds"] == 55


@pytest.mark.parametrize("kind", ["job", "manual"])
def test_pods_without_a_server_keep_the_default_grace_period_and_no_pause(kind: str) -> None:
    c = config(application={"type": "single_file", "source": {"path": "a.py"}, "execution": {"mode": kind}}, inference={"enabled": False})
    spec = pod(manifests(c), "job.yaml" if kind == "job" else "deployment.yaml")
    assert spec["terminationGracePeriodSeconds"] == DEFAULT_GRACE_SECONDS == 30
    assert "lifecycle" not in spec["containers"][0] and "readinessProbe" not in spec["containers"][0]
    assert Blueprint(c, c.name).pre_stop is None


def test_a_bad_drain_timeout_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        config({"drain_timeout": -5})
    assert "inference.drain_timeout" in str(info.value) and "greater than or equal to 0" in str(info.value)
    with pytest.raises(ConfigError) as info:
        config({"drain_timeout": "soon"})
    assert "inference.drain_timeout" in str(info.value)


# --------------------------------------------------------------------------- the summary
def rollout_line(c: Config, tmp_path: Path) -> str:
    lines = [line for line in summary_lines(c, c.name, tmp_path / c.name, force=False, old=None) if line.startswith("  Rollout")]
    assert len(lines) <= 1
    return lines[0] if lines else ""


def test_the_summary_says_what_a_change_costs(tmp_path: Path) -> None:
    assert rollout_line(config(), tmp_path) == (
        "  Rollout      one replica: a change stops the server (its drain of up to 30 s), then starts the new one "
        "(Recreate): no service until that one has loaded the model")
    assert rollout_line(config({"replicas": 3, "drain_timeout": 60}, resources={"storage": {"access_mode": "ReadWriteMany"}}), tmp_path) == (
        "  Rollout      3 replicas: a change replaces them one at a time, with no extra pod (RollingUpdate); each takes "
        "its drain of up to 60 s + the model's load, while the others serve")
    autoscaled = config({"autoscaling": {"enabled": True, "max_replicas": 4}}, resources={"storage": {"access_mode": "ReadWriteMany"}})
    assert rollout_line(autoscaled, tmp_path).startswith("  Rollout      up to 4 replicas: a change replaces them one at a time")
    assert rollout_line(config({"replicas": 0}), tmp_path) == ""
    assert rollout_line(config(application={"type": "single_file", "source": {"path": "a.py"}, "execution": {"mode": "job"}},
                               inference={"enabled": False}), tmp_path) == ""
