"""mlshift as a package, not a checkout: the wheel is built, installed without ``-e`` into a fresh
environment (its dependencies are the ones already installed: nothing is downloaded), and from a
folder that is not the checkout it renders every preset, byte for byte as the golden files, and
a generated script runs a verb with ``--dry-run`` through the installed ``mlshift``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from test_golden import GOLDEN, PRESETS, files

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh environment with the wheel installed; its python."""
    work = tmp_path_factory.mktemp("package")
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("wizard", "runtime", "templates"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    built = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(work / "dist"), str(source)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    (wheel,) = (work / "dist").glob("mlshift-*.whl")
    env = work / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120)
    python = env / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # The dependencies: this environment's, by path (its editable mlshift is not among them).
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = subprocess.run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return python


def run(python: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLSHIFT_PYTHON")}
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run([str(python), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_wheel_holds_the_packages_not_the_checkout(installed: Path, tmp_path: Path) -> None:
    where = run(installed, tmp_path, "-c", "import wizard, wizard.ops, runtime; print(wizard.__file__); print(runtime.__file__)")
    assert where.returncode == 0, where.stderr
    for line in where.stdout.split():
        assert str(installed.parents[1]) in line and str(ROOT) not in line


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_renders_from_the_installed_package_as_from_the_checkout(installed: Path, tmp_path: Path, preset: str) -> None:
    made = run(installed, tmp_path, "-m", "wizard", "new", f"preset-{preset}", "--preset", preset, "--defaults")
    assert made.returncode == 0, made.stderr
    target = tmp_path / "deployments" / f"preset-{preset}"  # under the current folder
    assert files(target) == files(GOLDEN / f"preset-{preset}")


def test_a_generated_script_finds_the_installed_mlshift_and_runs_a_verb(installed: Path, tmp_path: Path) -> None:
    made = run(installed, tmp_path, "-m", "wizard", "new", "demo", "--preset", "transformers-server", "--defaults")
    assert made.returncode == 0, made.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLSHIFT_PYTHON")}
    env["PATH"] = f"{installed.parent}{os.pathsep}{env.get('PATH', '')}"
    status = subprocess.run([str(tmp_path / "deployments" / "demo" / "scripts" / "status.sh"), "--dry-run"], cwd="/",
                            env=env, capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    assert "oc get" in status.stdout and "dry run of status for demo" in status.stdout + status.stderr
    console = subprocess.run([str(installed.parent / "mlshift"), "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert console.returncode == 0 and "usage" in console.stdout
