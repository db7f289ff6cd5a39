"""The included server on vLLM runs vLLM's own image as it is: no build, vLLM's server as the
pod's command with arguments rendered from config.yaml, probes on vLLM's /health."""

from __future__ import annotations

import re

import pytest
import yaml

from runtime.engine_vllm import cli_command, server_args
from runtime.settings import EngineSettings, ServeSettings
from wizard.blueprint import Blueprint
from wizard.config import VLLM_IMAGE, Config
from wizard.errors import ConfigError
from wizard.loader import dump_user_config, validate, with_default_name
from wizard.presets import get
from wizard.render import render_files
from wizard.validate import check_manifest_text

from conftest import EXAMPLES, ROOT

PINNED = "docker.io/vllm/vllm-openai:v0.31.0"


def preset_config(name: str = "vllm-server", **sets: object) -> Config:
    data = yaml.safe_load(yaml.safe_dump(get(name).answers))
    for dotted, value in sets.items():
        *parents, last = dotted.split("__")
        node = data
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return validate(with_default_name(data, "llm"), source=name)


def rendered(config: Config) -> dict[str, str]:
    return {rel: text for rel, (text, _) in render_files(config, config.name).items()}


def objects(files: dict[str, str]) -> dict[str, dict]:
    return {rel.removeprefix("manifests/"): yaml.safe_load(text) for rel, text in files.items() if rel.startswith("manifests/")}


def container(objs: dict[str, dict], kind: str = "deployment.yaml") -> dict:
    return objs[kind]["spec"]["template"]["spec"]["containers"][0]


# --------------------------------------------------------------------------- the preset
def test_the_vllm_preset_runs_the_stock_image_without_a_build():
    config = preset_config()
    assert config.image.build is False and "image.build" in config.derived_paths and config.stock_vllm
    files = rendered(config)
    assert "Containerfile" not in files
    objs = objects(files)
    assert "buildconfig.yaml" not in objs and "imagestream.yaml" not in objs
    assert "buildconfig.yaml" not in yaml.safe_load(files["manifests/kustomization.yaml"])["resources"]
    dep = objs["deployment.yaml"]
    c = container(objs)
    assert c["image"] == VLLM_IMAGE == PINNED
    # the model from the pod's RUNTIME_MODEL (config.yaml's; promote sets another), which Kubernetes puts in
    assert c["command"] == ["vllm", "serve", "$(RUNTIME_MODEL)", "--host", "0.0.0.0", "--port", "8000",
                            "--tensor-parallel-size", "1", "--gpu-memory-utilization", "0.9", "--shutdown-timeout", "30"]
    assert {"name": "RUNTIME_MODEL", "value": "Qwen/Qwen2.5-7B-Instruct"} in c["env"]
    assert "annotations" not in dep["metadata"] or "image.openshift.io/triggers" not in dep["metadata"]["annotations"]
    assert "annotations" not in dep["spec"]["template"]["metadata"]  # no ImageStream name to resolve
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
    assert c["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    for rel, text in files.items():
        if rel.startswith("manifests/"):
            assert check_manifest_text(text) == [], rel


def test_the_command_is_the_runtimes_own_mapping_of_every_setting():
    config = preset_config(inference__served_model_name="qwen", inference__max_model_len=8192, inference__dtype="bfloat16",
                           inference__quantization="awq", inference__max_batch_size=64, inference__enable_prefix_caching=False,
                           inference__trust_remote_code=True, inference__extra_args=["--enable-chunked-prefill", "$(HOME)"],
                           resources__gpus=2)
    command = container(objects(rendered(config)))["command"]
    settings = ServeSettings(**{k: getattr(config.inference, k) for k in EngineSettings.model_fields})
    expected = cli_command(settings)
    assert expected[:3] == ["vllm", "serve", "Qwen/Qwen2.5-7B-Instruct"] and expected[3:] == server_args(settings)[2:]
    assert command[2] == "$(RUNTIME_MODEL)"  # the model: the pod's RUNTIME_MODEL, expanded by Kubernetes
    assert [w.replace("$$", "$") for w in command[:2] + command[3:]] == expected[:2] + expected[3:]  # $ doubled for Kubernetes only
    assert "$$(HOME)" in command and "--tensor-parallel-size" in command and command[command.index("--tensor-parallel-size") + 1] == "2"
    assert "--model" not in command  # vLLM's CLI takes the model first; its --model option is deprecated


def test_the_api_key_stays_in_the_environment_from_the_secret():
    config = preset_config(inference__api_key_secret="llm-key")
    c = container(objects(rendered(config)))
    env = {e["name"]: e for e in c["env"]}
    assert env["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "llm-key", "key": "api-key"}
    assert not any("api-key" in w or "llm-key" in w for w in c["command"])


def test_the_users_arguments_go_to_vllm_word_for_word():
    config = preset_config(application__execution={"mode": "auto_start", "arguments": ["--max-log-len", "100"]})
    assert container(objects(rendered(config)))["command"][-2:] == ["--max-log-len", "100"]


def test_the_release_is_pinned_in_one_place():
    pattern = re.compile(r"vllm-openai:v\d")
    holders = [p.relative_to(ROOT).as_posix() for folder in ("wizard", "runtime", "templates")
               for p in sorted((ROOT / folder).rglob("*")) if p.is_file() and p.suffix in (".py", ".j2", ".yaml", ".sh")
               and pattern.search(p.read_text(errors="replace"))]
    assert holders == ["wizard/config.py"]
    assert re.findall(r'^VLLM_IMAGE = "(.*)"$', (ROOT / "wizard" / "config.py").read_text(), re.M) == [PINNED]


def test_another_release_a_mirror_and_a_pull_secret():
    other = "quay.io/me/vllm-openai:v0.30.0"
    assert container(objects(rendered(preset_config(image__base=other))))["image"] == other
    config = preset_config(image__mirror="registry.example.com:5000/", image__pull_secret="regcred")
    assert config.image.base == "registry.example.com:5000/vllm/vllm-openai:v0.31.0"
    spec = objects(rendered(config))["deployment.yaml"]["spec"]["template"]["spec"]
    assert spec["containers"][0]["image"] == config.image.base
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    # the mirror follows, as a derived value; a base the user gives is theirs
    assert "# base: registry.example.com:5000/vllm/vllm-openai:v0.31.0  (follows" in dump_user_config(config, schema_ref="s.json")
    with pytest.raises(ConfigError, match="image.pull_secret"):
        preset_config(image__pull_secret="Not_A_Secret")
    with pytest.raises(ConfigError, match="image.mirror"):
        preset_config(image__mirror="https://registry")


def test_pull_secret_reaches_job_pods_too():
    config = preset_config("batch-inference", image__pull_secret="regcred")
    assert objects(rendered(config))["job.yaml"]["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]


def test_build_true_keeps_the_included_runtime_in_a_built_image():
    config = preset_config(image__build=True)
    objs = objects(rendered(config))
    assert "buildconfig.yaml" in objs
    assert objs["buildconfig.yaml"]["spec"]["strategy"]["dockerStrategy"]["buildArgs"][0]["value"] == PINNED
    assert container(objs)["command"] == ["python3", "-m", "runtime", "serve", "--config", "/etc/mlshift/config.yaml"]


def test_requirements_keep_the_build():
    config = preset_config(application__requirements="requirements.txt")
    assert config.image.build is True and not config.stock_vllm


# --------------------------------------------------------------------------- build: false elsewhere
def test_the_batch_runner_on_vllm_still_builds():
    config = preset_config("batch-inference")
    assert config.image.build is True and config.image.base == PINNED
    objs = objects(rendered(config))
    assert "buildconfig.yaml" in objs
    assert container(objs, "job.yaml")["command"][:4] == ["python3", "-m", "runtime", "batch"]


@pytest.mark.parametrize("preset", ["transformers-server", "batch-inference"])
def test_build_false_without_an_image_that_has_the_runtime_is_refused(preset: str):
    with pytest.raises(ConfigError) as err:
        preset_config(preset, image__build=False)
    text = "\n".join(err.value.lines())
    assert "image.build: false runs" in text and "is not in it" in text and "image.name" in text


@pytest.mark.parametrize("preset, verb", [("transformers-server", "serve"), ("batch-inference", "batch")])
def test_build_false_with_an_image_that_has_the_runtime_runs_it(preset: str, verb: str):
    built = "image-registry.openshift-image-registry.svc:5000/team-a/llm:latest"
    config = preset_config(preset, image__build=False, image__name=built)
    objs = objects(rendered(config))
    kind = "job.yaml" if verb == "batch" else "deployment.yaml"
    c = container(objs, kind)
    assert c["image"] == built and c["command"][:4] == ["python3", "-m", "runtime", verb]
    assert "buildconfig.yaml" not in objs


def test_build_false_with_requirements_is_refused():
    with pytest.raises(ConfigError, match="application.requirements: requirements are installed when the image is built"):
        preset_config(image__build=False, application__requirements="requirements.txt")


@pytest.mark.parametrize("example", ["llama-server", "llama-inference"])
def test_the_llama_examples_validate(example: str):
    data = with_default_name(yaml.safe_load((EXAMPLES / f"{example}.yaml").read_text()), example)
    config = validate(data, source=example)
    for rel, text in rendered(config).items():
        if rel.startswith("manifests/"):
            assert check_manifest_text(text) == [], rel
    if example == "llama-server":  # the included server on vLLM: stock image, 8 GPUs
        c = container(objects(rendered(config)))
        assert config.stock_vllm and c["image"] == PINNED
        assert c["command"][:3] == ["vllm", "serve", "$(RUNTIME_MODEL)"]
        assert {"name": "RUNTIME_MODEL", "value": "meta-llama/Llama-3-70b-hf"} in c["env"]
        assert c["command"][c["command"].index("--tensor-parallel-size") + 1] == "8"
    else:  # the user's own vLLM command with requirements: built on vLLM's image
        assert config.image.build is True and config.image.base == PINNED


def test_blueprint_app_argv_is_the_vllm_command():
    config = preset_config()
    bp = Blueprint(config, "llm")
    assert bp.app_argv() == bp.vllm_command and bp.app_argv(["--x"]) == [*bp.vllm_command, "--x"]


def test_a_pull_secret_reaches_the_build_of_its_base_image_too():
    from wizard.loader import validate
    from wizard.render import render_files
    from wizard.validate import check_manifest_text

    config = validate({"application": {"name": "demo", "type": "single_file", "execution": {"mode": "job"}},
                       "image": {"mirror": "registry.example.com:5000", "pull_secret": "regcred"}}, source="test")
    text = render_files(config, "demo")["manifests/buildconfig.yaml"][0]
    assert "      pullSecret:\n        name: regcred\n" in text
    assert not check_manifest_text(text)
