"""The first hour with the generated scripts: options typed in any order, each script's own
usage, the model and the API key of benchmark-inference, run-local of a directory application,
a readable sweep dry run, what `make setup` installs, and `new --preset` without questions."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from fake_oc.harness import Cluster  # noqa: E402

from conftest import EXAMPLES, ROOT, run_wizard  # noqa: E402
from wizard.verbs import BY_NAME, SCRIPT_ENV, VERBS  # noqa: E402

JOB_VERBS = {"submit", "watch", "jobs", "sweep", "compare", "logs", "promote"}
SUBMISSION = re.compile(r"\d{6}-\d{6}-[a-z0-9]{4}")


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    monkeypatch.delenv(SCRIPT_ENV, raising=False)
    return Cluster(tmp_path, monkeypatch)


def _deployed(cluster: Cluster, name: str, *sets: str) -> Path:
    """A deployment whose Deployment exists on the stand-in cluster (so it has a ready pod)."""
    dep = cluster.new(name, "deployment.namespace=team-a", *sets)
    files = [a for t in ("configmap", "persistentvolumeclaim", "deployment", "service")
             if (dep / "manifests" / f"{t}.yaml").exists() for a in ("-f", str(dep / "manifests" / f"{t}.yaml"))]
    subprocess.run(["oc", "apply", *files], env={**os.environ, **cluster.env}, check=True, capture_output=True)
    cluster.reset()
    return dep


def _requests(cluster: Cluster) -> list[dict]:
    f = cluster.log / "requests.jsonl"
    return [json.loads(line) for line in f.read_text().splitlines()] if f.exists() else []


# --------------------------------------------------------------------------- 1. options in any order
# Every verb: (its options, its positional words). Each script is run with the options before the
# positionals and after them; both must mean the same.
ORDER = {
    "deploy": (["--build", "never", "--no-wait"], []),
    "delete": (["--jobs"], []),
    "status": ([], []),
    "logs": (["-f", "--tail", "5"], ["250102-130405-k3x9"]),
    "submit": (["--set", "resources.gpus=1"], ["hello"]),
    "watch": (["--no-logs", "--timeout", "60"], ["250102-130405-k3x9"]),
    "jobs": (["--sweep", "250102-130405-k3x9"], []),
    "run-app": (["--dry-run"], ["hello"]),
    "exec": (["--dry-run"], ["ls"]),
    "port-forward": (["--port", "9000"], []),
    "test-inference": (["--prompt", "hi", "--max-tokens", "8"], []),
    "bench": (["--concurrency", "2", "--stream"], []),
    "api-key": (["--name", "api-key"], []),
    "jupyter": (["--port", "8899"], []),
    "vscode": (["--port", "8099"], []),
    "sync": (["--remote", "/workspace/llm/out"], ["down"]),
    "sync-runs": ([], ["250102-130405-k3x9"]),
    "sweep": (["--max-runs", "1", "--seed", "3"], []),
    "compare": (["--metric", "loss"], []),
    "promote": (["--to", "llm", "--metric", "loss", "--if-better"], []),
    "run-local": (["--port", "9001"], ["hello"]),
}


def test_every_verb_has_an_order_case():
    assert set(ORDER) == set(BY_NAME)


@pytest.mark.parametrize("verb", [v.name for v in VERBS])
def test_options_before_and_after_the_positionals_parse_the_same(verb, tmp_path):
    from wizard.cli import build_parser

    options, words = ORDER[verb]
    before = vars(build_parser().parse_args([verb, str(tmp_path), *options, "--dry-run", *words]))
    after = vars(build_parser().parse_args([verb, str(tmp_path), *words, *options, "--dry-run"]))
    assert before == after
    assert before["dry_run"] is True
    if verb in ("logs", "watch"):
        assert before["job"] == words[0]
    if verb == "sync":
        assert before["direction"] == "down"


@pytest.mark.parametrize("script", VERBS, ids=[v.file for v in VERBS])
def test_every_script_takes_options_before_and_after_the_positionals(cluster, script):
    sets = ["experiment.sweep={parameters: {lr: [0.1, 0.01]}}"] if script.verb == "sweep" else []
    dep = cluster.job("train", *sets) if script.verb in JOB_VERBS else cluster.server("llm")
    options, words = ORDER[script.verb]
    outputs = []
    for argv in ([*options, "--dry-run", *words], [*words, *options, "--dry-run"]):
        res = cluster.script(dep, script.file, *argv)
        assert res.returncode == 0, (argv, res.stderr)
        assert "unrecognized arguments" not in res.stderr
        outputs.append(SUBMISSION.sub("ID", res.stdout))
    assert outputs[0] == outputs[1]
    assert cluster.calls() == []
    shown = outputs[0]
    if script.verb in ("logs", "watch"):
        assert "train-ID" in shown  # the job given after the options was used
    if script.verb == "sync":
        assert "/workspace/llm/out" in shown and "oc rsync" in shown
    if script.verb in ("submit", "run-app", "run-local", "exec"):
        assert ("ls" if script.verb == "exec" else "hello") in shown


def test_the_reported_commands_work_as_typed(cluster):
    dep = cluster.job()
    for file, argv in (("logs.sh", ["-f", "250102-130405-k3x9", "--dry-run"]),
                       ("watch-job.sh", ["--no-logs", "250102-130405-k3x9", "--dry-run"]),
                       ("sync-workspace.sh", ["--dry-run", "down"])):
        res = cluster.script(dep, file, *argv)
        assert res.returncode == 0, (file, res.stderr)


def test_words_after_double_dash_stay_the_applications_wherever_the_options_are(cluster):
    dep = cluster.job()
    res = cluster.script(dep, "submit-job.sh", "--dry-run", "--set", "resources.gpus=1", "--", "--dry-run", "-f", "x y")
    assert res.returncode == 0, res.stderr
    (job,) = [doc for doc in _stdin_documents(res.stdout) if doc.get("kind") == "Job"]
    argv = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert argv[-3:] == ["--dry-run", "-f", "x y"]


def _stdin_documents(dry_run: str) -> list[dict]:
    """The objects a dry run gives to `oc create -f -` (the items of a List, one by one)."""
    docs = []
    for part in dry_run.split("<<'MLSHIFT_STDIN_END'\n")[1:]:
        doc = yaml.safe_load(part.split("\nMLSHIFT_STDIN_END", 1)[0])
        docs += doc["items"] if doc.get("kind") == "List" else [doc]
    return docs


# --------------------------------------------------------------------------- 2. a script's own usage
@pytest.mark.parametrize("script", VERBS, ids=[v.file for v in VERBS])
def test_a_scripts_help_shows_the_scripts_usage(cluster, script):
    dep = cluster.server()
    res = cluster.script(dep, script.file, "--help")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"usage: scripts/{script.file} [-h] [--dry-run]"), res.stdout[:200]
    assert "DEPLOYMENT_DIR" not in res.stdout and "python -m wizard" not in res.stdout


def test_a_scripts_mistake_names_the_script(cluster):
    dep = cluster.server()
    res = cluster.script(dep, "benchmark-inference.sh", "--concurrency", "0")
    assert res.returncode == 2
    assert res.stderr == "error: argument --concurrency: 0 is not 1 or more (see scripts/benchmark-inference.sh --help)\n"
    res = cluster.script(dep, "logs.sh", "--bogus")
    assert res.returncode == 2 and res.stderr == "error: unrecognized arguments: --bogus (see scripts/logs.sh --help)\n"


def test_the_command_line_keeps_its_own_usage(monkeypatch, capsys, tmp_path):
    from wizard.cli import main

    monkeypatch.setenv(SCRIPT_ENV, "logs.sh")  # another verb's script: nothing changes for this one
    with pytest.raises(SystemExit):
        main(["bench", str(tmp_path), "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m wizard bench [-h]") and "DEPLOYMENT_DIR" in out
    monkeypatch.delenv(SCRIPT_ENV)
    with pytest.raises(SystemExit):
        main(["logs", str(tmp_path), "--help"])
    assert "usage: python -m wizard logs [-h]" in capsys.readouterr().out


# --------------------------------------------------------------------------- 3. the model of benchmark-inference
def _example(cluster: Cluster, name: str) -> Path:
    res = run_wizard("new", name, "--answers", str(EXAMPLES / f"{name}.yaml"), "--set", "deployment.namespace=team-a",
                     "--deployments-dir", str(cluster.deployments), cwd=cluster.elsewhere)
    assert res.returncode == 0, res.stderr
    return cluster.deployments / name


def test_bench_of_a_custom_vllm_command_asks_for_the_model_of_its_command(cluster):
    dep = _example(cluster, "llama-inference")  # python -m vllm.entrypoints.openai.api_server --model meta-llama/...
    res = cluster.script(dep, "benchmark-inference.sh", "--dry-run")
    assert res.returncode == 0, res.stderr
    (line,) = [ln for ln in res.stdout.splitlines() if ln.startswith("python -m runtime bench")]
    words = shlex.split(line)
    assert words[words.index("--model") + 1] == "meta-llama/Llama-3-70b-hf"
    res = cluster.script(dep, "benchmark-inference.sh", "--dry-run", "--model", "other")
    assert "--model other" in res.stdout


@pytest.mark.parametrize("command, model", [
    ("python -m vllm.entrypoints.openai.api_server --model org/m --tensor-parallel-size 8", "org/m"),
    ("vllm serve org/m --port 8000", "org/m"),
    ("/opt/venv/bin/vllm serve /models/m --served-model-name m", "m"),
    ("python -m vllm.entrypoints.openai.api_server --model=org/m --served-model-name a b", "a"),
    ("python serve.py --port 8000", None),
    ("python serve.py --model", None),
])
def test_the_model_a_command_serves(command, model):
    from wizard.ops.pods import command_model

    assert command_model(command) == model


def test_bench_without_a_known_model_asks_the_server(cluster):
    dep = _deployed(cluster, "srv", "application.type=custom_command", "application.source.command=python serve.py",
                    "inference.enabled=true")
    cluster.set(FAKE_OC_SECRETS="srv-api-keys")  # its Route's key Secret, as deploy makes it
    res = cluster.script(dep, "benchmark-inference.sh", "--num-requests", "2", "--concurrency", "1", "--max-tokens", "4")
    assert res.returncode == 0, res.stderr
    reqs = _requests(cluster)
    assert len(reqs) == 2 and {r["body"]["model"] for r in reqs} == {"fake-model"}  # the first of /v1/models


def test_bench_says_in_one_line_how_to_name_the_model_when_nobody_knows(cluster):
    dep = cluster.new("srv", "application.type=custom_command", "application.source.command=python serve.py",
                      "inference.enabled=true", "deployment.namespace=team-a")
    cluster.set(FAKE_OC_SECRETS="srv-api-keys")  # its Route's key Secret, as deploy makes it
    res = cluster.script(dep, "benchmark-inference.sh", "--url", "http://127.0.0.1:9")
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: cannot tell which model to benchmark: pass --model NAME")
    assert "the following arguments are required" not in res.stderr


# --------------------------------------------------------------------------- 4. one name for the API key
def test_benchmark_and_test_inference_send_the_deployments_key(cluster):
    dep = _deployed(cluster, "llm", "application.type=model_server", "inference.enabled=true", "inference.engine=transformers",
                    "inference.model=tiny-model", "inference.api_key_secret=llm-key")
    cluster.set(FAKE_OC_SECRETS="llm-key", OPENAI_API_KEY="sk-users-own", RUNTIME_API_KEY="sk-users-other")
    res = cluster.script(dep, "benchmark-inference.sh", "--num-requests", "3", "--concurrency", "1", "--max-tokens", "4")
    assert res.returncode == 0, res.stderr
    res = cluster.script(dep, "test-inference.sh")
    assert res.returncode == 0, res.stderr
    reqs = _requests(cluster)
    assert len(reqs) == 4 and {r["auth"] for r in reqs} == {"Bearer sk-test"}
    for path in dep.rglob("*"):  # the key is never written anywhere
        if path.is_file():
            assert b"sk-test" not in path.read_bytes()


def test_without_a_key_secret_no_key_of_the_users_is_sent(cluster):
    # an open Route (inference.route.public) is the one way to a server without a key Secret
    dep = _deployed(cluster, "llm", "application.type=model_server", "inference.enabled=true", "inference.engine=transformers",
                    "inference.model=tiny-model", "inference.route.public=true")
    cluster.set(OPENAI_API_KEY="sk-users-own")
    res = cluster.script(dep, "benchmark-inference.sh", "--num-requests", "2", "--concurrency", "1", "--max-tokens", "4")
    assert res.returncode == 0, res.stderr
    assert {r["auth"] for r in _requests(cluster)} == {None}


def test_the_runtime_reads_runtime_api_key_then_openai_api_key():
    from runtime.settings import API_KEY_ENV, API_KEY_FALLBACK_ENV, api_key_from_env, api_key_source

    assert (API_KEY_ENV, API_KEY_FALLBACK_ENV) == ("RUNTIME_API_KEY", "OPENAI_API_KEY")
    assert api_key_from_env({"RUNTIME_API_KEY": "a", "OPENAI_API_KEY": "b"}) == "a"
    assert api_key_source({"RUNTIME_API_KEY": " ", "OPENAI_API_KEY": "b"}) == ("OPENAI_API_KEY", "b")
    assert api_key_from_env({}) is None


def test_the_server_takes_openai_api_key_when_runtime_api_key_is_unset(monkeypatch):
    from runtime.cli import build_parser, serve_settings
    from runtime.settings import RuntimeConfig

    args = build_parser().parse_args(["serve", "--model", "m"])
    monkeypatch.delenv("RUNTIME_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    assert serve_settings(args, RuntimeConfig()).api_key == "sk-openai"
    monkeypatch.setenv("RUNTIME_API_KEY", "sk-runtime")
    assert serve_settings(args, RuntimeConfig()).api_key == "sk-runtime"


def test_scripts_against_a_real_server_with_a_key(cluster, tmp_path_factory, monkeypatch):
    """Our server on loopback wants the Secret's key; both scripts get answers (not 401s)."""
    pytest.importorskip("torch")
    from runtime_helpers import running_server, tiny_llama_path

    model = tiny_llama_path(tmp_path_factory)
    dep = cluster.new("llm", "application.type=model_server", "inference.enabled=true", "inference.engine=transformers",
                      "inference.model=tiny", "inference.api_key_secret=llm-key", "deployment.namespace=team-a")
    cluster.set(FAKE_OC_SECRETS="llm-key")
    with running_server(model=str(model), served_model_name="tiny", max_batch_size=4, api_key="sk-test") as url:
        res = cluster.script(dep, "benchmark-inference.sh", "--url", url, "--num-requests", "3", "--concurrency", "1",
                             "--max-tokens", "4", "--json", timeout=300)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["successful"] == 3
        res = cluster.script(dep, "test-inference.sh", "--url", url, "--max-tokens", "4", timeout=300)
        assert res.returncode == 0, res.stderr
        assert "answer:" in res.stdout


# --------------------------------------------------------------------------- 5. run-local of a directory application
def test_run_local_runs_a_directory_application_from_where_the_wizard_put_it(cluster):
    suite = cluster.elsewhere / "evaluation_suite"
    suite.mkdir()
    (suite / "helpers.py").write_text("NAME = 'helpers of the suite'\n")
    (suite / "run_eval.py").write_text("import os, sys\nfrom helpers import NAME\n"
                                       "print('cwd', os.getcwd()); print('args', sys.argv[1:]); print(NAME)\n")
    dep = _example(cluster, "model-eval")  # application.type: directory, source.path ./evaluation_suite/
    assert (dep / "workspace" / "run_eval.py").is_file()  # the folder's contents, copied flat
    res = cluster.script(dep, "run-local.sh", "--python", sys.executable)
    assert res.returncode == 0, res.stderr
    assert f"cwd {dep / 'workspace'}" in res.stdout
    assert "args ['--model', '/models/my-model', '--benchmark', 'all']" in res.stdout
    assert "helpers of the suite" in res.stdout
    (dep / "workspace" / "run_eval.py").unlink()
    res = cluster.script(dep, "run-local.sh", "--python", sys.executable)
    assert res.returncode == 2 and "workspace/run_eval.py does not exist" in res.stderr


# --------------------------------------------------------------------------- 6. a sweep's dry run a person can read
def test_a_sweep_dry_run_shows_a_table_of_its_runs_first(cluster):
    grid = {"lr": [0.1, 0.01, 0.001], "bs": [16, 32, 64], "opt": ["adam", "sgd", "lion"]}
    dep = cluster.job("train", "experiment.sweep={parameters: " + json.dumps(grid) + "}")
    res = cluster.script(dep, "run-sweep.sh", "--dry-run")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert "kind: Job" not in res.stdout
    table = lines[1:30]  # right after the dry run's first line, before any oc command
    assert all(ln.startswith("# ") for ln in lines[:30])
    assert re.match(r"# Sweep \d{6}-\d{6}-[a-z0-9]{4}: 27 trials \(the whole grid\), one Indexed Job", table[0])
    assert table[1].split()[1:] == ["TRIAL", "RUN", "lr", "bs", "opt"]
    rows = [ln.split()[1:] for ln in table[2:]]
    assert len(rows) == 27 and rows[0][2:] == ["0.1", "16", "adam"] and rows[-1][2:] == ["0.001", "64", "lion"]
    assert [r[0] for r in rows] == [str(i) for i in range(27)]
    assert all(re.fullmatch(r"\d{6}-\d{6}-[a-z0-9]{4}-\d{3}", r[1]) for r in rows)
    assert any(ln.startswith("# oc create") and "the sweep's Indexed Job" in ln and "--yaml" in ln for ln in lines)
    assert any(ln.startswith("# oc create") and "the table of 27 trials" in ln and "--yaml" in ln for ln in lines)
    full = cluster.script(dep, "run-sweep.sh", "--dry-run", "--yaml")
    assert full.returncode == 0, full.stderr
    kinds = re.findall(r"^  kind: (\w+)$", full.stdout, flags=re.M)  # the items of the Lists created
    assert kinds == ["Job", "ConfigMap"]
    assert len(lines) * 3 < len(full.stdout.splitlines())
    assert re.match(r"# Sweep \S+: 27 trials", full.stdout.splitlines()[1])  # the table still comes first
    assert cluster.calls() == []


# --------------------------------------------------------------------------- 7. make setup installs what the scripts need
def test_make_setup_installs_what_the_scripts_import():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("$(VENV)/.setup-done:", 1)[1].split("\n\n", 1)[0]
    installed = list(project["dependencies"])
    for spec in re.findall(r"\$\(INSTALL\) -e \"?\.(?:\[([^\]]*)\])?", recipe):
        for extra in filter(None, spec.split(",")):
            installed += project["optional-dependencies"][extra.strip()]
    names = {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower() for d in installed}
    assert re.search(r"\$\(INSTALL\) -e \"?\.", recipe), "make setup installs mlshift"
    # benchmark-inference.sh runs `python -m runtime bench`, whose client is httpx
    assert "httpx" in names


# --------------------------------------------------------------------------- 8. new --preset without questions
def _without_questions_table() -> list[str]:
    text = (ROOT / "docs" / "wizard.md").read_text().split("## Without questions", 1)[1].split("\n## ", 1)[0]
    return [row for row in text.splitlines() if row.startswith("| `python -m wizard new")]


def test_every_command_listed_without_questions_asks_none(tmp_path):
    answers = tmp_path / "answers.yaml"
    answers.write_text("resources: {gpus: 0}\n")
    rows = [r for r in _without_questions_table() if "the dialogue" not in r]
    assert any("--preset P" in r for r in rows)
    for n, row in enumerate(rows):
        command = row.split("`", 2)[1].replace(" [--set k=v ...]", "").replace("--set k=v ...", "--set resources.gpus=0")
        words = shlex.split(command.replace("NAME", f"d{n}").replace("--preset P", "--preset notebook")
                            .replace("FILE", str(answers)))
        res = run_wizard(*words[3:], "--deployments-dir", str(tmp_path / "deployments"))
        assert res.returncode == 0, (command, res.stderr)


def test_preset_alone_without_a_terminal_says_what_to_add(tmp_path):
    res = run_wizard("new", "x", "--preset", "notebook", "--deployments-dir", str(tmp_path))
    assert res.returncode == 2
    assert res.stderr == ("error: no terminal to ask preset notebook's questions on; add --defaults to take its answers "
                          "as they are, or --set key=value\n")


def test_the_printed_command_without_questions_asks_none():
    from wizard.cli import without_questions

    assert without_questions("python -m wizard new x --preset notebook") == "python -m wizard new x --preset notebook --defaults"
    same = "python -m wizard new x --preset sweep --set resources.gpus=2"
    assert without_questions(same) == same
    assert without_questions("python -m wizard new x --defaults") == "python -m wizard new x --defaults"
