"""What the users' own guide (seed 001) does works here: `oc get jobs -l app=NAME`, its config.yaml
fragments as they are written there, and editing config.yaml with yq before submitting."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from wizard.cli import main
from wizard.config import LEGACY_KEYS
from wizard.deployment import load_deployment
from wizard.loader import HEADER, SCHEMA_COMMENT, dump_user_config, validate, with_default_name
from wizard.render import render_files
from wizard.validate import check_manifest_text

from conftest import DATA, EXAMPLES, ROOT

sys.path.insert(0, str(Path(__file__).parent))
from fake_oc.harness import Cluster  # noqa: E402

FRAGMENTS = DATA / "seed_001_fragments.yaml"
PRESETS = ["vllm-server", "transformers-server", "batch-inference", "sweep", "eval-job", "notebook"]


def fragments() -> list[tuple[str, str]]:
    """(its first comment line, its text) for each YAML document of the data file."""
    docs = FRAGMENTS.read_text().split("\n---\n")[1:]
    return [(doc.splitlines()[0].lstrip("# "), doc) for doc in docs]


def deployment_from(deployments: Path, name: str, text: str) -> Path:
    target = deployments / name
    target.mkdir(parents=True)
    (target / "config.yaml").write_text(text)
    return target


# --------------------------------------------------------------------------- app: NAME on everything
def _objects(files: dict[str, tuple[str, int]]) -> list[dict]:
    return [yaml.safe_load(text) for rel, (text, _) in files.items()
            if rel.startswith("manifests/") and rel != "manifests/kustomization.yaml"]


@pytest.mark.parametrize("case", [f"preset-{p}" for p in PRESETS] + [f"example-{p.stem}" for p in sorted(EXAMPLES.glob("*.yaml"))])
def test_every_object_and_pod_template_carries_app_name(case: str):
    from wizard.presets import get

    kind, _, what = case.partition("-")
    data = get(what).answers if kind == "preset" else yaml.safe_load((EXAMPLES / f"{what}.yaml").read_text())
    # labels follow from the name alone: the rules across fields are not what is tested here
    config = validate(with_default_name(yaml.safe_load(yaml.safe_dump(data)), what), source=case, checks=False)
    for obj in _objects(render_files(config, what)):
        assert obj["metadata"]["labels"]["app"] == what, (case, obj["kind"])
        template = obj.get("spec", {}).get("template")
        if template:  # Deployment, Job: their pods too
            assert template["metadata"]["labels"]["app"] == what, (case, obj["kind"])
        selector = obj.get("spec", {}).get("selector")
        if isinstance(selector, dict):  # selectors are as they were: a Deployment's cannot change
            assert "app" not in selector.get("matchLabels", selector), (case, obj["kind"])


def test_oc_get_jobs_by_app_label_finds_the_submitted_jobs(tmp_path, monkeypatch, capsys):
    """Seed 001: `oc get jobs -l app=lr-sweep`, then `oc logs` each; here through the stand-in oc."""
    cluster = Cluster(tmp_path, monkeypatch)
    dep = cluster.job("train")
    cluster.seed(dep)
    for _ in range(2):
        rc, _, err = cluster.verb(capsys, "submit", dep)
        assert rc == 0, err
    submitted = sorted(o["metadata"]["name"] for o in cluster.created() if o["kind"] == "Job")
    env = {**os.environ, **cluster.env}
    for kind in ("jobs", "pods"):
        found = subprocess.run(["oc", "get", kind, "-l", "app=train", "-o", "name"], env=env,
                               capture_output=True, text=True, check=True).stdout.split()
        assert len(found) == 2 and all(any(n in f for f in found) for n in submitted), (kind, found)


# --------------------------------------------------------------------------- the seed's config fragments
def test_the_data_file_holds_every_config_fragment_of_the_seed():
    """The four config.yaml fragments of the users' guide, copied word for word into the data file."""
    titles = [title for title, _ in fragments()]
    assert len(titles) == 4 and len(set(titles)) == 4


@pytest.mark.parametrize("index", range(4), ids=[t for t, _ in fragments()])
def test_each_config_fragment_of_the_seed_loads_and_renders(index: int, deployments: Path):
    _, text = fragments()[index]
    target = deployment_from(deployments, "seed-fragment", text)
    _, config = load_deployment(target)  # what every script does first
    files = render_files(config, target.name)
    for rel, (manifest, _) in files.items():
        if rel.startswith("manifests/"):
            assert check_manifest_text(manifest) == [], rel


def test_inference_fragment_is_read_as_todays_keys(deployments: Path):
    _, config = load_deployment(deployment_from(deployments, "api", fragments()[0][1]))
    inf = config.inference
    assert inf.enabled and inf.port == 8000 and inf.endpoint == "/v1/completions" and inf.health_check == "/health"


def test_experiment_tracking_fragment_is_read_as_experiment_tracking(deployments: Path):
    assert LEGACY_KEYS["experiment_tracking"] == ("experiment", "tracking")
    _, config = load_deployment(deployment_from(deployments, "ablation", fragments()[1][1]))
    tr = config.experiment.tracking
    assert (tr.enabled, tr.backend, tr.project, tr.tags) == (True, "wandb", "my-experiments", ["ablation", "gpt2"])
    written = dump_user_config(config, schema_ref="config.schema.json")
    assert "experiment_tracking" not in written and "  tracking:\n    enabled: true\n" in written


def test_experiment_tracking_beside_experiment_keeps_both_and_todays_spelling_wins():
    config = validate({"application": {"name": "x"},
                       "experiment": {"parallelism": 2, "tracking": {"project": "today"}},
                       "experiment_tracking": {"enabled": True, "project": "legacy", "tags": ["a"]}}, source="t")
    tr = config.experiment.tracking
    assert config.experiment.parallelism == 2
    assert (tr.enabled, tr.project, tr.tags) == (True, "today", ["a"])


def test_a_misspelt_legacy_key_inside_is_still_refused():
    from wizard.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        validate({"application": {"name": "x"}, "experiment_tracking": {"enabeld": True}}, source="t")
    assert "experiment.tracking.enabeld: unknown key (did you mean 'enabled'?)" in "\n".join(err.value.lines())


def test_new_takes_the_experiment_tracking_fragment_as_answers(deployments: Path, tmp_path: Path, capsys):
    answers = tmp_path / "answers.yaml"
    answers.write_text(fragments()[1][1])
    rc = main(["new", "ablation-study", "--answers", str(answers), "--defaults", "--deployments-dir", str(deployments),
               "--set", "application.execution.mode=job"])
    assert rc == 0, capsys.readouterr().err
    written = yaml.safe_load((deployments / "ablation-study" / "config.yaml").read_text())
    assert written["experiment"]["tracking"]["project"] == "my-experiments" and "experiment_tracking" not in written


# --------------------------------------------------------------------------- editing config.yaml with yq
def yq_edit(path: Path, expression: str) -> str:
    """Edit config.yaml in place as the seed does (`yq eval -i`): with the yq found here, else
    the same edit in Python (what Python yq -yi amounts to: the data, comments dropped)."""
    found = ROOT / ".venv" / "bin" / "yq"
    yq = str(found) if found.exists() else shutil.which("yq")
    if yq is not None:
        version = subprocess.run([yq, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout
        if "mikefarah" in version:  # the Go yq of the seed
            subprocess.run([yq, "eval", "-i", expression, str(path)], check=True)
            return "go"
        if shutil.which("jq"):  # Python yq drives jq
            subprocess.run([yq, "-yi", expression, str(path)], check=True)
            return "python"
    key, value = expression.split(" = ", 1)
    data = yaml.safe_load(path.read_text())
    node = data
    *parents, last = key.lstrip(".").split(".")
    for p in parents:
        node = node[p]
    node[last] = yaml.safe_load(value)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return "pure-python"


def test_config_edited_with_yq_reads_as_meant_and_render_puts_the_header_back(deployments: Path, capsys):
    assert main(["new", "lr-sweep", "--defaults", "--deployments-dir", str(deployments), "--set", "resources.gpus=1",
                 "--set", "application.execution.mode=job", "--set", "application.execution.arguments=--lr 0.001"]) == 0
    target = deployments / "lr-sweep"
    cfg = target / "config.yaml"
    _, before = load_deployment(target)
    how = yq_edit(cfg, '.application.execution.arguments = "--lr 0.01 --bs 32"')
    edited = cfg.read_text()
    print(f"edited with {how} yq")
    if how != "go":  # Python yq, like yaml.safe_dump, drops every comment: our header and the derived values
        assert not edited.startswith("#") and "(follows" not in edited
    _, after = load_deployment(target)
    assert after.application.execution.arguments == "--lr 0.01 --bs 32"
    # read as the user meant: the edit, and nothing else changed (derived values derived again)
    assert after == before.model_copy(update={"application": before.application.model_copy(
        update={"execution": before.application.execution.model_copy(update={"arguments": "--lr 0.01 --bs 32"})})})
    assert after.derived_paths == before.derived_paths or how == "go"

    capsys.readouterr()
    assert main(["render", str(target)]) == 0
    out = capsys.readouterr().out
    text = cfg.read_text()
    header = SCHEMA_COMMENT.format("config.schema.json") + HEADER
    assert text.startswith(header)
    if how != "go":
        assert "changed   config.yaml  (its header comment lines put back" in out
        assert text == header + edited  # every other byte is the user's
    _, again = load_deployment(target)
    assert again == after
    assert "--lr" in (target / "manifests" / "job.yaml").read_text()
    # the next render leaves config.yaml alone
    assert main(["render", str(target)]) == 0
    assert cfg.read_text() == text and "config.yaml" not in capsys.readouterr().out


def test_header_restore_keeps_the_users_own_lines_and_bytes(deployments: Path, capsys):
    from wizard.render import config_header_restored

    target = deployments / "d"
    target.mkdir()
    cfg = target / "config.yaml"
    cfg.write_bytes(b"# yaml-language-server: $schema=elsewhere.json\r\napplication:\r\n  name: d\r\n")
    restored = config_header_restored(target)
    assert restored == ("# yaml-language-server: $schema=elsewhere.json\r\n" + HEADER.replace("\n", "\r\n")
                        + "application:\r\n  name: d\r\n")
    cfg.write_text("# my note\napplication: {name: d}\n")
    assert config_header_restored(target) == SCHEMA_COMMENT.format("config.schema.json") + HEADER + "# my note\napplication: {name: d}\n"
    cfg.write_text(SCHEMA_COMMENT.format("config.schema.json") + HEADER + "application: {name: d}\n")
    assert config_header_restored(target) is None
    # dry run says so and writes nothing
    cfg.write_text("application: {name: d}\n")
    assert main(["render", str(target), "--dry-run"]) == 0
    assert "config.yaml" in capsys.readouterr().out and cfg.read_text() == "application: {name: d}\n"
