"""The namespace's model store (resources.storage.models) and the eval watcher (experiment.eval_watcher):
what they render, how deploy, submit, status and delete treat them against the recording oc, and
the rules that refuse them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from fake_oc.harness import Cluster  # noqa: E402

from wizard.blueprint import Blueprint  # noqa: E402
from wizard.loader import validate  # noqa: E402
from wizard.render import read_trial_file, render_files  # noqa: E402
from wizard.summary import summary_lines  # noqa: E402
from wizard.validate import check_manifest_text  # noqa: E402

STORE = "resources.storage.models.enabled=true"
EVAL = "experiment.eval_watcher.enabled=true"
PROMPTS = '{"id": "p1", "prompt": "The capital of France is"}\n'


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    return Cluster(tmp_path, monkeypatch)


def manifest(dep: Path, name: str) -> dict:
    return yaml.safe_load((dep / "manifests" / f"{name}.yaml").read_text())


def pod(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container["env"]}


def config(**sections) -> object:
    data = {"application": {"name": "train", "execution": {"mode": "job"}}}
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return validate(data, source="test")


def store_calls(cluster: Cluster) -> list[list[str]]:
    """oc's calls that touch the model store: the lookup and the create."""
    return [a for a in cluster.argvs()
            if "mlshift-models" in a or any(str(f).endswith("model-store.yaml") for f in a)]


# --------------------------------------------------------------------------- shared by a training and a serving deployment
def test_a_training_and_a_serving_deployment_share_one_store(cluster, capsys):
    train = cluster.job("train", STORE, EVAL)
    (train / "workspace" / "eval-prompts.jsonl").write_text(PROMPTS)
    llm = cluster.server("llm", STORE, "inference.route.enabled=false")

    # Both render the same claim, mounted at the same place; each keeps its models in its own folder.
    for dep, root in ((train, "/models/train"), (llm, "/models/llm")):
        claim = manifest(dep, "model-store")
        assert claim["kind"] == "PersistentVolumeClaim" and claim["metadata"]["name"] == "mlshift-models"
        assert claim["metadata"]["labels"]["app.kubernetes.io/part-of"] == "mlshift"
        assert claim["metadata"]["labels"]["app.kubernetes.io/component"] == "model-store"
        assert "app.kubernetes.io/instance" not in claim["metadata"]["labels"]  # no application's objects select it
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"] and claim["spec"]["resources"]["requests"]["storage"] == "200Gi"
        kustomization = (dep / "manifests" / "kustomization.yaml").read_text()
        assert "model-store.yaml" not in yaml.safe_load(kustomization)["resources"]
        assert "model-store.yaml (the namespace's model store, shared" in kustomization
        spec = pod(manifest(dep, "job" if dep == train else "deployment"))
        assert {"name": "models", "persistentVolumeClaim": {"claimName": "mlshift-models"}} in spec["volumes"]
        (container,) = spec["containers"]
        assert {"name": "models", "mountPath": "/models"} in container["volumeMounts"]
        env = env_of(container)
        assert env["MLSHIFT_MODELS_ROOT"]["value"] == root
        assert env["HF_HOME"]["value"] == "/models/.cache/huggingface"  # a model is downloaded once per namespace
        assert "HF_HUB_OFFLINE" not in env
        for name in ("model-store", "eval-watcher" if dep == train else "deployment"):
            assert check_manifest_text((dep / "manifests" / f"{name}.yaml").read_text()) == [], name

    # The first deploy creates the store, before anything that mounts it.
    rc, out, err = cluster.verb(capsys, "deploy", train, "--build=never")
    assert rc == 0, err
    argvs = cluster.argvs()
    lookup = ["get", "--namespace=team-a", "persistentvolumeclaim", "mlshift-models", "-o", "json", "--ignore-not-found"]
    create = [i for i, a in enumerate(argvs) if a[0] == "create" and a[-1].endswith("manifests/model-store.yaml")]
    assert lookup in argvs and len(create) == 1 and argvs.index(lookup) < create[0]
    eval_apply = [i for i, c in enumerate(cluster.calls()) if c["argv"][0] == "apply"
                  and any(f.endswith("eval-watcher.yaml") for f in c["files"])]
    assert eval_apply and create[0] < eval_apply[0]
    assert "Model store mlshift-models: created (200Gi, ReadWriteOnce)" in out
    assert "The eval watcher train-eval evaluates each model the runs save in /models/train" in out
    assert "starts on the node of the first job" in out  # the workspace and the store are ReadWriteOnce

    # The second deployment uses it as it is: nothing created, the size and mode it has are said.
    cluster.reset()
    rc, out, err = cluster.verb(capsys, "deploy", llm, "--build=never", "--no-wait")
    assert rc == 0, err
    assert not [a for a in store_calls(cluster) if a[0] == "create"]
    assert "Model store mlshift-models: exists (50Gi, ReadWriteOnce); used as it is" in out  # (the fake's capacity)

    rc, out, err = cluster.verb(capsys, "status", llm)
    assert rc == 0, err
    assert "Model store mlshift-models: Bound 50Gi, ReadWriteOnce; shared, this application's models in /models/llm" in out

    # delete, even with --volumes, leaves it (and says so); the application's own volume goes.
    for dep in (train, llm):
        cluster.reset()
        rc, out, err = cluster.verb(capsys, "delete", dep, "--volumes", "--yes")
        assert rc == 0, err
        assert "The model store mlshift-models is kept, with --volumes too" in out
        deleted = [a for a in cluster.argvs() if a[0] == "delete"]
        assert not any(f.endswith("model-store.yaml") for a in deleted for f in a)
    state = json.loads((cluster.log / "state.json").read_text())["objects"]
    assert "PersistentVolumeClaim/mlshift-models" in state
    assert "PersistentVolumeClaim/train-workspace" not in state and "Deployment/train-eval" not in state


def test_deploy_of_a_store_made_meanwhile_or_not_made_as_one(cluster, capsys):
    dep = cluster.server("llm", STORE, "inference.route.enabled=false", "resources.storage.models.claim=team-models")
    other = cluster.new("other", "deployment.namespace=team-a", "resources.storage.access_mode=ReadWriteOnce")
    (other / "manifests" / "persistentvolumeclaim.yaml").write_text(
        (other / "manifests" / "persistentvolumeclaim.yaml").read_text().replace("other-workspace", "team-models"))
    cluster.seed(other)  # a claim of that name exists, made for something else
    rc, out, err = cluster.verb(capsys, "deploy", dep, "--build=never", "--no-wait")
    assert rc == 0, err
    assert "Model store team-models: exists" in out
    assert "note: team-models was not created as a model store" in err


def test_dry_run_shows_the_lookup_and_the_create_only_when_missing(cluster, capsys):
    dep = cluster.server("llm", STORE, "inference.route.enabled=false")
    rc, out, err = cluster.verb(capsys, "deploy", dep, "--dry-run", "--build=never")
    assert rc == 0, err
    assert "oc get --namespace=team-a persistentvolumeclaim mlshift-models -o json --ignore-not-found" in out
    assert "# only when the model store mlshift-models is missing:" in out
    assert "oc create --namespace=team-a -f " in out and "model-store.yaml" in out
    assert cluster.calls() == []


# --------------------------------------------------------------------------- runs save under the models root
def test_each_run_gets_its_model_folder_after_its_run_id(cluster, capsys):
    dep = cluster.job("train", STORE)
    cluster.seed(dep, "model-store")
    rc, out, err = cluster.verb(capsys, "submit", dep)
    assert rc == 0, err
    (job,) = [o for o in cluster.created() if o["kind"] == "Job"]
    env = pod(job)["containers"][0]["env"]
    names = [e["name"] for e in env]
    assert names.index("MLSHIFT_RUN") < names.index("MLSHIFT_MODEL_DIR")  # so that Kubernetes expands $(MLSHIFT_RUN)
    assert env_of(pod(job)["containers"][0])["MLSHIFT_MODEL_DIR"]["value"] == "/models/train/$(MLSHIFT_RUN)"
    assert check_manifest_text(yaml.safe_dump(job)) == []


def test_a_sweeps_trials_each_get_their_own_model_folder(cluster, capsys):
    dep = cluster.job("train", STORE)
    cfg = yaml.safe_load((dep / "config.yaml").read_text())
    cfg["experiment"]["sweep"] = {"parameters": {"lr": [0.1, 0.01]}}
    (dep / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    cluster.seed(dep, "model-store")
    rc, out, err = cluster.verb(capsys, "sweep", dep)
    assert rc == 0, err
    (job,) = [o for o in cluster.created() if o["kind"] == "Job"]
    assert "MLSHIFT_MODEL_DIR" not in env_of(pod(job)["containers"][0])  # per trial, in its file
    (table,) = [o for o in cluster.created() if o["kind"] == "ConfigMap"]
    sweep = job["metadata"]["labels"]["mlshift.io/sweep"]
    for index, text in table["data"].items():
        _, variables = read_trial_file(text)
        run = f"{sweep}-{int(index):03d}"
        assert variables["MLSHIFT_RUN"] == run and variables["MLSHIFT_MODEL_DIR"] == f"/models/train/{run}"


def test_without_the_store_models_go_to_the_workspace(cluster, capsys):
    dep = cluster.job("train")
    assert not (dep / "manifests" / "model-store.yaml").exists()
    (container,) = pod(manifest(dep, "job"))["containers"]
    env = env_of(container)
    assert env["MLSHIFT_MODELS_ROOT"]["value"] == "/workspace/train/models"
    assert env["MLSHIFT_MODEL_DIR"]["value"] == "/workspace/train/models/$(MLSHIFT_RUN)"
    assert env["HF_HOME"]["value"] == "/workspace/.cache/huggingface"
    assert not any(m["name"] == "models" for m in container["volumeMounts"])


def test_submit_before_the_store_exists_says_deploy_first(cluster, capsys):
    dep = cluster.job("train", STORE)
    cluster.seed(dep)  # the application's objects, not the store (config.yaml turned it on since)
    rc, out, err = cluster.verb(capsys, "submit", dep)
    assert rc == 2
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert "the model store mlshift-models does not exist in team-a" in line and "deploy.sh" in line
    assert "create" not in cluster.verbs()


# --------------------------------------------------------------------------- access mode: derived, refused
def test_access_mode_follows_the_cluster_profile():
    plain = config(resources={"storage": {"models": {"enabled": True}}})
    assert (plain.resources.storage.models.access_mode, plain.resources.storage.models.storage_class) == ("ReadWriteOnce", None)
    nerc = config(deployment={"cluster": "nerc-production"}, resources={"storage": {"models": {"enabled": True}}})
    store = nerc.resources.storage.models
    assert (store.access_mode, store.storage_class) == ("ReadWriteMany", "ocs-external-storagecluster-cephfs")
    assert {"resources.storage.models.access_mode", "resources.storage.models.storage_class"} <= nerc.derived_paths
    # the store is shared by the namespace even when this deployment runs one pod: the workspace stays ReadWriteOnce
    assert nerc.resources.storage.access_mode == "ReadWriteOnce"
    claim = yaml.safe_load(render_files(nerc, "train")["manifests/model-store.yaml"][0])
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"]["storageClassName"] == "ocs-external-storagecluster-cephfs"
    chosen = config(deployment={"cluster": "nerc-production"},
                    resources={"storage": {"models": {"enabled": True, "storage_class": "fast-block"}}})
    assert (chosen.resources.storage.models.access_mode, chosen.resources.storage.models.storage_class) == ("ReadWriteOnce", "fast-block")
    # off, it still follows the profile (turned on later, it is what the profile makes it), and renders nothing
    off = config(deployment={"cluster": "nerc-production"})
    assert off.resources.storage.models.access_mode == "ReadWriteMany"
    assert "resources.storage.models.access_mode" in off.derived_paths
    assert not any("model-store" in rel for rel in render_files(off, "train"))


def new(cluster: Cluster, capsys, name: str, *sets: str) -> tuple[int, str, str]:
    from wizard.cli import main

    capsys.readouterr()
    rc = main(["new", name, "--defaults", "--deployments-dir", str(cluster.deployments),
               *[a for s in sets for a in ("--set", s)]])
    out, err = capsys.readouterr()
    return rc, out, err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip() and not line.startswith("  ")]


@pytest.mark.parametrize("sets, key, words", [
    # pods of this deployment on several nodes cannot share a ReadWriteOnce store
    (("application.execution.mode=job", "experiment.sweep={parameters: {lr: [0.1, 0.01]}}", "experiment.parallelism=2",
      "resources.storage.access_mode=ReadWriteMany"), "resources.storage.models.access_mode", "2 sweep runs at once"),
    (("application.type=model_server", "inference.enabled=true", "inference.model=m", "inference.engine=transformers",
      "inference.route.enabled=false", "inference.replicas=2",
      "resources.storage.access_mode=ReadWriteMany"), "resources.storage.models.access_mode", "2 replicas on several nodes"),
    (("resources.storage.models.mount=/workspace/models",), "resources.storage.models.mount", "overlaps /workspace"),
    (("resources.storage.models.mount=models",), "resources.storage.models.mount", "not an absolute path"),
    (("resources.storage.models.mount=/usr",), "resources.storage.models.mount", "system folder"),
    (("resources.storage.models.claim=Models_1",), "resources.storage.models.claim", "not a valid claim name"),
])
def test_store_refusals_are_one_line_and_write_nothing(cluster, capsys, sets, key, words):
    rc, out, err = new(cluster, capsys, "bad", STORE, *sets)
    assert rc == 2, err
    lines = error_lines(err)
    assert len(lines) == 1 and key in lines[0] and words in lines[0], err
    assert "Traceback" not in err and not (cluster.deployments / "bad").exists()


# --------------------------------------------------------------------------- the eval watcher
def test_eval_watcher_manifest_command_and_restricted_pod():
    cfg = config(resources={"storage": {"models": {"enabled": True}}},
                 experiment={"eval_watcher": {"enabled": True, "every": 30, "max_tokens": 16, "prompts": "eval/prompts.jsonl"}})
    bp = Blueprint(cfg, "train")
    assert bp.models_root == "/models/train"
    assert bp.eval_command == ["python3", "-m", "runtime", "watch", "--checkpoints", "/models/train",
                               "--prompts", "/workspace/train/eval/prompts.jsonl", "--every", "30", "--max-tokens", "16",
                               "--output", "/workspace/train/results"]
    files = render_files(cfg, "train")
    text = files["manifests/eval-watcher.yaml"][0]
    assert check_manifest_text(text) == []
    obj = yaml.safe_load(text)
    assert obj["kind"] == "Deployment" and obj["metadata"]["name"] == "train-eval"
    assert obj["spec"]["replicas"] == 1 and obj["spec"]["strategy"] == {"type": "Recreate"}
    assert obj["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/instance": "train", "app.kubernetes.io/component": "eval"}
    assert "eval-watcher.yaml" in yaml.safe_load(files["manifests/kustomization.yaml"][0])["resources"]
    spec = pod(obj)
    assert spec["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False
    (c,) = spec["containers"]
    assert c["command"] == bp.eval_command and c["image"] == "train:latest"
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsNonRoot"] is True
    assert c["resources"]["limits"] == {"cpu": "2", "memory": "8Gi"}
    env = env_of(c)
    assert env["MLSHIFT_MODELS_ROOT"]["value"] == "/models/train" and env["PYTHONPATH"]["value"] == "/opt/mlshift"
    assert not {"MLSHIFT_RUN", "MLSHIFT_MODEL_DIR", "WANDB_API_KEY"} & set(env)  # it is no run
    assert "secretKeyRef" in env["HF_TOKEN"]["valueFrom"]
    assert {m["mountPath"] for m in c["volumeMounts"]} == {"/workspace", "/models", "/tmp"}
    # ReadWriteOnce workspace and store: it must run where the training pods run
    term = spec["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert term == {"labelSelector": {"matchLabels": {"app.kubernetes.io/instance": "train", "app.kubernetes.io/component": "job"}},
                    "topologyKey": "kubernetes.io/hostname"}
    # and the jobs prefer its node, where the volume is attached while it runs
    job = yaml.safe_load(files["manifests/job.yaml"][0])
    pref = pod(job)["affinity"]["podAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert pref["podAffinityTerm"]["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "eval"
    assert check_manifest_text(files["manifests/job.yaml"][0]) == []
    # the image has what the watcher runs
    containerfile = files["Containerfile"][0]
    assert 'import torch" 2>/dev/null || python3 -m pip install --quiet torch' in containerfile


def test_eval_watcher_on_shared_volumes_goes_anywhere_and_on_gpus_asks_for_them():
    cfg = config(deployment={"cluster": "nerc-production"},
                 resources={"storage": {"access_mode": "ReadWriteMany", "models": {"enabled": True}}},
                 experiment={"eval_watcher": {"enabled": True, "gpus": 1}})
    files = render_files(cfg, "train")
    obj = yaml.safe_load(files["manifests/eval-watcher.yaml"][0])
    spec = pod(obj)
    assert "affinity" not in spec and "affinity" not in pod(yaml.safe_load(files["manifests/job.yaml"][0]))
    (c,) = spec["containers"]
    assert c["resources"]["limits"] == {"cpu": "4", "memory": "32Gi", "nvidia.com/gpu": 1}
    assert {t["key"] for t in spec["tolerations"]} == {"nvidia.com/gpu", "nvidia.com/gpu.product"}
    assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]
    assert check_manifest_text(files["manifests/eval-watcher.yaml"][0]) == []


def test_the_watchers_pod_is_the_jobs_pod_with_its_own_container_and_placement():
    """eval-watcher.yaml renders the shared pod (_pod.yaml.j2): the jobs' restricted-v2 pod, pull
    secret and volumes, with its own container (Blueprint.eval_container), no config.yaml, and its
    own GPUs and placement (Blueprint.eval_placement), whatever the application's are."""
    def pods(**watcher):
        cfg = config(resources={"gpus": 2, "gpu_product": "NVIDIA-A100-SXM4-80GB", "shm_size": "4Gi",
                                "storage": {"models": {"enabled": True}}},
                     image={"pull_secret": "regcred"}, application={"runtime": {"working_dir": "/opt/app"}},
                     experiment={"eval_watcher": {"enabled": True, **watcher}})
        files = render_files(cfg, "train")
        assert check_manifest_text(files["manifests/eval-watcher.yaml"][0]) == []
        return tuple(pod(yaml.safe_load(files[f"manifests/{n}.yaml"][0])) for n in ("job", "eval-watcher"))

    job, watcher = pods()
    for key in ("securityContext", "imagePullSecrets", "enableServiceLinks", "automountServiceAccountToken"):
        assert watcher[key] == job[key]
    assert watcher["imagePullSecrets"] == [{"name": "regcred"}] and watcher["terminationGracePeriodSeconds"] == 30
    (app,), (watch,) = job["containers"], watcher["containers"]
    assert watch["securityContext"] == app["securityContext"] and watch["image"] == app["image"]
    assert (watch["name"], watch["workingDir"], app["workingDir"]) == ("watch", "/workspace/train", "/opt/app")
    assert not {"ports", "lifecycle", "startupProbe", "readinessProbe", "livenessProbe"} & set(watch)
    # the application's GPUs are its own: the watcher asks for none, and goes to no GPU node
    assert [v["name"] for v in job["volumes"]] == ["workspace", "models", "config", "tmp", "dshm"]
    assert job["volumes"][-1]["emptyDir"]["sizeLimit"] == "4Gi" and job["nodeSelector"] and job["tolerations"]
    assert [v["name"] for v in watcher["volumes"]] == ["workspace", "models", "tmp"]
    assert [m["name"] for m in watch["volumeMounts"]] == ["workspace", "models", "tmp"]
    assert not {"tolerations", "nodeSelector"} & set(watcher)
    # and its own GPU: /dev/shm of its own size, the GPU nodes
    job, watcher = pods(gpus=1)
    assert [v["name"] for v in watcher["volumes"]] == ["workspace", "models", "tmp", "dshm"]
    assert watcher["volumes"][-1]["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}
    assert watcher["nodeSelector"] == job["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert watcher["tolerations"] == job["tolerations"]
    assert watcher["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_summary_says_what_runs_on_one_node(tmp_path):
    cfg = config(resources={"storage": {"models": {"enabled": True}}}, experiment={"eval_watcher": {"enabled": True}})
    text = "\n".join(summary_lines(cfg, "train", tmp_path / "train", force=False, old=None))
    assert "Models       store mlshift-models (200Gi, ReadWriteOnce) at /models" in text
    assert "the model store is ReadWriteOnce: every pod that mounts it, of every deployment naming it, must run on one node" in text
    assert "Eval         train-eval evaluates each model saved in /models/train on workspace/eval-prompts.jsonl every 60s" in text
    assert "it runs on the training pods' node (the workspace and model store is ReadWriteOnce)" in text
    shared = config(deployment={"cluster": "nerc-production"},
                    resources={"storage": {"access_mode": "ReadWriteMany", "models": {"enabled": True}}},
                    experiment={"eval_watcher": {"enabled": True}})
    text = "\n".join(summary_lines(shared, "train", tmp_path / "train", force=False, old=None))
    assert "ReadWriteMany in ocs-external-storagecluster-cephfs" in text
    assert "must run on one node" not in text and "training pods' node" not in text


@pytest.mark.parametrize("sets, key, words", [
    (("application.type=model_server", "inference.enabled=true", "inference.model=m", "inference.engine=transformers",
      "inference.route.enabled=false"), "experiment.eval_watcher.enabled", "needs execution.mode: job"),
    (("application.execution.mode=manual",), "experiment.eval_watcher.enabled", "not single_file in mode manual"),
    (("application.type=batch_inference", "application.execution.mode=job", "inference.model=m", "inference.engine=transformers"),
     "experiment.eval_watcher.enabled", "not batch_inference"),
    (("application.execution.mode=job", "image.build=false"), "image.build", "the eval watcher runs the included runtime"),
    (("application.execution.mode=job", "experiment.eval_watcher.prompts=../prompts.jsonl"),
     "experiment.eval_watcher.prompts", "not a file in workspace/"),
    (("application.execution.mode=job", "experiment.eval_watcher.memory=512Mi"), "experiment.eval_watcher.memory", "at least 1Gi"),
])
def test_eval_watcher_refusals_are_one_line(cluster, capsys, sets, key, words):
    rc, out, err = new(cluster, capsys, "bad", EVAL, *sets)
    assert rc == 2, err
    lines = error_lines(err)
    assert len(lines) == 1 and key in lines[0] and words in lines[0], err
    assert not (cluster.deployments / "bad").exists()


def test_deploy_without_the_prompts_file_is_one_line_and_touches_nothing(cluster, capsys):
    dep = cluster.job("train", EVAL)
    rc, out, err = cluster.verb(capsys, "deploy", dep, "--build=never")
    assert rc == 2
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert "experiment.eval_watcher.prompts names workspace/eval-prompts.jsonl, which does not exist" in line
    assert cluster.calls() == []


@pytest.mark.parametrize("text, where", [
    (PROMPTS + "{oops\n", "prompts.jsonl line 2: not JSON"),  # a malformed line
    ("", "prompts.jsonl: no prompts in it"),  # an empty file
    ("\n" + PROMPTS + '{"id": "p2"}\n', "prompts.jsonl line 3: needs exactly one of 'prompt' (text) or 'messages'"),
])
def test_deploy_refuses_prompts_the_watcher_would_stop_on_with_its_own_line(cluster, capsys, tmp_path, text, where):
    import subprocess

    dep = cluster.job("train", EVAL, "experiment.eval_watcher.prompts=eval/prompts.jsonl")
    (dep / "workspace" / "eval").mkdir()
    prompts = dep / "workspace" / "eval" / "prompts.jsonl"
    prompts.write_text(text)
    rc, out, err = cluster.verb(capsys, "deploy", dep, "--build=never")
    assert rc == 2, err
    (line,) = error_lines(err)
    assert line.startswith("error: experiment.eval_watcher.prompts names workspace/eval/prompts.jsonl, which the eval "
                           "watcher cannot read: ") and where in line, line
    assert cluster.calls() == []  # nothing asked of the cluster, nothing changed
    # the very line the watcher stops on with this file (its pod would restart on it, again and again)
    (tmp_path / "models").mkdir()
    watcher = subprocess.run([sys.executable, "-m", "runtime", "watch", "--checkpoints", str(tmp_path / "models"),
                              "--prompts", str(prompts), "--once"], capture_output=True, text=True, timeout=120)
    assert watcher.returncode == 2 and watcher.stderr.count("\n") == 1, watcher.stderr
    assert watcher.stderr.startswith("error: ") and watcher.stderr.strip()[len("error: "):] in line
    # mended, the same deploy goes on
    prompts.write_text(PROMPTS)
    rc, out, err = cluster.verb(capsys, "deploy", dep, "--build=never")
    assert rc == 0, err


def test_a_custom_command_trainer_gets_its_prompts_uploaded(cluster, capsys):
    dep = cluster.new("cc", "deployment.namespace=team-a", "application.type=custom_command",
                      "application.source.command=python -m trainer", "application.execution.mode=job", EVAL)
    (dep / "workspace" / "eval-prompts.jsonl").write_text(PROMPTS)
    rc, out, err = cluster.verb(capsys, "deploy", dep, "--build=never")
    assert rc == 0, err
    (rsync,) = [a for a in cluster.argvs() if a[0] == "rsync"]
    assert rsync[2].endswith("/workspace/") and rsync[3] == "cc-sync:/workspace/cc"
    watcher = manifest(dep, "eval-watcher")
    assert "/workspace/cc/eval-prompts.jsonl" in pod(watcher)["containers"][0]["command"]


def test_an_eval_watcher_taken_out_of_config_yaml_is_removed_at_the_next_deploy(cluster, capsys):
    dep = cluster.job("train", EVAL)
    (dep / "workspace" / "eval-prompts.jsonl").write_text(PROMPTS)
    assert cluster.verb(capsys, "deploy", dep, "--build=never")[0] == 0
    state = lambda: json.loads((cluster.log / "state.json").read_text())["objects"]  # noqa: E731
    assert "Deployment/train-eval" in state()
    cfg = dep / "config.yaml"
    cfg.write_text(cfg.read_text().replace("  eval_watcher:\n    enabled: true\n", "  eval_watcher:\n    enabled: false\n"))
    rc, out, err = cluster.verb(capsys, "deploy", dep, "--build=never")
    assert rc == 0, err
    assert not (dep / "manifests" / "eval-watcher.yaml").exists()
    assert "Deployment/train-eval" not in state()
    assert 'deployment "train-eval" deleted (config.yaml no longer asks for it)' in out


def test_that_removal_never_takes_another_applications_deployment_of_that_name(cluster, capsys):
    other = cluster.new("train-eval", "deployment.namespace=team-a", "application.execution.mode=manual")
    cluster.seed(other, "deployment")
    dep = cluster.job("train")
    rc, out, err = cluster.verb(capsys, "deploy", dep, "--build=never")
    assert rc == 0, err
    assert "Deployment/train-eval" in json.loads((cluster.log / "state.json").read_text())["objects"]
    assert "deleted" not in out
