"""The vLLM path and config.yaml: pure mappings, tested without vLLM installed."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.cli import main
from runtime.engine_vllm import INSTALL_HINT, llm_kwargs, sampling_kwargs, server_args, server_command, server_env
from runtime.settings import ServeSettings, load_deployment_config
from runtime_helpers import ROOT

FULL = ServeSettings(
    engine="vllm", model="meta-llama/Llama-3.1-8B-Instruct", served_model_name="llama", host="0.0.0.0", port=8000,
    tensor_parallel_size=4, max_model_len=8192, dtype="bfloat16", quantization="awq", gpu_memory_utilization=0.85,
    max_batch_size=128, enable_prefix_caching=True, trust_remote_code=True, extra_args=["--enforce-eager"], api_key="k3y",
)


def test_every_setting_maps_to_its_vllm_flag() -> None:
    assert server_args(FULL) == [
        "--model", "meta-llama/Llama-3.1-8B-Instruct", "--host", "0.0.0.0", "--port", "8000",
        "--served-model-name", "llama", "--tensor-parallel-size", "4", "--max-model-len", "8192",
        "--dtype", "bfloat16", "--quantization", "awq", "--gpu-memory-utilization", "0.85",
        "--max-num-seqs", "128", "--enable-prefix-caching", "--trust-remote-code", "--shutdown-timeout", "30", "--enforce-eager",
    ]


def test_unset_options_keep_vllms_defaults() -> None:
    args = server_args(ServeSettings(engine="vllm", model="m"))
    assert args == ["--model", "m", "--host", "0.0.0.0", "--port", "8000", "--gpu-memory-utilization", "0.9",
                    "--shutdown-timeout", "30"]  # inference.drain_timeout: vLLM's own default, 0, drops the requests in flight


def test_prefix_caching_off_is_explicit() -> None:
    assert "--no-enable-prefix-caching" in server_args(ServeSettings(model="m", enable_prefix_caching=False))


@pytest.mark.parametrize(("value", "flag", "kwargs"), [
    (None, [], {}), (True, ["--enforce-eager"], {"enforce_eager": True}), (False, ["--no-enforce-eager"], {"enforce_eager": False}),
])
def test_a_setting_declared_once_reaches_the_flag_the_server_and_llm(value: bool | None, flag: list[str], kwargs: dict) -> None:
    """enforce_eager is one field in runtime/settings.py: config key, runtime flag, vLLM argument."""
    from runtime.cli import build_parser, serve_settings
    from runtime.settings import RuntimeConfig

    argv = {None: [], True: ["--enforce-eager"], False: ["--no-enforce-eager"]}[value]
    s = serve_settings(build_parser().parse_args(["serve", "--model", "m", *argv]), RuntimeConfig())
    assert s.enforce_eager is value
    assert server_args(s)[8:] == [*flag, "--shutdown-timeout", "30"]
    assert {k: v for k, v in llm_kwargs(s).items() if k == "enforce_eager"} == kwargs


def test_api_key_goes_through_the_environment_never_the_command_line() -> None:
    command = server_command(FULL, python="python")
    assert command[:3] == ["python", "-m", "vllm.entrypoints.openai.api_server"]
    assert "k3y" not in " ".join(command) and "--api-key" not in command
    assert server_env(FULL, {"PATH": "/bin"}) == {"PATH": "/bin", "VLLM_API_KEY": "k3y"}
    assert "VLLM_API_KEY" not in server_env(ServeSettings(model="m"), {})


def test_offline_llm_mapping_matches_the_server() -> None:
    assert llm_kwargs(FULL) == {
        "model": "meta-llama/Llama-3.1-8B-Instruct", "dtype": "bfloat16", "gpu_memory_utilization": 0.85,
        "trust_remote_code": True, "tensor_parallel_size": 4, "max_model_len": 8192, "quantization": "awq",
        "max_num_seqs": 128, "enable_prefix_caching": True,
    }
    assert llm_kwargs(ServeSettings(model="m")) == {"model": "m", "dtype": "auto", "gpu_memory_utilization": 0.9, "trust_remote_code": False}
    assert sampling_kwargs(64, 0.0) == {"max_tokens": 64, "temperature": 0.0}


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_without_vllm_the_command_says_how_to_install_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--engine", "vllm", "--model", "m"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {INSTALL_HINT}\n" and "pip install 'mlshift[vllm]'" in err


CONFIG = """
application:
  name: llama-chat
resources:
  gpus: 2
inference:
  enabled: true
  engine: vllm
  model: /models/llama
  served_model_name: llama
  port: 8080
  tensor_parallel_size: 2
  max_model_len: 4096
  dtype: float16
  max_batch_size: 64
  max_queue: 32
  enable_prefix_caching: false
  extra_args: ["--enforce-eager"]
batch:
  input: /data/in.jsonl
  output: /data/out.jsonl
  max_tokens: 32
experiment:
  tracking:
    enabled: true
    tags: [nightly]
"""


def test_a_deployment_config_drives_the_runtime(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    rc = load_deployment_config(path)
    s = rc.serve
    assert (s.engine, s.model, s.served_model_name, s.port, s.max_queue) == ("vllm", "/models/llama", "llama", 8080, 32)
    args = server_args(s)
    assert args[-6:] == ["--max-num-seqs", "64", "--no-enable-prefix-caching", "--shutdown-timeout", "30", "--enforce-eager"]
    assert args[args.index("--tensor-parallel-size") + 1] == "2" and args[args.index("--dtype") + 1] == "float16"
    assert (rc.batch.input, rc.batch.max_tokens) == ("/data/in.jsonl", 32)
    assert rc.tracking.enabled and rc.tracking.project == "llama-chat" and rc.tracking.tags == ("nightly",)
    assert s.direct_decode is True and s.ready_path == "/ready"  # the included server's own readiness path
    transformers = load_deployment_config(_with(path, "engine: vllm", "engine: transformers\n  readiness_check: /up\n  direct_decode: false")).serve
    assert (transformers.engine, transformers.ready_path, transformers.direct_decode) == ("transformers", "/up", False)


def _with(path: Path, old: str, new: str) -> Path:
    path.write_text(path.read_text().replace(old, new))
    return path


@pytest.mark.parametrize(("text", "expected"), [
    ("inference:\n  max_batch_size: 0\n", "inference.max_batch_size 0: input should be greater than or equal to 1"),
    ("inference:\n  engine: tpu\n", "inference.engine 'tpu'"),
    ("inference:\n  dtype: [1]\n", "inference.dtype"),
    ("batch:\n  temperature: 9\n", "batch.temperature 9"),
    ("inference: [1, 2]\n", "inference is a list, not a section of keys"),
    ("inference:\n  engine: vllm\n   port: 1\n", "malformed YAML: line 3"),
    ("- a\n", "expected a mapping of sections"),
])
def test_a_bad_config_is_one_line_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: ") and err.count("\n") == 1 and expected in err, err


def test_the_runtime_reads_config_yaml_without_the_wizard(tmp_path: Path) -> None:
    """In the pod the runtime reads the mounted config.yaml; the wizard is never imported."""
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    code = ("import sys; sys.modules['wizard'] = None; from runtime.settings import load_deployment_config; "
            "from runtime.engine_vllm import server_args; print(' '.join(server_args(load_deployment_config(sys.argv[1]).serve)))")
    r = subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("--model /models/llama --host 0.0.0.0 --port 8080 --served-model-name llama")


def test_every_flag_comes_from_a_setting_and_says_its_default() -> None:
    """The flags of serve, batch and bench are generated from the settings models: one per marked field."""
    from runtime.cli import build_parser
    from runtime.settings import BatchSettings, BenchSettings, Flag, marks

    parser = build_parser()
    subs = next(a for a in parser._actions if a.dest == "command").choices  # noqa: SLF001
    for command, models in (("serve", (ServeSettings,)), ("batch", (ServeSettings, BatchSettings)), ("bench", (BenchSettings,))):
        options = {o for a in subs[command]._actions for o in a.option_strings}  # noqa: SLF001
        for model in models:
            for name, field in model.model_fields.items():
                flag = marks(field, Flag)
                wanted = flag is not None and command in flag.commands
                assert (("--" + name.replace("_", "-")) in options) == wanted, (command, name)
    assert "--no-direct-decode" in {o for a in subs["serve"]._actions for o in a.option_strings}  # noqa: SLF001
    assert "(default 256)" in subs["serve"].format_help()  # --max-queue


@pytest.mark.parametrize(("argv", "expected"), [
    (["--max-batch-size", "0"], "--max-batch-size '0': input should be greater than or equal to 1"),
    (["--gpu-memory-utilization", "1.5"], "--gpu-memory-utilization '1.5'"),
    (["--port", "80"], "--port '80'"),
    (["--request-timeout", "soon"], "--request-timeout 'soon'"),
    (["--header-timeout", "-1"], "--header-timeout '-1'"),
])
def test_a_bad_flag_is_one_line_naming_the_flag(capsys: pytest.CaptureFixture[str], argv: list[str], expected: str) -> None:
    assert main(["serve", "--model", "m", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {expected}") and err.count("\n") == 1, err


def test_gpu_memory_share_flag_reaches_both_engines_settings(tmp_path: Path) -> None:
    from runtime.cli import build_parser, serve_settings
    from runtime.settings import RuntimeConfig

    args = build_parser().parse_args(["serve", "--model", "m", "--gpu-memory-utilization", "0.5"])
    settings = serve_settings(args, RuntimeConfig())
    assert settings.gpu_memory_utilization == 0.5
    assert server_args(settings)[server_args(settings).index("--gpu-memory-utilization") + 1] == "0.5"


@pytest.mark.parametrize("value", ["0", "1.5", "nan", "inf", "-0.2", "half"])
def test_impossible_gpu_memory_shares_are_one_line_errors(value: str) -> None:
    r = subprocess.run([sys.executable, "-m", "runtime", "serve", "--model", "m", "--gpu-memory-utilization", value],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--gpu-memory-utilization" in r.stderr


@pytest.mark.parametrize(("argv", "expected"), [
    (["--concurrency", "0"], "error: --concurrency '0': input should be greater than or equal to 1"),
    (["--request-rate", "inf"], "error: --request-rate 'inf'"),
    (["--max-tokens", "many"], "error: --max-tokens 'many'"),
])
def test_bench_flags_are_checked_by_the_same_rules(capsys: pytest.CaptureFixture[str], argv: list[str], expected: str) -> None:
    assert main(["bench", "--url", "http://127.0.0.1:9", "--model", "m", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(expected) and err.count("\n") == 1, err
