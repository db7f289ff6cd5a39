"""The vLLM path: hand the GPU to vLLM's own OpenAI server (or its offline ``LLM`` for batch
jobs) with arguments mapped from the deployment's settings. Nothing of vLLM is rewritten here.

The mappings are pure functions so they can be tested without vLLM installed.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Mapping
from typing import Any, NoReturn

from runtime.errors import UsageError
from runtime.settings import EngineSettings, ServeSettings, Vllm, marks

INSTALL_HINT = "vLLM is not installed; install it with: pip install 'mlshift[vllm]' (or use --engine transformers)"
SERVER_MODULE = "vllm.entrypoints.openai.api_server"


def require_vllm() -> None:
    if importlib.util.find_spec("vllm") is None:
        raise UsageError(INSTALL_HINT)


def _mapped(s: EngineSettings) -> list[tuple[Vllm, Any, bool]]:
    """(vLLM's mark, value, whether None is the setting's default) of every setting vLLM takes,
    in the settings' order."""
    out = []
    for name, field in EngineSettings.model_fields.items():
        mark = marks(field, Vllm)
        if mark is not None:
            out.append((mark, getattr(s, name), field.default is None))
    return out


def server_args(s: ServeSettings) -> list[str]:
    """vLLM server arguments for ``s``; options left at None keep vLLM's defaults.

    The API key is never among them (it would show in ``ps``); see :func:`server_env`.
    """
    if not s.model:
        raise UsageError("no model: pass --model PATH_OR_ID (or set inference.model in config.yaml)")
    args = ["--model", s.model, "--host", s.host, "--port", str(s.port)]
    for mark, value, tri_state in _mapped(s):
        if not mark.server or mark.name in ("model", "port") or value is None or value == mark.default:
            continue
        flag = "--" + mark.name.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value is False:
            if tri_state:  # None keeps vLLM's default, so "off" is said out loud
                args.append("--no-" + flag[2:])
        else:
            args += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return args + list(s.extra_args)


def server_command(s: ServeSettings, python: str = sys.executable) -> list[str]:
    return [python, "-m", SERVER_MODULE, *server_args(s)]


CLI = ("vllm", "serve")  # vLLM's command line: the entrypoint of its images (vllm/vllm-openai)


def cli_command(s: ServeSettings) -> list[str]:
    """``vllm serve MODEL ...``: :func:`server_args` as vLLM's command line takes them, the model
    first (its ``--model`` option is deprecated there). What the wizard renders as the command
    of the pods that run vLLM's own image; the API key stays out of it, as in :func:`server_args`."""
    flag, model, *rest = server_args(s)
    assert flag == "--model"
    return [*CLI, model, *rest]


def server_env(s: ServeSettings, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment for vLLM's server: the API key travels as ``VLLM_API_KEY``."""
    env = dict(environ)
    if s.api_key:
        env["VLLM_API_KEY"] = s.api_key
    return env


def exec_server(s: ServeSettings) -> NoReturn:
    """Replace this process with vLLM's server (signals and exit code are then vLLM's)."""
    require_vllm()
    command = server_command(s)
    os.execvpe(command[0], command, server_env(s, os.environ))


def llm_kwargs(s: ServeSettings) -> dict[str, Any]:
    """Keyword arguments of ``vllm.LLM`` for batch jobs (the same settings as the server)."""
    if not s.model:
        raise UsageError("no model: pass --model PATH_OR_ID (or set inference.model in config.yaml)")
    return {mark.name: value for mark, value, _ in _mapped(s) if mark.offline and value is not None}


def sampling_kwargs(max_tokens: int, temperature: float, seed: int | None = None) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` for one batch job."""
    kwargs: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature}
    if seed is not None:
        kwargs["seed"] = seed
    return kwargs


class VllmOffline:
    """Batch generation through ``vllm.LLM`` (prompts in, texts and token counts out)."""

    def __init__(self, s: ServeSettings):
        require_vllm()
        from vllm import LLM  # type: ignore[import-not-found]

        self.llm = LLM(**llm_kwargs(s))

    def generate(self, prompts: list[dict[str, Any]], max_tokens: int, temperature: float) -> list[tuple[str, int, int, str | None]]:
        """(text, prompt tokens, completion tokens, finish reason) per prompt, in order."""
        from vllm import SamplingParams  # type: ignore[import-not-found]

        params = SamplingParams(**sampling_kwargs(max_tokens, temperature))
        chats = [p for p in prompts if "messages" in p]
        if chats and len(chats) != len(prompts):
            raise UsageError("a vLLM batch takes either prompts or chat messages in one run, not both")
        if chats:
            outputs = self.llm.chat([p["messages"] for p in prompts], params, use_tqdm=False)
        else:
            outputs = self.llm.generate([p["prompt"] for p in prompts], params, use_tqdm=False)
        results = []
        for out in outputs:
            completion = out.outputs[0]
            results.append((completion.text, len(out.prompt_token_ids or []), len(completion.token_ids), completion.finish_reason))
        return results


