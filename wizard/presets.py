"""Presets: partial answers for the common cases, so the usual path is a few keystrokes.

A preset is a small ``config.yaml`` fragment. Answers the user gives (an existing config.yaml,
``--answers``, ``--set``, or the wizard's questions) always win over the preset; the preset only
fills in what was not said (the order is stated once, in :class:`wizard.loader.Answers`). Every
preset on its own (plus a name) is a valid deployment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import UserError


@dataclass(frozen=True)
class Preset:
    name: str
    title: str  # one line, shown in the wizard's first question and by --list-presets
    answers: dict[str, Any] = field(default_factory=dict)
    # The questions the wizard asks with this preset (when they apply); the others keep the
    # preset's answers and can be changed from the summary.
    ask: tuple[str, ...] = ()


PRESETS: tuple[Preset, ...] = (
    Preset(
        "vllm-server",
        "LLM behind an OpenAI-compatible API, served by vLLM (auto-start, Route)",
        {
            "application": {"type": "model_server", "execution": {"mode": "auto_start"}},
            "inference": {"enabled": True, "engine": "vllm", "model": "Qwen/Qwen2.5-7B-Instruct"},
            "resources": {"gpus": 1},
        },
        ("application.name", "inference.model", "resources.gpus", "resources.gpu_product", "inference.tensor_parallel_size", "inference.api_key_secret", "deployment.namespace"),
    ),
    Preset(
        "transformers-server",
        "Model served by the included transformers server (GPU or CPU, OpenAI-compatible)",
        {
            "application": {"type": "model_server", "execution": {"mode": "auto_start"}},
            "inference": {"enabled": True, "engine": "transformers", "model": "Qwen/Qwen2.5-0.5B-Instruct"},
            "resources": {"gpus": 1},
        },
        ("application.name", "inference.model", "resources.gpus", "resources.gpu_product", "inference.api_key_secret", "deployment.namespace"),
    ),
    Preset(
        "batch-inference",
        "Offline inference over a JSON Lines dataset, as a job (included runner, vLLM)",
        {
            "application": {"type": "batch_inference", "execution": {"mode": "job"}},
            "inference": {"enabled": False, "engine": "vllm", "model": "Qwen/Qwen2.5-7B-Instruct"},
            "resources": {"gpus": 1},
        },
        ("application.name", "inference.model", "resources.gpus", "resources.gpu_product", "inference.tensor_parallel_size", "batch.input", "batch.output", "deployment.namespace"),
    ),
    Preset(
        "sweep",
        "Hyperparameter sweep of a training script: one trial per combination, tracked in W&B",
        {
            "application": {
                "type": "single_file",
                "source": {"path": "train.py"},
                "execution": {"mode": "job", "arguments": "--epochs 20"},
            },
            # two runs at once use the workspace at once: ReadWriteMany (docs/configuration.md)
            "resources": {"gpus": 1, "storage": {"access_mode": "ReadWriteMany"}},
            "experiment": {
                "tracking": {"enabled": True, "backend": "wandb"},
                "sweep": {"method": "grid", "parameters": {"lr": [0.0001, 0.001, 0.01]}},
                "parallelism": 2,
            },
        },
        ("application.name", "application.source.path", "application.execution.arguments", "resources.gpus", "experiment.sweep.parameters", "experiment.tracking.entity", "deployment.namespace"),
    ),
    Preset(
        "eval-job",
        "Evaluation suite: a folder and its entry point, run as a job",
        {
            "application": {
                "type": "directory",
                "source": {"path": "evaluation_suite", "entry_point": "run_eval.py"},
                "execution": {"mode": "job", "arguments": "--model /workspace/models/my-model --benchmark all"},
            },
            "resources": {"gpus": 1},
        },
        ("application.name", "application.source.path", "application.source.entry_point", "application.execution.arguments", "resources.gpus", "deployment.namespace"),
    ),
    Preset(
        "notebook",
        "Manual pod with a GPU: exec in, open Jupyter or VS Code, run things by hand",
        {
            "application": {"type": "single_file", "source": {"path": "main.py"}, "execution": {"mode": "manual"}},
            "resources": {"gpus": 1},
        },
        ("application.name", "resources.gpus", "resources.gpu_product", "deployment.namespace"),
    ),
)

BY_NAME: dict[str, Preset] = {p.name: p for p in PRESETS}


def get(name: str) -> Preset:
    """The preset called ``name``; an unknown name is a one-line error with a suggestion."""
    preset = BY_NAME.get(name.strip().lower().replace("_", "-"))
    if preset is None:
        import difflib

        close = difflib.get_close_matches(name, list(BY_NAME), n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"unknown preset {name!r}{hint}; presets: {', '.join(BY_NAME)}")
    return preset


def listing() -> list[str]:
    width = max(len(p.name) for p in PRESETS)
    return [f"{p.name:<{width}}  {p.title}" for p in PRESETS]
