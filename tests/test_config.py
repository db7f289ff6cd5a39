"""The config model: what it accepts, what it derives, and what it rejects with which message."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from wizard.config import Config, json_schema
from wizard.errors import ConfigError
from wizard.loader import apply_sets, dump_config, load_config, parse_yaml, validate

from conftest import DATA, EXAMPLES


def cfg(**sections) -> Config:
    data = {"application": {"name": "demo"}}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return validate(data, source="config.yaml")


def problem(data: dict) -> str:
    data.setdefault("application", {}).setdefault("name", "demo")
    with pytest.raises(ConfigError) as info:
        validate(data, source="config.yaml")
    return str(info.value)


# --------------------------------------------------------------------------- the seed's examples
def test_seed_inference_server_config_loads_unchanged():
    config = load_config(DATA / "seed_inference_server.yaml")
    assert config.deployment.cluster == "barcelona"
    assert config.application.type == "custom_command"
    # The seed puts the command in source.path; it is read as the command.
    assert config.application.source.command.startswith("python -m vllm.entrypoints.openai.api_server")
    assert config.application.execution.mode == "auto_start"
    assert config.application.runtime.working_dir == "/workspace/llama-inference"
    assert config.inference.enabled and config.inference.port == 8000
    assert config.inference.endpoint == "/v1/completions"
    assert config.resources.gpus == 8
    assert config.monitoring.type == "inference"
    assert config.monitoring.metrics == ["requests_per_second", "latency_p99", "throughput_tokens_per_sec"]
    assert config.runs_vllm


def test_seed_experiment_suite_config_loads_unchanged():
    config = load_config(DATA / "seed_experiment_suite.yaml")
    assert config.deployment.mode == "multi-node" and config.deployment.num_nodes == 2
    assert config.application.type == "directory"
    assert config.application.source.entry_point == "sweep.py"
    assert config.application.execution.argv() == ["--config", "sweep_config.yaml"]
    assert config.experiment.tracking.entity == "my-team"
    assert config.experiment.sweep.parameters["batch_size"] == [16, 32, 64]
    assert config.experiment.parallelism == 4


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_walkthrough_answers_are_valid(example: Path):
    data = parse_yaml(example.read_text(), example.name)
    data["application"]["name"] = example.stem
    validate(data, source=example.name)


def test_written_config_reads_back_identically_and_matches_the_json_schema():
    config = load_config(DATA / "seed_experiment_suite.yaml")
    text = dump_config(config, schema_ref="config.schema.json")
    assert text.startswith("# yaml-language-server: $schema=config.schema.json\n")
    data = yaml.safe_load(text)
    jsonschema.validate(data, json_schema())
    assert validate(data, source="x") == config


# --------------------------------------------------------------------------- spellings
@pytest.mark.parametrize("typed", ["auto-start", "Auto-start", "AUTO_START", "auto start", "autostart"])
def test_execution_mode_spellings_users_type_are_accepted(typed):
    config = cfg(application={"name": "demo", "execution": {"mode": typed}})
    assert config.application.execution.mode == "auto_start"


@pytest.mark.parametrize("typed,canonical", [("Single file", "single_file"), ("custom-command", "custom_command"),
                                             ("Model server", "model_server")])
def test_application_type_spellings(typed, canonical):
    data = {"name": "demo", "type": typed, "source": {"path": "a.py", "command": "python a.py"}}
    if canonical == "model_server":
        config = cfg(application=data, inference={"enabled": True, "engine": "transformers", "model": "m"})
    else:
        config = cfg(application=data)
    assert config.application.type == canonical


def test_unknown_mode_names_the_choices_and_the_nearest():
    msg = problem({"application": {"execution": {"mode": "jobs"}}})
    assert msg.startswith("config.yaml: application.execution.mode: 'jobs' is not one of auto_start, job, manual")
    assert "did you mean 'job'?" in msg


# --------------------------------------------------------------------------- derived values
def test_memory_cpu_and_shm_scale_with_gpus():
    r = cfg(resources={"gpus": 8}).resources
    assert (r.cpu, r.memory, r.shm_size) == ("32", "256Gi", "64Gi")
    r = cfg(resources={"gpus": 0}).resources
    assert (r.cpu, r.memory, r.shm_size) == ("2", "16Gi", "1Gi")


def test_explicit_resources_win_over_derived_ones():
    r = cfg(resources={"gpus": 8, "memory": "64Gi", "cpu": "500m"}).resources
    assert (r.memory, r.cpu, r.shm_size) == ("64Gi", "500m", "32Gi")


@pytest.mark.parametrize("typed,quantity", [("256GB", "256G"), ("16Gi", "16Gi"), (32, "32Gi"), ("1.5Gi", "1536Mi"), ("512MiB", "512Mi")])
def test_memory_is_normalised_to_kubernetes_quantities(typed, quantity):
    assert cfg(resources={"memory": typed}).resources.memory == quantity


def test_vllm_tensor_parallel_follows_gpus():
    config = cfg(application={"type": "model_server"}, inference={"enabled": True, "model": "m"}, resources={"gpus": 4})
    assert config.inference.tensor_parallel_size == 4


def test_single_file_without_a_path_runs_main_py():
    assert cfg().application.source.path == "main.py"


def test_base_image_follows_the_engine():
    assert "vllm" in load_config(DATA / "seed_inference_server.yaml").image.base
    assert "pytorch" in cfg(resources={"gpus": 1}).image.base
    assert "python" in cfg().image.base


# --------------------------------------------------------------------------- rejected neighbours
@pytest.mark.parametrize("data,expected", [
    ({"application": {"sourc": {}}}, "application.sourc: unknown key (did you mean 'source'?)"),
    ({"resoures": {}}, "resoures: unknown key (did you mean 'resources'?)"),
    ({"resources": {"gpus": -1}}, "resources.gpus: -1: should be greater than or equal to 0"),
    ({"resources": {"gpus": 64}}, "resources.gpus: 64: should be less than or equal to 16"),
    ({"resources": {"memory": "lots"}}, "resources.memory: 'lots' is not a size"),
    ({"resources": {"memory": "100Mi"}}, "resources.memory: 100Mi is too little"),
    ({"resources": {"cpu": "-2"}}, "resources.cpu: '-2' is not a CPU amount"),
    ({"resources": {"memory": "8Gi", "shm_size": "16Gi"}}, "resources.shm_size: 16Gi is more than the pod's memory"),
    ({"deployment": {"mode": "multi-node"}, "application": {"execution": {"mode": "job"}}},
     "deployment.num_nodes: a multi-node deployment needs num_nodes of 2 or more"),
    ({"deployment": {"num_nodes": 3}}, "deployment.num_nodes: 3 nodes needs mode: multi-node"),
    ({"deployment": {"mode": "multi-node", "num_nodes": 2}}, "application.execution.mode: multi-node runs as a job"),
    ({"application": {"execution": {"mode": "job"}}, "inference": {"enabled": True}},
     "inference.enabled: a job runs to completion and cannot serve requests or have a Route"),
    ({"application": {"type": "model_server"}, "inference": {"enabled": True, "model": "m", "tensor_parallel_size": 4},
      "resources": {"gpus": 2}}, "inference.tensor_parallel_size: 4 is more than the 2 GPU(s)"),
    ({"application": {"type": "model_server"}, "inference": {"enabled": True, "model": "m"}},
     "inference.engine: vLLM needs a GPU"),
    ({"application": {"type": "model_server"}, "inference": {"enabled": True, "engine": "transformers"}},
     "inference.model: the model_server application needs a model"),
    ({"application": {"type": "batch_inference"}, "inference": {"model": "m", "engine": "transformers"}},
     "application.execution.mode: batch_inference runs to completion"),
    ({"application": {"type": "directory", "source": {"path": "src"}}}, "application.source.entry_point: a directory application needs"),
    ({"application": {"type": "custom_command"}}, "application.source.command: a custom_command application needs"),
    ({"application": {"type": "custom_command", "source": {"command": "python 'unclosed"}}}, "application.source.command: cannot split"),
    ({"application": {"execution": {"arguments": "--msg 'unclosed"}}}, "application.execution.arguments: cannot split"),
    ({"application": {"source": {"path": "../../etc/passwd"}}}, "application.source.path: '../../etc/passwd' leaves the workspace"),
    ({"application": {"requirements": "req.txt; rm -rf /"}}, "application.requirements: 'req.txt; rm -rf /' is not a file"),
    ({"application": {"name": "My_App"}}, "application.name: 'My_App' is not a valid application name"),
    ({"application": {"name": "a" * 64}}, "is 64 characters; a application name has at most 63"),
    ({"inference": {"enabled": True, "port": 80}}, "inference.port: 80: should be greater than or equal to 1024"),
    ({"inference": {"enabled": True, "health_check": "health"}}, "inference.health_check: 'health' is not a URL path"),
    ({"inference": {"enabled": True, "replicas": 3}}, "resources.storage.access_mode: 3 replicas on several nodes cannot share"),
    ({"inference": {"autoscaling": {"min_replicas": 3, "max_replicas": 2}}}, "inference.autoscaling.max_replicas: 2 is below min_replicas 3"),
    ({"inference": {"quantization": "int3"}}, "inference.quantization: 'int3' is not one of awq"),
    ({"inference": {"route": {"timeout": "forever"}}}, "inference.route.timeout: 'forever' is not a timeout"),
    ({"inference": {"api_key_secret": "Bad Secret"}}, "inference.api_key_secret: 'Bad Secret' is not a valid Secret name"),
    ({"monitoring": {"service_monitor": True}}, "monitoring.service_monitor: a ServiceMonitor needs a served application"),
    ({"experiment": {"sweep": {"parameters": {"lr": [1, 2]}}}}, "experiment.sweep: a sweep submits jobs"),
    ({"application": {"execution": {"mode": "job"}}, "experiment": {"sweep": {"method": "random", "parameters": {"lr": [1]}}}},
     "experiment.sweep.max_runs: a random sweep needs max_runs"),
    ({"application": {"execution": {"mode": "job"}},
      "experiment": {"sweep": {"parameters": {"lr": list(range(100)), "bs": list(range(101))}}}},
     "experiment.sweep.parameters: the grid has 10,100 combinations, more than the 10,000 trials one sweep may run; "
     "'bs' contributes most (101 values)"),
    ({"experiment": {"tracking": {"enabled": True, "backend": "mlflow"}}}, "experiment.tracking.uri: the mlflow backend needs"),
    ({"image": {"base": "not an image"}}, "image.base: 'not an image' is not an image reference"),
    ({"deployment": {"namespace": "My Project"}}, "deployment.namespace: 'My Project' is not a valid namespace"),
    ({"version": 2}, "version: this tool reads version 1 files, not 2"),
])
def test_rejected_with_the_field_and_the_reason(data, expected):
    msg = problem(data)
    assert expected in msg
    assert "\n" not in msg and "Traceback" not in msg


BIG = {f"p{i}": list(range(20)) for i in range(8)}  # 25,600,000,000 combinations


@pytest.mark.parametrize("sweep,size", [
    ({"parameters": {"lr": list(range(100)), "bs": list(range(100))}}, 10_000),  # the bound itself
    ({"parameters": BIG, "max_runs": 50}, 20 ** 8),  # a grid capped by max_runs
    ({"method": "random", "parameters": BIG, "max_runs": 10_000}, 20 ** 8),
])
def test_sweeps_within_the_bound_are_accepted_and_sized_without_listing(sweep, size):
    config = cfg(application={"execution": {"mode": "job"}}, experiment={"sweep": sweep})
    assert config.experiment.sweep.size == size


def test_all_problems_are_listed_for_validate():
    with pytest.raises(ConfigError) as info:
        validate({"application": {"name": "demo"}, "resources": {"gpus": -1, "memory": "x"}}, source="config.yaml")
    assert len(info.value.lines()) == 2
    assert "(and 1 more problem)" in str(info.value)


def test_malformed_yaml_names_line_and_column():
    with pytest.raises(ConfigError) as info:
        parse_yaml("application:\n  name: [demo\n", "config.yaml")
    assert str(info.value).startswith("config.yaml: malformed YAML: line ")


def test_a_list_at_top_level_is_rejected():
    with pytest.raises(ConfigError, match="expected a mapping of sections"):
        parse_yaml("- a\n- b\n", "config.yaml")


# --------------------------------------------------------------------------- --set
def test_set_keeps_text_fields_byte_for_byte():
    hostile = "--msg \"it's $(rm -rf ~)\" `id` ; echo"
    data = apply_sets({}, [f"application.execution.arguments={hostile}", "resources.gpus=2",
                           "experiment.tracking.tags=[a, b]", "application.name=demo"])
    assert data["application"]["execution"]["arguments"] == hostile
    assert data["resources"]["gpus"] == 2
    assert data["experiment"]["tracking"]["tags"] == ["a", "b"]


def test_set_text_that_looks_like_yaml_stays_text():
    data = apply_sets({}, ["inference.model=yes", "application.name=demo", "application.source.path=null.py"])
    assert data["inference"]["model"] == "yes"


@pytest.mark.parametrize("expr,expected", [
    ("resources.gpu=2", "resources.gpu: unknown key (did you mean 'gpus'?)"),
    ("resources.gpus", "'resources.gpus' is not key=value"),
    ("resources..gpus=1", "is not a dotted key"),
    ("resources.gpus.count=1", "resources.gpus: is a value, not a section"),
])
def test_set_mistakes_are_reported(expr, expected):
    with pytest.raises(ConfigError) as info:
        apply_sets({}, [expr])
    assert expected in str(info.value)


def test_json_schema_is_strict_and_documents_fields():
    schema = json_schema()
    assert schema["additionalProperties"] is False
    assert "description" in schema["$defs"]["Resources"]["properties"]["gpus"]
    assert json.loads(json.dumps(schema)) == schema


def test_a_deliberate_empty_secret_survives_writing_and_reading():
    config = cfg(secrets={"huggingface": None})
    again = validate(yaml.safe_load(dump_config(config, schema_ref="s.json")), source="again")
    assert again.secrets.huggingface is None and again == config


# --------------------------------------------------------------------------- derived in one step, written as comments
from wizard.config import DERIVED, DERIVED_PATHS  # noqa: E402
from wizard.loader import Answers, dump_user_config, is_follows_comment  # noqa: E402
from wizard.presets import PRESETS  # noqa: E402

from conftest import run_wizard  # noqa: E402


def _every_case() -> list[tuple[str, dict]]:
    cases = [("defaults", {"application": {"name": "defaults"}})]
    cases += [(f"preset-{p.name}", Answers(f"preset-{p.name}", preset=p.name).data) for p in PRESETS]
    for path in sorted(EXAMPLES.glob("*.yaml")):
        cases.append((path.stem, Answers(path.stem, answers=parse_yaml(path.read_text(), path.name)).data))
    return cases


def test_derived_paths_are_what_the_table_filled_and_never_a_given_value():
    config = cfg(resources={"gpus": 2, "cpu": "3"}, inference={"readiness_check": "/live"})
    assert "resources.cpu" not in config.derived_paths and config.resources.cpu == "3"
    assert "inference.readiness_check" not in config.derived_paths and config.inference.readiness_check == "/live"
    assert {"resources.memory", "resources.shm_size", "image.base", "monitoring.type"} <= config.derived_paths
    assert config.derived_paths <= DERIVED_PATHS == {d.path for d in DERIVED}
    assert (config.resources.memory, config.resources.shm_size) == ("64Gi", "16Gi")
    # an empty value is not a choice: it follows
    assert "resources.cpu" in cfg(resources={"gpus": 2, "cpu": None}).derived_paths


def test_the_rules_check_derived_values():
    # shm_size given, memory derived from 0 GPUs (16Gi): the rule sees the derived memory
    assert "resources.shm_size: 20Gi is more than the pod's memory (16Gi)" in problem({"resources": {"shm_size": "20Gi"}})
    # without the rules (the wizard, on incomplete answers) the values are still derived
    config = validate({"application": {"name": "x", "type": "model_server"}, "inference": {"enabled": True},
                       "resources": {"gpus": 4}}, source="x", checks=False)
    assert config.inference.tensor_parallel_size == 4 and "inference.tensor_parallel_size" in config.derived_paths


@pytest.mark.parametrize("case,data", _every_case(), ids=lambda c: c if isinstance(c, str) else "")
def test_user_config_reads_back_to_the_same_config_with_the_same_values_derived(case, data):
    config = validate(data, source=case)
    text = dump_user_config(config, schema_ref="config.schema.json")
    again = yaml.safe_load(text)
    jsonschema.validate(again, json_schema())
    back = validate(again, source="again")
    assert back == config and back.derived_paths == config.derived_paths
    assert dump_user_config(back, schema_ref="config.schema.json") == text
    follows = [line for line in text.splitlines() if is_follows_comment(line)]
    assert len(follows) == len(config.derived_paths)


def test_user_config_comments_each_derived_value_at_its_place():
    config = cfg(resources={"gpus": 1}, application={"execution": {"mode": "job"}})
    text = dump_user_config(config, schema_ref="config.schema.json")
    assert "resources:\n  gpus: 1\n  # cpu: '4'  (follows resources.gpus; set it to choose)\n" in text
    assert "  # memory: 32Gi  (follows resources.gpus; set it to choose)\n" in text
    # a section of nothing but derived values is commented out whole (an empty key would read as null)
    assert "  # source:\n  #   path: main.py  (follows application.type; set it to choose)\n" in text
    # the copy for the cluster spells every value out
    resolved = dump_config(config, schema_ref="config.schema.json")
    assert "  cpu: '4'\n" in resolved and "(follows" not in resolved
    assert validate(yaml.safe_load(resolved), source="resolved").derived_paths == frozenset()


def _written(deployments: Path, name: str, *args: str) -> Path:
    result = run_wizard("new", name, *args, "--deployments-dir", str(deployments))
    assert result.returncode == 0, result.stderr
    return deployments / name / "config.yaml"


def test_a_new_gpu_count_derives_cpu_memory_shm_and_tensor_parallel_again(deployments: Path):
    path = _written(deployments, "llm", "--preset", "vllm-server", "--defaults")
    assert "  # tensor_parallel_size: 1  (follows resources.gpus; set it to choose)\n" in path.read_text()
    # validate and submit read config.yaml and apply --set on top
    res, inf = (c := load_config(path, sets=["resources.gpus=2"])).resources, c.inference
    assert (res.cpu, res.memory, res.shm_size, inf.tensor_parallel_size) == ("8", "64Gi", "16Gi", 2)
    # new --set on the existing deployment: config.yaml keeps following
    _written(deployments, "llm", "--set", "resources.gpus=2")
    text = path.read_text()
    assert "  gpus: 2\n  # cpu: '8'  (follows resources.gpus; set it to choose)\n" in text
    assert "  # tensor_parallel_size: 2  (follows resources.gpus; set it to choose)\n" in text
    # an edit of gpus, then render: the ConfigMap holds the values for the new count
    path.write_text(text.replace("  gpus: 2\n", "  gpus: 4\n"))
    result = run_wizard("render", str(deployments / "llm"))
    assert result.returncode == 0, result.stderr
    mounted = yaml.safe_load(yaml.safe_load((deployments / "llm" / "manifests" / "configmap.yaml").read_text())["data"]["config.yaml"])
    assert mounted["resources"] == {"gpus": 4, "cpu": "16", "memory": "128Gi", "shm_size": "32Gi",
                                    "storage": {"size": "50Gi", "access_mode": "ReadWriteOnce",
                                                "models": {"enabled": False, "claim": "mlshift-models", "size": "200Gi",
                                                           "access_mode": "ReadWriteOnce", "mount": "/models",
                                                           "hf_cache": True, "offline": False}}}
    assert mounted["inference"]["tensor_parallel_size"] == 4


def test_a_chosen_cpu_stays_when_the_gpus_change(deployments: Path):
    path = _written(deployments, "pinned", "--set", "resources.gpus=1", "--set", "resources.cpu=4")
    assert "  cpu: '4'\n" in path.read_text()  # chosen, though equal to the derived value: written out
    _written(deployments, "pinned", "--set", "resources.gpus=2")
    config = load_config(path)
    assert (config.resources.cpu, config.resources.memory) == ("4", "64Gi")
    assert "resources.cpu" not in config.derived_paths


def test_an_old_file_with_derived_values_written_out_keeps_them(deployments: Path):
    """Files written before derived values became comments read every value as chosen."""
    path = _written(deployments, "old", "--preset", "vllm-server", "--defaults")
    path.write_text(dump_config(load_config(path), schema_ref="config.schema.json"))  # the old way: all spelled out
    config = load_config(path, sets=["resources.gpus=2"])
    assert (config.resources.cpu, config.resources.memory, config.inference.tensor_parallel_size) == ("4", "32Gi", 1)
    assert config.derived_paths == frozenset()
    # deleting a line lets it follow again
    path.write_text(path.read_text().replace("  cpu: '4'\n", ""))
    assert load_config(path, sets=["resources.gpus=2"]).resources.cpu == "8"


def test_submit_with_set_gpus_derives_for_that_submission(tmp_path, monkeypatch, capsys):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from fake_oc.harness import Cluster

    cluster = Cluster(tmp_path, monkeypatch)
    dep = cluster.job("train", "resources.gpus=1")
    cluster.seed(dep)
    rc, _, err = cluster.verb(capsys, "submit", dep, "--set", "resources.gpus=2")
    assert rc == 0, err
    (job,) = [o for o in cluster.created() if o["kind"] == "Job"]
    requests = job["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]
    assert (requests["cpu"], requests["memory"]) == ("8", "64Gi")
    annotated = yaml.safe_load(job["spec"]["template"]["metadata"]["annotations"]["mlshift.io/config"])
    assert annotated["resources"]["shm_size"] == "16Gi"  # the submission's copy: every value resolved


# --------------------------------------------------------------------------- the sources of answers
def test_answers_priority_set_over_answers_file_over_config_yaml_over_preset():
    answers = Answers(
        "demo", preset="sweep",
        existing={"resources": {"gpus": 2, "gpu_product": "A"}, "application": {"execution": {"arguments": "--old"}}},
        answers={"resources": {"gpus": 3}, "experiment": {"sweep": {"parameters": {"bs": [16]}}}},
        sets=("resources.gpus=4",),
    )
    data = answers.data
    assert data["resources"] == {"gpus": 4, "gpu_product": "A", "storage": {"access_mode": "ReadWriteMany"}}
    assert data["application"]["name"] == "demo"  # the deployment's name, where none is given
    assert data["application"]["source"] == {"path": "train.py"}  # from the preset
    assert data["application"]["execution"]["arguments"] == "--old"
    # a sweep's parameters are one value: the answers file's replace the preset's, not merged
    assert data["experiment"]["sweep"] == {"method": "grid", "parameters": {"bs": [16]}}
    assert [layer for layer, _ in answers.layers()] == ["preset", "config.yaml", "answers", "--set"]
    assert answers.origin("resources.gpus") == "--set"
    assert answers.origin("experiment.sweep.parameters") == "answers"
    assert answers.origin("resources.gpu_product") == "config.yaml"
    assert answers.origin("application.source.path") == "preset"
    assert answers.origin("application.name") == "derived"
    config = validate(data, source="answers")
    assert answers.origin("resources.cpu", config) == "derived" and not answers.chosen("resources.cpu")
    assert answers.origin("inference.port", config) is None  # the model's default
    assert answers.only("config.yaml").data["resources"] == {"gpus": 2, "gpu_product": "A"}


def test_answers_a_higher_layer_can_remove_a_section():
    answers = Answers("demo", preset="sweep", sets=("experiment.sweep=",))
    assert answers.data["experiment"]["sweep"] is None
    assert answers.origin("experiment.sweep.method") == "--set"


def test_answers_bad_input_is_one_line():
    from wizard.errors import UserError

    with pytest.raises(UserError, match="unknown preset 'sweeep'"):
        Answers("demo", preset="sweeep")
    with pytest.raises(ConfigError, match="resources.gpu: unknown key"):
        Answers("demo", sets=("resources.gpu=2",))


def test_the_printed_command_keeps_a_chosen_value_equal_to_the_derived_one():
    from wizard.summary import equivalent_sets

    config = validate(Answers("demo", sets=("resources.gpus=1", "resources.cpu=4")).data, source="answers")
    preset, sets = equivalent_sets(config, "demo")
    assert "resources.cpu=4" in sets
    replay = validate(Answers("demo", preset=preset, sets=tuple(sets)).data, source="replay")
    assert replay == config and replay.derived_paths == config.derived_paths


def test_the_summary_knows_the_comment_lines_it_wrote(tmp_path):
    from wizard.summary import _has_own_comments

    path = tmp_path / "config.yaml"
    path.write_text(dump_user_config(cfg(), schema_ref="config.schema.json"))
    assert not _has_own_comments(path)
    path.write_text(path.read_text() + "# my note\n")
    assert _has_own_comments(path)
