"""Golden files: every preset, the defaults and every answers file in docs/examples/ rendered by
the real command line, and the bytes of every file written compared with tests/golden/.

A change to what the wizard writes shows here as a diff. When it is deliberate, write the files
again and commit them on their own, with the reason in the message:

    UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conftest import EXAMPLES, run_wizard

GOLDEN = Path(__file__).resolve().parent / "golden"
PRESETS = ["vllm-server", "transformers-server", "batch-inference", "sweep", "eval-job", "notebook"]
CASES = (
    [("defaults", ["--defaults"])]
    + [(f"preset-{p}", ["--preset", p, "--defaults"]) for p in PRESETS]
    + [(f"example-{f.stem}", ["--answers", str(f), "--defaults"]) for f in sorted(EXAMPLES.glob("*.yaml"))]
)


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_every_preset_and_example_is_covered() -> None:
    from wizard.presets import PRESETS as DECLARED

    assert sorted(p.name for p in DECLARED) == sorted(PRESETS)


@pytest.mark.parametrize("case, args", CASES, ids=[c for c, _ in CASES])
def test_rendered_files_are_byte_for_byte_the_golden_ones(case: str, args: list[str], tmp_path: Path) -> None:
    result = run_wizard("new", case, *args, "--deployments-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    rendered = files(tmp_path / case)
    golden_dir = GOLDEN / case
    if os.environ.get("UPDATE_GOLDEN"):
        shutil.rmtree(golden_dir, ignore_errors=True)
        for rel, data in rendered.items():
            (golden_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (golden_dir / rel).write_bytes(data)
    golden = files(golden_dir)
    assert sorted(rendered) == sorted(golden), "files added or removed"
    changed = [rel for rel in rendered if rendered[rel] != golden[rel]]
    assert not changed, f"changed: {changed} (UPDATE_GOLDEN=1 writes them again, for a deliberate change)"
