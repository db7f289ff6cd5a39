"""The generated helper scripts: shellcheck-clean, answer --help, work from any directory."""

from __future__ import annotations

import os
import sys
from pathlib import Path
import subprocess

import pytest

from wizard.loader import parse_yaml, validate
from wizard.render import plan_writes, render_files, write
from wizard.verbs import VERBS as SCRIPTS
from wizard.validate import check_scripts

from conftest import EXAMPLES, ROOT


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("deployments")
    out = {}
    for path in sorted(EXAMPLES.glob("*.yaml")):
        data = parse_yaml(path.read_text(), path.name)
        data["application"]["name"] = path.stem
        config = validate(data, source=path.name)
        files = render_files(config, path.stem, with_config=True)
        write(root / path.stem, files, plan_writes(root / path.stem, files))
        out[path.stem] = root / path.stem
    return out


def test_every_listed_script_is_rendered_and_executable(examples):
    for target in examples.values():
        for script in SCRIPTS:
            path = target / "scripts" / script.file
            assert path.is_file() and os.access(path, os.X_OK), path


def test_scripts_pass_shellcheck_at_warning_level(examples):
    for name, target in examples.items():
        scripts = sorted((target / "scripts").glob("*.sh"))
        assert check_scripts(scripts) == [], name


@pytest.mark.parametrize("script", [s.file for s in SCRIPTS])
def test_each_script_answers_help_from_any_directory(examples, tmp_path, script):
    target = examples["gpt2-inference"]
    env = {**os.environ, "MLSHIFT_PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([str(target / "scripts" / script), "--help"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:") and "--dry-run" in result.stdout


def test_scripts_find_the_checkouts_virtualenv_without_help(tmp_path):
    """Inside a checkout, _common.sh picks <checkout>/.venv/bin/python by walking up."""
    checkout = tmp_path / "checkout"
    (checkout / "wizard").mkdir(parents=True)
    (checkout / "wizard" / "__main__.py").write_text("")
    (checkout / ".venv" / "bin").mkdir(parents=True)
    fake = checkout / ".venv" / "bin" / "python"
    fake.write_text("#!/bin/sh\necho \"python called with: $*\"\n")
    fake.chmod(0o755)
    data = {"application": {"name": "demo"}}
    files = render_files(validate(data, source="x"), "demo", with_config=True)
    target = checkout / "deployments" / "demo"
    write(target, files, plan_writes(target, files))
    env = {k: v for k, v in os.environ.items() if k != "MLSHIFT_PYTHON"}
    result = subprocess.run([str(target / "scripts" / "logs.sh"), "-f", "it's $(x)"], cwd="/", env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"python called with: -m wizard logs {target} -f it's $(x)"
