"""`new` and `render` as a user runs them: files written, re-runs reported, bad input refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from wizard.loader import load_config

from conftest import DATA, EXAMPLES, run_wizard


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- creating
def test_new_with_defaults_writes_a_complete_deployment(deployments: Path):
    result = run_wizard("new", "demo", "--defaults", "--deployments-dir", str(deployments))
    assert result.returncode == 0, result.stderr
    target = deployments / "demo"
    assert "created   manifests/deployment.yaml" in result.stdout
    for rel in ["config.yaml", "config.schema.json", "README.md", "Containerfile", "workspace/.gitkeep",
                "manifests/kustomization.yaml", "manifests/configmap.yaml", "manifests/persistentvolumeclaim.yaml",
                "manifests/deployment.yaml", "manifests/buildconfig.yaml", "manifests/imagestream.yaml",
                "scripts/deploy.sh", "scripts/submit-job.sh", "scripts/run-sweep.sh", "scripts/compare-experiments.sh"]:
        assert (target / rel).is_file(), rel
    assert (target / "scripts" / "deploy.sh").stat().st_mode & 0o111
    config = yaml.safe_load((target / "config.yaml").read_text())
    assert config["application"]["name"] == "demo"
    assert (target / "config.yaml").read_text().startswith("# yaml-language-server: $schema=config.schema.json")
    assert json.loads((target / "config.schema.json").read_text())["title"].startswith("mlshift")
    assert "put your code in workspace/main.py" in result.stdout


def test_new_with_answers_and_set(deployments: Path):
    result = run_wizard("new", "llm", "--answers", str(EXAMPLES / "gpt2-inference.yaml"),
                        "--set", "resources.gpus=2", "--set", "inference.max_model_len=2048",
                        "--deployments-dir", str(deployments))
    assert result.returncode == 0, result.stderr
    text = (deployments / "llm" / "config.yaml").read_text()
    config = load_config(deployments / "llm" / "config.yaml")
    assert config.resources.gpus == 2 and config.inference.max_model_len == 2048 and config.inference.model == "gpt2"
    assert config.inference.tensor_parallel_size == 2  # derived from the GPUs, shown as a comment
    assert "  # tensor_parallel_size: 2  (follows resources.gpus; set it to choose)\n" in text
    assert (deployments / "llm" / "manifests" / "route.yaml").is_file()


def test_new_copies_the_users_file_into_workspace(deployments: Path, tmp_path: Path):
    (tmp_path / "train.py").write_text("print('hi')\n")
    result = run_wizard("new", "trainer", "--set", "application.source.path=train.py",
                        "--deployments-dir", str(deployments), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (deployments / "trainer" / "workspace" / "train.py").read_text() == "print('hi')\n"
    assert "copied train.py to workspace/train.py" in result.stdout


def test_new_seed_configs_as_answers(deployments: Path):
    for name, seed in [("llama-inference", "seed_inference_server.yaml"), ("hyperparam-sweep", "seed_experiment_suite.yaml")]:
        result = run_wizard("new", name, "--answers", str(DATA / seed), "--deployments-dir", str(deployments))
        assert result.returncode == 0, result.stderr


def test_dry_run_writes_nothing(deployments: Path):
    result = run_wizard("new", "demo", "--defaults", "--dry-run", "--deployments-dir", str(deployments))
    assert result.returncode == 0, result.stderr
    assert "Would write" in result.stdout
    assert list(deployments.iterdir()) == []


def test_no_terminal_and_no_answers_points_to_the_flags(deployments: Path):
    result = run_wizard("new", "demo", "--deployments-dir", str(deployments))
    assert result.returncode == 2
    assert result.stderr.strip() == "error: no terminal to ask questions on; pass --defaults, --answers FILE or --set key=value"
    assert list(deployments.iterdir()) == []


# --------------------------------------------------------------------------- refusing
@pytest.mark.parametrize("args,message", [
    (["new", "My_App", "--defaults"], "error: 'My_App' is not a valid deployment name"),
    (["new", "../escape", "--defaults"], "error: '../escape' is not a valid deployment name"),
    (["new", "a/b", "--defaults"], "error: 'a/b' is not a valid deployment name"),
    (["new", "demo", "--set", "resources.gpus=-1"], "error: answers: resources.gpus: -1: should be greater than or equal to 0"),
    (["new", "demo", "--set", "application.execution.mode=sometimes"], "error: answers: application.execution.mode: 'sometimes' is not one of auto_start, job, manual"),
    (["new", "demo", "--set", "resources.gpuz=1"], "error: --set: resources.gpuz: unknown key (did you mean 'gpus'?)"),
    (["new", "demo", "--set", "deployment.cluster=barcelon"], "error: config.yaml: deployment.cluster: 'barcelon' is not a known cluster profile (did you mean 'barcelona'?)"),
    (["new", "demo", "--answers", "/nonexistent/answers.yaml"], "error: /nonexistent/answers.yaml: file not found"),
    (["new", "demo", "--bogus"], "error: unrecognized arguments: --bogus"),
])
def test_bad_input_exits_non_zero_with_one_line_and_writes_nothing(deployments: Path, args, message):
    result = run_wizard(*args, "--deployments-dir", str(deployments))
    assert result.returncode != 0
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert list(deployments.iterdir()) == []


@pytest.mark.parametrize("text,message", [
    ("application:\n  name: [demo\n", "malformed YAML: line 3, column 1"),
    ("application:\n  sourc:\n    path: a.py\n", "application.sourc: unknown key (did you mean 'source'?)"),
    ("resources:\n  gpus: -4\n", "resources.gpus: -4: should be greater than or equal to 0"),
    ("- just\n- a list\n", "expected a mapping of sections"),
])
def test_bad_answers_files(deployments: Path, tmp_path: Path, text, message):
    answers = tmp_path / "answers.yaml"
    answers.write_text(text)
    result = run_wizard("new", "demo", "--answers", str(answers), "--deployments-dir", str(deployments))
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert list(deployments.iterdir()) == []


# --------------------------------------------------------------------------- re-running
def test_rerender_reports_per_file_and_keeps_user_edits(deployments: Path):
    assert run_wizard("new", "demo", "--defaults", "--deployments-dir", str(deployments)).returncode == 0
    target = deployments / "demo"
    again = run_wizard("render", str(target))
    assert again.returncode == 0 and "up to date" in again.stdout

    # The user edits a manifest by hand, then changes config.yaml.
    deployment = target / "manifests" / "deployment.yaml"
    edited = deployment.read_text() + "# my note\n"
    deployment.write_text(edited)
    config = target / "config.yaml"
    config.write_text(config.read_text().replace("gpus: 0", "gpus: 1") + "# my comment stays\n")

    result = run_wizard("render", str(target))
    assert result.returncode == 0, result.stderr
    assert "kept      manifests/deployment.yaml  (you edited it; the new version is in manifests/deployment.yaml.new)" in result.stdout
    assert "changed   manifests/configmap.yaml" in result.stdout
    assert deployment.read_text() == edited
    assert "nvidia.com/gpu: 1" in (target / "manifests" / "deployment.yaml.new").read_text()
    assert config.read_text().endswith("# my comment stays\n")  # render never rewrites config.yaml

    forced = run_wizard("render", str(target), "--force")
    assert "changed   manifests/deployment.yaml" in forced.stdout
    assert "nvidia.com/gpu: 1" in deployment.read_text()


def test_files_no_longer_needed_are_removed(deployments: Path):
    assert run_wizard("new", "srv", "--answers", str(EXAMPLES / "bert-classifier.yaml"), "--deployments-dir", str(deployments)).returncode == 0
    target = deployments / "srv"
    assert (target / "manifests" / "route.yaml").exists()
    result = run_wizard("new", "srv", "--set", "inference.route.enabled=false", "--deployments-dir", str(deployments))
    assert result.returncode == 0, result.stderr
    assert "removed   manifests/route.yaml" in result.stdout
    assert not (target / "manifests" / "route.yaml").exists()
    assert "route.yaml" not in (target / "manifests" / "kustomization.yaml").read_text()


def test_rerunning_new_starts_from_the_current_answers(deployments: Path):
    assert run_wizard("new", "demo", "--set", "resources.gpus=2", "--deployments-dir", str(deployments)).returncode == 0
    assert run_wizard("new", "demo", "--set", "application.execution.mode=job", "--deployments-dir", str(deployments)).returncode == 0
    config = yaml.safe_load((deployments / "demo" / "config.yaml").read_text())
    assert config["resources"]["gpus"] == 2 and config["application"]["execution"]["mode"] == "job"


def test_a_failed_render_leaves_the_deployment_untouched(deployments: Path):
    assert run_wizard("new", "demo", "--defaults", "--deployments-dir", str(deployments)).returncode == 0
    target = deployments / "demo"
    before = tree(target)
    config = target / "config.yaml"
    config.write_text(config.read_text().replace("gpus: 0", "gpus: many"))
    before["config.yaml"] = config.read_bytes()
    result = run_wizard("render", str(target))
    assert result.returncode == 2
    assert result.stderr.startswith("error: demo/config.yaml: resources.gpus: 'many':")
    assert tree(target) == before


def test_render_of_a_missing_folder(tmp_path: Path):
    result = run_wizard("render", str(tmp_path / "nope"))
    assert result.returncode == 2 and result.stderr.strip() == "error: nope: no such deployment folder"


def test_schema_command_prints_the_json_schema():
    result = run_wizard("schema")
    assert result.returncode == 0
    assert json.loads(result.stdout)["properties"]["resources"]


def test_validate_reports_a_broken_manifest(deployments: Path):
    assert run_wizard("new", "demo", "--defaults", "--deployments-dir", str(deployments)).returncode == 0
    target = deployments / "demo"
    ok = run_wizard("validate", str(target))
    assert ok.returncode == 0, ok.stderr
    assert "config, manifests and scripts are valid" in ok.stdout
    manifest = target / "manifests" / "deployment.yaml"
    manifest.write_text(manifest.read_text().replace("enableServiceLinks", "enableServiceLink"))
    bad = run_wizard("validate", str(target))
    assert bad.returncode == 1
    assert "manifests/deployment.yaml: spec.template.spec: Additional properties are not allowed ('enableServiceLink' was unexpected)" in bad.stderr


@pytest.mark.parametrize("args,message", [
    (["schema", "--output", "/nonexistent/dir/schema.json"], "error: No such file or directory: /nonexistent/dir/schema.json"),
    (["new", "demo", "--answers", "/"], "error: /: is a folder, not a YAML file"),
])
def test_unusable_paths_are_one_line_errors(args, message):
    result = run_wizard(*args)
    assert result.returncode == 2
    assert result.stderr.strip() == message


def test_compiled_templates_are_kept_between_runs_and_optional(tmp_path: Path):
    """The second run reads the compiled templates from the cache folder and writes the same
    bytes; a cache folder that cannot be made (here a file is in its way) only costs time."""
    cache = tmp_path / "cache"
    outputs = []
    for run in range(2):
        target = tmp_path / f"d{run}"
        result = run_wizard("new", "demo", "--defaults", "--deployments-dir", str(target), env={"MLSHIFT_CACHE_DIR": str(cache)})
        assert result.returncode == 0, result.stderr
        outputs.append({p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()})
        assert list((cache / "templates").glob("__jinja2_*.cache"))
    assert outputs[0] == outputs[1]
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    result = run_wizard("new", "demo", "--defaults", "--deployments-dir", str(tmp_path / "d2"), env={"MLSHIFT_CACHE_DIR": str(blocked)})
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_output_cut_short_by_the_reader_is_not_an_error(deployments: Path):
    """`... | head`: the reader goes away; no traceback, no "Exception ignored" at exit."""
    import subprocess
    import sys

    from conftest import ROOT

    values = json.dumps({"lr": [i / 1000 for i in range(1, 400)]})
    made = run_wizard("new", "big", "--answers", str(EXAMPLES / "lr-sweep.yaml"), "--set", f"experiment.sweep.parameters={values}",
                      "--deployments-dir", str(deployments))
    assert made.returncode == 0, made.stderr
    command = f"{sys.executable} -m wizard sweep {deployments / 'big'} --dry-run --yaml"
    full = subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert full.returncode == 0 and len(full.stdout) > 128 * 1024  # more than a pipe holds (64 KiB)
    for _ in range(2):
        result = subprocess.run(["bash", "-o", "pipefail", "-c", command + " | head -c 10 >/dev/null"], cwd=ROOT,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and result.stderr == "", result.stderr
