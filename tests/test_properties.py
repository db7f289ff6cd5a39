"""Properties over any config the model accepts: schema-valid manifests, clean scripts, and user
text that reaches the container byte for byte and never runs on the user's machine."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from wizard.errors import ConfigError
from wizard.loader import validate
from wizard.render import plan_writes, render_files, write
from wizard.validate import check_manifest_text, check_scripts

from conftest import ROOT

HOSTILE = ["it's", '"quoted"', "$(touch PWNED)", "`touch PWNED`", "a\nb", "$HOME", "$$", "$(HOME)", "; rm -rf /",
           "--flag=$(id)", "\\", "{{ config }}", "#", "*", "ü ✓", "\t", "\x85", "\u2028", "\ufeff", "\r\n", "'", "", "--", "!!", "&", "|", ">x"]
words = st.one_of(st.sampled_from(HOSTILE), st.text(st.characters(blacklist_categories=("Cs",)), max_size=12))
names = st.from_regex(r"[a-z]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)

configs = st.fixed_dictionaries({
    "deployment": st.one_of(
        st.just({"mode": "single-node"}),
        st.fixed_dictionaries({"mode": st.just("multi-node"), "num_nodes": st.integers(2, 8)}),
    ),
    "application": st.fixed_dictionaries({
        "name": names,
        "type": st.sampled_from(["single_file", "directory", "custom_command", "model_server", "batch_inference"]),
        "source": st.fixed_dictionaries({
            "path": st.sampled_from(["train.py", "src", "./job.py", "/opt/code/run.py"]),
            "entry_point": st.sampled_from(["main.py", "pkg/run.py"]),
            "command": st.sampled_from(["python serve.py --port 8000", "bash -c 'echo $HOME'", "torchrun x.py"]),
        }),
        "execution": st.fixed_dictionaries({
            "mode": st.sampled_from(["auto_start", "job", "manual"]),
            "arguments": st.lists(words, max_size=5),
        }),
        "requirements": st.sampled_from([None, "requirements.txt"]),
    }),
    "resources": st.fixed_dictionaries({"gpus": st.integers(0, 8)}, optional={
        "gpu_product": st.sampled_from(["NVIDIA-A100-SXM4-80GB"]),
        "memory": st.sampled_from(["8Gi", "64Gi", "300GB"]),
    }),
    "image": st.fixed_dictionaries({"build": st.booleans()}),
    "inference": st.fixed_dictionaries({
        "enabled": st.booleans(),
        "engine": st.sampled_from(["vllm", "transformers"]),
        "model": st.sampled_from(["gpt2", "meta-llama/Llama-3-8b", "/workspace/models/m"]),
    }, optional={
        "route": st.fixed_dictionaries({"enabled": st.booleans()}),
        "autoscaling": st.fixed_dictionaries({"enabled": st.booleans()}),
        "api_key_secret": st.sampled_from(["api-key", None]),
    }),
    "experiment": st.fixed_dictionaries({
        "tracking": st.fixed_dictionaries({"enabled": st.booleans(), "tags": st.lists(words, max_size=3)}),
    }),
    "deployment_namespace": st.sampled_from([None, "team-a"]),
    "service_monitor": st.booleans(),
})


def accepted(raw: dict):
    data = {k: v for k, v in raw.items() if k not in ("deployment_namespace", "service_monitor")}
    data["deployment"] = {**data["deployment"], "namespace": raw["deployment_namespace"]}
    data["monitoring"] = {"service_monitor": raw["service_monitor"]}
    try:
        return validate(data, source="generated")
    except ConfigError:
        assume(False)


def kubernetes_expand(word: str, env: dict[str, str]) -> str:
    """What Kubernetes makes of one command word: $(VAR) from the container's env, $$ -> $."""
    out, i = [], 0
    while i < len(word):
        if word[i] == "$" and i + 1 < len(word):
            nxt = word[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = word.find(")", i + 2)
                if end != -1:
                    var = word[i + 2:end]
                    out.append(env.get(var, word[i:end + 1]))
                    i = end + 1
                    continue
        out.append(word[i])
        i += 1
    return "".join(out)


@settings(max_examples=int(os.environ.get("PROPERTY_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(configs)
def test_any_accepted_config_renders_schema_valid_manifests(raw):
    config = accepted(raw)
    files = render_files(config, config.name)
    for rel, (text, _) in files.items():
        if rel.startswith("manifests/"):
            assert check_manifest_text(text) == [], rel


@settings(max_examples=int(os.environ.get("PROPERTY_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(configs)
def test_user_arguments_reach_the_container_byte_for_byte(raw):
    config = accepted(raw)
    assume(config.application.enabled and config.application.execution.mode != "manual")
    files = render_files(config, config.name)
    workload = "job.yaml" if config.application.execution.mode == "job" else "deployment.yaml"
    pod = yaml.safe_load(files[f"manifests/{workload}"][0])["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e.get("value", "<from-ref>") for e in container["env"]}
    effective = [kubernetes_expand(w, env) for w in container["command"]]
    args = config.application.execution.argv()
    assert effective[len(effective) - len(args):] == args
    # The config the pod reads is the same config, whatever text it holds.
    mounted = yaml.safe_load(yaml.safe_load(files["manifests/configmap.yaml"][0])["data"]["config.yaml"])
    assert validate(mounted, source="configmap") == config


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                                                  HealthCheck.function_scoped_fixture])
@given(configs)
def test_any_accepted_config_renders_shellcheck_clean_scripts(tmp_path_factory, raw):
    config = accepted(raw)
    target = tmp_path_factory.mktemp("dep") / config.name
    files = render_files(config, config.name, with_config=True)
    write(target, files, plan_writes(target, files))
    problems = check_scripts(sorted((target / "scripts").glob("*.sh")))
    assert problems == []


def test_hostile_text_never_runs_in_the_scripts(tmp_path: Path):
    """Hostile text in every free-text answer; every script is run; nothing it says is executed."""
    marker = tmp_path / "PWNED"
    hostile = f"$(touch {marker}) `touch {marker}` ; touch {marker} ' \" \n"
    data = {
        "application": {"name": "evil", "type": "custom_command",
                        "source": {"command": "python serve.py --tag " + shlex.quote(hostile)},
                        "execution": {"mode": "auto_start", "arguments": [hostile, "--x", hostile]}},
        "inference": {"enabled": True, "model": hostile, "served_model_name": hostile},
        "experiment": {"tracking": {"enabled": True, "entity": hostile, "tags": [hostile]}},
    }
    config = validate(data, source="hostile")
    target = tmp_path / "deployments" / "evil"
    files = render_files(config, "evil", with_config=True)
    write(target, files, plan_writes(target, files))
    env = {**os.environ, "MLSHIFT_PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    for script in sorted((target / "scripts").glob("*.sh")):
        if script.name.startswith("_"):
            continue
        subprocess.run([str(script), "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert not marker.exists()
    assert not any(re.search(r"touch .*PWNED", text) for rel, (text, _) in files.items() if rel.startswith("scripts/"))


spaces = st.dictionaries(st.from_regex(r"[a-z]{1,6}", fullmatch=True),
                         st.lists(st.integers(-50, 50), min_size=1, max_size=5, unique=True), min_size=1, max_size=4)


@settings(max_examples=int(os.environ.get("PROPERTY_EXAMPLES", "60")), deadline=None)
@given(spaces, st.one_of(st.none(), st.integers(1, 700)), st.integers(0, 2**32))
def test_sweep_trials_match_the_listed_grid_on_small_spaces(space, count, seed):
    """Grid: the first `count` of itertools.product; random: `count` distinct members of it, repeated by a seed."""
    import itertools

    from wizard.ops.jobs import sweep_trials

    product = [dict(zip(space, combo)) for combo in itertools.product(*space.values())]
    assert sweep_trials(space, "grid", count) == product[:count]
    drawn = sweep_trials(space, "random", count, seed)
    assert len(drawn) == min(count or len(product), len(product))
    assert all(t in product for t in drawn) and len({tuple(t.values()) for t in drawn}) == len(drawn)
    assert sweep_trials(space, "random", count, seed) == drawn
