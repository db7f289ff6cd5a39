"""The interactive wizard, driven for real through a pseudo-terminal.

Each test starts ``python -m wizard new ...`` under a pty, answers the questions with the keys a
person would press, and checks the config.yaml and files that were (or were not) written.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pexpect = pytest.importorskip("pexpect")

from wizard.config import Config  # noqa: E402
from wizard.errors import ConfigError  # noqa: E402
from wizard.loader import load_config, validate  # noqa: E402
from terminal import Screen  # noqa: E402

ENTER, DOWN, UP, CLEAR, CTRL_C = "\r", "\x1b[B", "\x1b[A", "\x15", "\x03"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def model_message(data: dict) -> str:
    """What the config model itself says about ``data`` (its first problem)."""
    with pytest.raises(ConfigError) as info:
        validate(data, source="answers")
    return info.value.problems[0][1]


class Wizard:
    def __init__(self, tmp_path: Path, name: str, *args: str):
        self.dir = tmp_path / "deployments"
        self.target = self.dir / name
        env = dict(os.environ, PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm", NO_COLOR="1")
        self.child = pexpect.spawn(
            sys.executable, ["-m", "wizard", "new", name, "--deployments-dir", str(self.dir), *args],
            cwd=str(tmp_path), env=env, encoding="utf-8", dimensions=(60, 400), timeout=15,
        )
        self.child.delaybeforesend = 0.01
        self.child.delayafterclose = self.child.delayafterterminate = 0.01
        self.out = ""
        self.screen = Screen()

    def _read(self, text: str) -> None:
        self.child.expect_exact(text)
        self.out += self.child.before + self.child.after
        self.screen.feed(self.child.before + self.child.after)

    def _pump(self, done, failure: str, timeout: float) -> "Wizard":
        """Read output into the screen until ``done()`` holds."""
        import time

        pending, self.child.buffer = self.child.buffer, ""
        self.out += pending
        self.screen.feed(pending)
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"{failure}:\n{self.screen.text()[-2000:]}")
            try:
                chunk = self.child.read_nonblocking(65536, timeout=0.1)
            except pexpect.TIMEOUT:
                continue
            self.out += chunk
            self.screen.feed(chunk)
        return self

    def shows(self, text: str, timeout: float = 10) -> "Wizard":
        """Wait until ``text`` is on the screen (a message drawn in pieces, such as a validation error)."""
        return self._pump(lambda: text in self.screen.text(), f"{text!r} not on screen", timeout)

    def at(self, question: str, timeout: float = 10) -> "Wizard":
        """Wait until the cursor sits on ``question``'s line: that prompt is the one reading keys.
        (Needed after a menu whose choices repeat the question's words.)"""
        def active() -> bool:
            lines, row = self.screen.lines, self.screen.row
            line = "".join(lines[row]) if row < len(lines) else ""
            return line.startswith("?") and question in line

        return self._pump(active, f"{question!r} is not the active prompt", timeout)

    def send(self, keys: str) -> "Wizard":
        self.child.send(keys)
        return self

    def press(self, question: str, keys: str = ENTER) -> "Wizard":
        self._read(question)
        self.child.send(keys)
        return self

    def type(self, question: str, text: str) -> "Wizard":
        return self.press(question, CLEAR + text + ENTER)

    def see(self, text: str) -> "Wizard":
        self._read(text)
        return self

    def finish(self, choice: str = ENTER) -> int:
        """Answer the summary (default: write it) and wait for the end."""
        self.press("Write it?", choice)
        return self.end()

    def end(self) -> int:
        self.child.expect(pexpect.EOF)
        self.out += self.child.before
        self.child.close()
        self.text = ANSI.sub("", self.out).replace("\r", "")
        return self.child.exitstatus if self.child.exitstatus is not None else 128 + (self.child.signalstatus or 0)

    def config(self) -> dict:
        """config.yaml as written: the answers; derived values are comment lines."""
        return yaml.safe_load((self.target / "config.yaml").read_text())

    def resolved(self) -> Config:
        """config.yaml as every script reads it: derived values filled in."""
        return load_config(self.target / "config.yaml")

    def follows(self, key: str, shown: str) -> bool:
        """config.yaml shows ``key`` as a derived value, commented out."""
        return any(line.strip().startswith(f"# {key}: {shown}  (follows ")
                   for line in (self.target / "config.yaml").read_text().splitlines())


def everything(w: Wizard) -> Wizard:
    """First question: no preset, answer every question (the last choice)."""
    return w.press("What are you deploying?", UP + ENTER)


def wizard_validate(target: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wizard", "validate", str(target)], capture_output=True, text=True)


# --------------------------------------------------------------------------- Enter everywhere
def test_enter_at_every_question_gives_a_valid_deployment(tmp_path):
    w = Wizard(tmp_path, "first")
    for _ in range(40):  # Enter at whatever is asked, until the process ends
        try:
            w.child.expect(r"\?(\x1b\[[0-9;]*m)* ", timeout=5)
        except pexpect.EOF:
            break
        w.child.send(ENTER)
    w.child.expect(pexpect.EOF)
    w.child.close()
    assert w.child.exitstatus == 0
    cfg = w.config()
    assert cfg["application"]["name"] == "first"
    result = wizard_validate(w.target)
    assert result.returncode == 0, result.stdout + result.stderr


def test_enter_everywhere_without_a_preset_is_valid_too(tmp_path):
    w = everything(Wizard(tmp_path, "plain"))
    for q in ("What do you want to run?", "Python file to run", "Name", "How should it run?", "Arguments",
              "Requirements file", "GPUs per pod", "CPU cores", "Memory", "Does it serve HTTP requests",
              "Track runs", "Cluster profile", "Namespace"):
        w.press(q)
    assert w.finish() == 0
    cfg = w.config()
    assert cfg["application"]["type"] == "single_file" and "source" not in cfg["application"]
    assert cfg["application"]["execution"]["mode"] == "auto_start"
    assert cfg["resources"]["gpus"] == 0 and "cpu" not in cfg["resources"]
    storage = cfg["resources"]["storage"]
    assert (storage["size"], storage["access_mode"], storage["models"]["enabled"]) == ("50Gi", "ReadWriteOnce", False)
    assert w.follows("cpu", "'2'") and w.follows("memory", "16Gi") and w.follows("shm_size", "1Gi")
    res = w.resolved().resources
    assert (res.cpu, res.memory, res.shm_size) == ("2", "16Gi", "1Gi")
    assert w.resolved().application.source.path == "main.py"
    assert (w.target / "manifests" / "deployment.yaml").is_file()


# --------------------------------------------------------------------------- presets
def test_preset_vllm_server_on_8_gpus_defaults_tensor_parallel_and_memory(tmp_path):
    w = Wizard(tmp_path, "llama")
    w.press("What are you deploying?")  # vllm-server is first
    w.press("Name").type("GPUs per pod", "0")
    w.shows(model_message({"application": {"type": "model_server"}, "inference": {"enabled": True, "model": "m"},
                         "resources": {"gpus": 0}}))  # the preset's engine needs a GPU
    w.press("", CLEAR + "8" + ENTER).type("GPU model", "NVIDIA-A100-SXM4-80GB")
    w.type("Model", "meta-llama/Llama-3.1-70B-Instruct")
    w.press("Tensor parallel size")  # the default follows the GPUs: 8
    w.type("Secret with the API key", "llama-api-key").press("Namespace")
    w.see("8 GPUs (NVIDIA-A100-SXM4-80GB), 32 CPU, 256Gi memory, 64Gi shared memory")
    assert w.finish() == 0
    cfg = w.config()
    assert cfg["application"]["type"] == "model_server"
    assert cfg["inference"]["model"] == "meta-llama/Llama-3.1-70B-Instruct"
    assert "tensor_parallel_size" not in cfg["inference"] and w.follows("tensor_parallel_size", "8")
    assert cfg["inference"]["api_key_secret"] == "llama-api-key"
    assert w.resolved().inference.tensor_parallel_size == 8
    assert (w.resolved().resources.memory, w.resolved().resources.shm_size) == ("256Gi", "64Gi")
    assert (w.target / "manifests" / "route.yaml").is_file()
    assert "scripts/api-key.sh" in w.text and "--from-literal=api-key" not in w.text  # deploy makes the key Secret
    assert "--preset vllm-server" in w.text


def test_preset_transformers_server_runs_on_cpu(tmp_path):
    w = Wizard(tmp_path, "tiny", "--preset", "transformers-server")
    w.press("Name").type("GPUs per pod", "0").type("Model", "/workspace/models/tiny")
    w.press("Secret with the API key").press("Namespace")
    assert w.finish() == 0
    cfg = w.config()
    assert cfg["inference"]["engine"] == "transformers" and cfg["resources"]["gpus"] == 0
    assert w.resolved().inference.readiness_check == "/ready" and w.follows("readiness_check", "/ready")
    assert w.resolved().image.base.endswith("python:3.11-slim")
    assert (w.target / "manifests" / "service.yaml").is_file()


def test_preset_batch_inference_is_a_job(tmp_path):
    w = Wizard(tmp_path, "batch")
    w.press("What are you deploying?", DOWN + DOWN + ENTER)
    w.press("Name").press("GPUs per pod").press("GPU model").press("Model")
    w.type("Input", "/workspace/data/prompts.jsonl").press("Output file").press("Namespace")
    assert w.finish() == 0
    cfg = w.config()
    assert cfg["application"]["type"] == "batch_inference"
    assert cfg["application"]["execution"]["mode"] == "job"
    assert cfg["batch"]["input"] == "/workspace/data/prompts.jsonl"
    assert (w.target / "manifests" / "job.yaml").is_file()
    assert not (w.target / "manifests" / "deployment.yaml").exists()


def test_preset_sweep_asks_for_parameters(tmp_path):
    w = Wizard(tmp_path, "lr-sweep", "--preset", "sweep")
    w.press("Python file to run").press("Name").type("Arguments", "--epochs 5").press("GPUs per pod")
    w.type("W&B entity", "my-team").type("Parameters to sweep", "lr=0.0001,0.001 batch_size=16,32")
    w.press("Namespace")
    w.see("grid over lr=0.0001,0.001 batch_size=16,32 (4 combinations, 2 at once)")
    assert w.finish() == 0
    cfg = w.config()
    assert cfg["experiment"]["sweep"]["parameters"] == {"lr": [0.0001, 0.001], "batch_size": [16, 32]}
    assert cfg["experiment"]["tracking"] == {"enabled": True, "backend": "wandb",
                                             "entity": "my-team", "tags": [], "mode": "auto"}
    assert w.resolved().experiment.tracking.project == "lr-sweep" and w.follows("project", "lr-sweep")
    assert cfg["application"]["source"]["path"] == "train.py"
    assert "oc create secret generic wandb-api-key" in w.text


def test_preset_eval_job_is_a_directory_with_an_entry_point(tmp_path):
    (tmp_path / "evaluation_suite").mkdir()
    (tmp_path / "evaluation_suite" / "run_eval.py").write_text("print('eval')\n")
    w = Wizard(tmp_path, "model-eval", "--preset", "eval-job")
    w.press("Directory with your code").press("Entry point").press("Name").press("Arguments").press("GPUs per pod")
    w.press("Namespace")
    assert w.finish() == 0
    cfg = w.config()
    assert cfg["application"]["source"] == {"path": "evaluation_suite", "entry_point": "run_eval.py"}
    assert cfg["application"]["execution"]["arguments"] == "--model /workspace/models/my-model --benchmark all"
    assert (w.target / "workspace" / "run_eval.py").is_file()  # copied from where the wizard ran


def test_preset_notebook_is_a_manual_pod(tmp_path):
    w = Wizard(tmp_path, "analysis", "--preset", "notebook")
    w.press("Name").type("GPUs per pod", "2").press("GPU model").type("Namespace", "my-team")
    assert w.finish() == 0
    cfg = w.config()
    assert cfg["application"]["execution"]["mode"] == "manual"
    assert cfg["deployment"]["namespace"] == "my-team"
    assert w.resolved().resources.memory == "64Gi"
    assert (w.target / "scripts" / "jupyter.sh").is_file()


def test_unknown_preset_is_one_line_with_a_suggestion(tmp_path):
    for extra in ([], ["--defaults"]):
        r = subprocess.run([sys.executable, "-m", "wizard", "new", "x", "--preset", "vllm-sever",
                            "--deployments-dir", str(tmp_path), *extra], capture_output=True, text=True)
        assert r.returncode == 2
        assert r.stderr.strip().splitlines() == [
            "error: unknown preset 'vllm-sever' (did you mean 'vllm-server'?); presets: vllm-server, "
            "transformers-server, batch-inference, sweep, eval-job, notebook"]
    assert not (tmp_path / "x").exists()


def test_list_presets_and_preset_without_questions(tmp_path):
    r = subprocess.run([sys.executable, "-m", "wizard", "new", "--list-presets"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.split()[0] == "vllm-server" and "notebook" in r.stdout
    r = subprocess.run([sys.executable, "-m", "wizard", "new", "srv", "--preset", "vllm-server", "--set",
                        "resources.gpus=4", "--deployments-dir", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    config = load_config(tmp_path / "srv" / "config.yaml")
    assert config.inference.tensor_parallel_size == 4 and config.application.type == "model_server"


# --------------------------------------------------------------------------- execution modes
def test_mode_auto_start_recognises_a_vllm_command(tmp_path):
    w = everything(Wizard(tmp_path, "llama-inference"))
    w.press("What do you want to run?", DOWN + DOWN + ENTER)
    w.type("Command to run", "python -m vllm.entrypoints.openai.api_server --model meta-llama/Llama-3-70b-hf "
                             "--tensor-parallel-size 8")
    w.press("Name").press("How should it run?").press("Arguments").type("Requirements file", "requirements-inference.txt")
    w.type("GPUs per pod", "8").press("GPU model").press("CPU cores").type("Memory", "256GB")
    w.see("Does it serve HTTP requests").see("(Y/n)").press("", ENTER)  # yes by default: the command starts vLLM
    w.press("Port").press("Route").type("Replicas", "2").press("Scale replicas", "n")
    w.see("Workspace volume access").press("", ENTER)  # ReadWriteMany: two replicas share the volume
    w.press("Secret with the API key").press("Cluster profile").press("Namespace")
    assert w.finish() == 0
    cfg = w.config()
    assert cfg["application"]["source"]["command"].startswith("python -m vllm.entrypoints")
    assert cfg["inference"]["enabled"] is True and cfg["inference"]["replicas"] == 2
    assert cfg["resources"]["memory"] == "256G" and cfg["resources"]["storage"]["access_mode"] == "ReadWriteMany"
    assert "vllm" in w.resolved().image.base
    assert (w.target / "manifests" / "route.yaml").is_file()


def test_mode_job_multi_node_with_tracking(tmp_path):
    (tmp_path / "train.py").write_text("print('train')\n")
    w = everything(Wizard(tmp_path, "train"))
    w.press("What do you want to run?").type("Python file to run", "train.py").press("Name")
    w.press("How should it run?", DOWN + ENTER).type("Nodes", "2").type("Arguments", "--lr 0.01 --epochs 20")
    w.press("Requirements file").type("GPUs per pod", "4").press("GPU model").press("CPU cores").press("Memory")
    w.press("Track runs", "y").press("Tracking backend", DOWN + ENTER)  # mlflow
    w.press("Project").press("MLflow tracking URI")  # empty: the model says mlflow needs it
    w.shows(model_message({"experiment": {"tracking": {"enabled": True, "backend": "mlflow"}}}))
    w.press("", "http://mlflow.example.com" + ENTER)
    w.type("Tags", "baseline, lr").press("Sweep over parameters", "n").press("Evaluate each saved checkpoint", "n")
    w.press("Cluster profile")
    w.see("Workspace volume access").press("", ENTER)  # ReadWriteMany: both ranks use it at once
    w.press("Namespace")
    w.see("4 GPUs, 16 CPU, 128Gi memory, 32Gi shared memory x 2 nodes")
    assert w.finish() == 0
    cfg = w.config()
    assert cfg["deployment"] == {"cluster": "default", "mode": "multi-node", "num_nodes": 2}
    assert cfg["resources"]["storage"]["access_mode"] == "ReadWriteMany"
    assert cfg["application"]["execution"] == {"mode": "job", "arguments": "--lr 0.01 --epochs 20"}
    assert cfg["experiment"]["tracking"]["uri"] == "http://mlflow.example.com"
    assert cfg["experiment"]["tracking"]["tags"] == ["baseline", "lr"]
    assert (w.target / "manifests" / "job.yaml").is_file()
    assert (w.target / "manifests" / "service-headless.yaml").is_file()
    assert (w.target / "workspace" / "train.py").is_file()


def test_model_store_is_offered_where_the_profile_shares_volumes_across_nodes(tmp_path):
    w = everything(Wizard(tmp_path, "trainer"))
    w.press("What do you want to run?").type("Python file to run", "train.py").press("Name")
    w.press("How should it run?", DOWN + ENTER).press("Nodes").press("Arguments").press("Requirements file")
    w.press("GPUs per pod").press("CPU cores").press("Memory").press("Track runs", "n").press("Sweep over parameters", "n")
    w.press("Evaluate each saved checkpoint", "y").press("Prompts file in workspace/")  # the eval watcher, offered to a training job
    w.press("Cluster profile", DOWN + DOWN + ENTER)  # nerc-production: it names an rwx_storage_class
    w.press("Mount the namespace's shared model store", "y").type("Model store claim", "team-models").press("Namespace")
    assert w.finish() == 0
    assert w.config()["experiment"]["eval_watcher"]["enabled"] is True
    store = w.config()["resources"]["storage"]["models"]
    assert store["enabled"] is True and store["claim"] == "team-models"
    assert w.follows("access_mode", "ReadWriteMany")  # follows the profile
    assert "Models       store team-models (200Gi, ReadWriteMany in ocs-external-storagecluster-cephfs) at /models" in w.text
    claim = yaml.safe_load((w.target / "manifests" / "model-store.yaml").read_text())
    assert claim["metadata"]["name"] == "team-models" and claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_mode_manual_directory(tmp_path):
    w = everything(Wizard(tmp_path, "data-analysis"))
    w.press("What do you want to run?", DOWN + ENTER).type("Directory with your code", "analysis")
    w.type("Entry point", "analyze_dataset.py").press("Name").press("How should it run?", UP + ENTER)
    w.press("Arguments").press("Requirements file").type("GPUs per pod", "1").press("GPU model")
    w.press("CPU cores").press("Memory").press("Track runs").press("Cluster profile", DOWN + ENTER).press("Namespace")
    assert w.finish() == 0
    cfg = w.config()
    assert cfg["application"]["execution"]["mode"] == "manual"
    assert cfg["deployment"]["cluster"] == "barcelona"
    assert cfg["inference"]["enabled"] is False
    assert (w.target / "manifests" / "deployment.yaml").is_file()


# --------------------------------------------------------------------------- validation as typed
def test_invalid_answers_are_rejected_with_the_models_message_and_asked_again(tmp_path):
    w = everything(Wizard(tmp_path, "checked"))
    w.press("What do you want to run?").press("Python file to run")
    w.type("Name", "My App")
    w.shows(model_message({"application": {"name": "My App"}}))
    w.press("", CLEAR + "my-app" + ENTER)
    w.press("How should it run?").press("Arguments", CLEAR + "--text 'unclosed" + ENTER)
    w.shows(model_message({"application": {"execution": {"arguments": "--text 'unclosed"}}}))
    w.press("", CLEAR + ENTER).press("Requirements file")
    w.type("GPUs per pod", "two").shows(model_message({"resources": {"gpus": "two"}}))
    w.press("", CLEAR + "99" + ENTER).shows(model_message({"resources": {"gpus": 99}}))
    w.press("", CLEAR + "1" + ENTER).press("GPU model").press("CPU cores")
    w.type("Memory", "2Gi").shows(model_message({"resources": {"gpus": 1, "memory": "2Gi"}}))
    w.press("", CLEAR + "12Gi" + ENTER)
    w.press("Does it serve").press("Track runs").press("Cluster profile").press("Namespace", CLEAR + "Not_OK" + ENTER)
    w.shows(model_message({"deployment": {"namespace": "Not_OK"}}))
    w.press("", CLEAR + ENTER)
    assert w.finish() == 0
    cfg = w.config()
    assert cfg["application"]["name"] == "my-app" and cfg["resources"]["gpus"] == 1
    assert cfg["resources"]["memory"] == "12Gi"


def test_choices_the_model_refuses_are_shown_disabled_with_its_message(tmp_path):
    w = everything(Wizard(tmp_path, "srv"))
    w.press("What do you want to run?", DOWN * 3 + ENTER)  # the included model server
    w.press("Name").see("How should it run?")
    w.shows(model_message({"application": {"type": "model_server", "execution": {"mode": "job"}},
                         "inference": {"enabled": True, "model": "m"}, "resources": {"gpus": 1}}))
    w.press("", ENTER).type("GPUs per pod", "0").press("CPU cores").press("Memory")
    w.see("Engine").shows(model_message({"application": {"type": "model_server"}, "inference": {"enabled": True, "model": "m"},
                                       "resources": {"gpus": 0}}))
    w.press("", ENTER)  # the only choice left: transformers
    w.press("Model", ENTER).shows(model_message({"application": {"type": "model_server"}, "inference": {"enabled": True}}))
    w.press("", "/workspace/models/mine" + ENTER)
    w.press("Port").press("Route").press("Replicas").press("Scale replicas").press("Secret")
    w.press("Cluster profile").press("Namespace")
    assert w.finish() == 0
    cfg = w.config()
    assert cfg["inference"]["engine"] == "transformers" and cfg["inference"]["model"] == "/workspace/models/mine"


# --------------------------------------------------------------------------- summary, going back, the command
def test_change_an_answer_from_the_summary(tmp_path):
    w = Wizard(tmp_path, "notes", "--preset", "notebook")
    w.press("Name").type("GPUs per pod", "1").press("GPU model").press("Namespace")
    w.see("1 GPU, 4 CPU, 32Gi memory").press("Write it?", DOWN + ENTER)
    w.press("Which answer do you want to change?", DOWN * 6 + ENTER)  # Resources: GPUs per pod
    w.at("GPUs per pod").send(CLEAR + "4" + ENTER).press("GPU model").press("CPU cores").press("Memory")
    w.press("Track runs").press("Cluster profile").press("Namespace")
    w.see("4 GPUs, 16 CPU, 128Gi memory")
    assert w.finish() == 0
    assert w.config()["resources"]["gpus"] == 4


def test_the_printed_command_gives_the_same_config_without_questions(tmp_path):
    w = Wizard(tmp_path, "sweepy", "--preset", "sweep")
    w.press("Python file to run").press("Name").type("Arguments", "--epochs 3 --note 'a b'").type("GPUs per pod", "2")
    w.press("W&B entity").type("Parameters to sweep", "lr=0.1,0.01 opt=adam,sgd").type("Namespace", "team-a")
    assert w.finish() == 0
    line = w.text.split("The same answers without questions:\n", 1)[1].splitlines()[0].strip()
    words = shlex.split(line)
    assert words[:4] == ["python", "-m", "wizard", "new"] and "--preset" in words
    other = tmp_path / "other"
    if "--deployments-dir" in words:
        words[words.index("--deployments-dir") + 1] = str(other)
    else:  # the default (deployments/ under the current folder) is left out
        words += ["--deployments-dir", str(other)]
    r = subprocess.run([sys.executable, *words[1:]], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (other / "sweepy" / "config.yaml").read_text() == (w.target / "config.yaml").read_text()


def test_cancel_at_the_summary_writes_nothing(tmp_path):
    w = Wizard(tmp_path, "nope", "--preset", "notebook")
    w.press("Name").press("GPUs per pod").press("GPU model").press("Namespace")
    assert w.finish(UP + ENTER) == 1
    assert "Nothing written." in w.text
    assert not w.dir.exists() or not any(w.dir.iterdir())


# --------------------------------------------------------------------------- re-runs, Ctrl-C, no terminal
def _existing(tmp_path: Path, name: str) -> Path:
    """A deployment made earlier with the defaults (what ``new NAME --defaults`` writes)."""
    from wizard.deployment import build_config, create_or_update

    config = build_config({"application": {"name": name}}, source="answers")
    return create_or_update(name, tmp_path / "deployments", config=config).target


def test_rerun_starts_from_the_answers_and_keeps_an_edited_manifest(tmp_path):
    target = _existing(tmp_path, "app")
    manifest = target / "manifests" / "deployment.yaml"
    edited = manifest.read_text() + "# my change\n"
    manifest.write_text(edited)
    w = Wizard(tmp_path, "app")
    w.see("Updating")
    w.press("What do you want to run?").press("Python file to run").press("Name").press("How should it run?")
    w.press("Arguments").press("Requirements file").type("GPUs per pod", "2").press("GPU model")
    w.press("CPU cores").press("Memory")  # their defaults follow the new GPU count
    w.press("Does it serve").press("Track runs").press("Cluster profile").press("Namespace")
    w.see("2 GPUs, 8 CPU, 64Gi memory").see("resources.gpus: 0 -> 2").see("you changed manifests/deployment.yaml")
    assert w.finish() == 0
    assert manifest.read_text() == edited
    assert "nvidia.com/gpu" in (target / "manifests" / "deployment.yaml.new").read_text()
    cfg = w.config()
    assert cfg["resources"]["gpus"] == 2 and "memory" not in cfg["resources"]  # it still follows the GPUs
    assert w.resolved().resources.memory == "64Gi"
    assert "Kept 1 file(s) you edited" in w.text


def test_rerun_with_enter_everywhere_changes_nothing(tmp_path):
    target = _existing(tmp_path, "same")
    before = {p: p.read_bytes() for p in target.rglob("*") if p.is_file()}
    w = Wizard(tmp_path, "same")
    for q in ("What do you want to run?", "Python file to run", "Name", "How should it run?", "Arguments",
              "Requirements file", "GPUs per pod", "CPU cores", "Memory", "Does it serve", "Track runs",
              "Cluster profile", "Namespace"):
        w.press(q)
    w.see("Answers      unchanged").see("0 to write")
    assert w.finish() == 0
    assert "the comments you added" not in w.text  # the derived values' comment lines are the wizard's own
    after = {p: p.read_bytes() for p in target.rglob("*") if p.is_file() and p.name != "state.json"}
    assert after == {p: b for p, b in before.items() if p.name != "state.json"}


def test_rerun_on_a_file_that_spells_derived_values_out_keeps_them(tmp_path):
    """A config.yaml written before derived values became comments: each value in it is chosen."""
    from wizard.loader import dump_config

    target = _existing(tmp_path, "old")
    path = target / "config.yaml"
    path.write_text(dump_config(load_config(path), schema_ref="config.schema.json"))
    w = Wizard(tmp_path, "old")
    w.press("What do you want to run?").press("Python file to run").press("Name").press("How should it run?")
    w.press("Arguments").press("Requirements file").type("GPUs per pod", "2").press("GPU model")
    w.press("CPU cores").press("Memory")  # Enter keeps the values the file gives
    w.press("Does it serve").press("Track runs").press("Cluster profile").press("Namespace")
    w.see("2 GPUs, 2 CPU, 16Gi memory, 1Gi shared memory")
    assert w.finish() == 0
    assert w.config()["resources"]["cpu"] == "2" and w.config()["resources"]["memory"] == "16Gi"


def test_ctrl_c_mid_dialogue_writes_nothing(tmp_path):
    w = Wizard(tmp_path, "gone", "--preset", "vllm-server")
    w.press("Name").press("GPUs per pod", "4" + CTRL_C)
    assert w.end() == 130
    assert "interrupted" in w.text
    assert not (w.dir / "gone").exists()
    assert not w.dir.exists() or not any(w.dir.iterdir())  # no staging folder left either


def test_ctrl_c_at_the_summary_of_a_rerun_leaves_files_as_they_were(tmp_path):
    target = _existing(tmp_path, "keep")
    before = {p: p.read_bytes() for p in target.rglob("*") if p.is_file()}
    w = Wizard(tmp_path, "keep")
    w.press("What do you want to run?").press("Python file to run").press("Name").press("How should it run?")
    w.press("Arguments").press("Requirements file").type("GPUs per pod", "1")
    for q in ("GPU model", "CPU cores", "Memory", "Does it serve", "Track runs", "Cluster profile", "Namespace"):
        w.press(q)
    w.press("Write it?", CTRL_C)
    assert w.end() == 130
    assert {p: p.read_bytes() for p in target.rglob("*") if p.is_file()} == before


def test_without_a_terminal_it_points_to_answers_and_defaults(tmp_path):
    r = subprocess.run([sys.executable, "-m", "wizard", "new", "ci", "--deployments-dir", str(tmp_path)],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "--answers" in r.stderr and "--defaults" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "ci").exists()


def test_ctrl_d_at_a_question_leaves_like_ctrl_c(tmp_path):
    w = Wizard(tmp_path, "eof", "--preset", "notebook")
    w.press("Name", CLEAR + "\x04")
    assert w.end() == 130
    assert "Traceback" not in w.text
    assert not w.dir.exists() or not any(w.dir.iterdir())
