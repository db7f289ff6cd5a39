"""Rendered manifests: schema-valid, restricted-v2 compatible, and right for each mode."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from wizard.config import Config
from wizard.loader import parse_yaml, validate
from wizard.render import render_files
from wizard.validate import check_manifest_text

from conftest import DATA, EXAMPLES

CASES = {p.stem: p for p in sorted(EXAMPLES.glob("*.yaml"))}
CASES["seed-inference-server"] = DATA / "seed_inference_server.yaml"
CASES["seed-experiment-suite"] = DATA / "seed_experiment_suite.yaml"


def load(path: Path, name: str, **over) -> Config:
    data = parse_yaml(path.read_text(), path.name)
    data.setdefault("application", {}).setdefault("name", name)
    for section, values in over.items():
        data.setdefault(section, {}).update(values)
    return validate(data, source=path.name)


def manifests(config: Config, name: str = "demo") -> dict[str, dict]:
    files = render_files(config, name)
    return {rel.removeprefix("manifests/"): yaml.safe_load(text)
            for rel, (text, _) in files.items() if rel.startswith("manifests/")}


def pod_specs(objs: dict[str, dict]) -> list[dict]:
    return [o["spec"]["template"]["spec"] for o in objs.values() if o["kind"] in ("Deployment", "Job")]


@pytest.fixture(scope="module", params=sorted(CASES), ids=str)
def rendered(request) -> tuple[str, Config, dict[str, tuple[str, int]]]:
    name = request.param
    path = CASES[name]
    config = load(path, name if path.parent == EXAMPLES else ("llama-inference" if "inference" in name else "hyperparam-sweep"))
    return name, config, render_files(config, config.name)


def test_every_manifest_passes_the_strict_schemas(rendered):
    _, _, files = rendered
    for rel, (text, _) in files.items():
        if rel.startswith("manifests/"):
            assert check_manifest_text(text) == [], rel


def test_kustomization_lists_exactly_the_applied_objects(rendered):
    _, config, files = rendered
    kust = yaml.safe_load(files["manifests/kustomization.yaml"][0])
    present = {rel.removeprefix("manifests/") for rel in files if rel.startswith("manifests/")} - {"kustomization.yaml"}
    expected = present - ({"job.yaml"} if config.application.execution.mode == "job" else set())
    assert set(kust["resources"]) == expected


def test_pods_run_under_restricted_v2(rendered):
    _, _, files = rendered
    objs = {rel: yaml.safe_load(t) for rel, (t, _) in files.items() if rel.startswith("manifests/") and rel.endswith(".yaml")}
    specs = pod_specs(objs)
    assert specs
    for spec in specs:
        assert spec["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
        assert spec["enableServiceLinks"] is False and spec["automountServiceAccountToken"] is False
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["runAsNonRoot"] is True
            assert "runAsUser" not in sc and "runAsUser" not in spec["securityContext"]
            assert "privileged" not in sc
            env = {e["name"]: e for e in c["env"]}
            assert env["HOME"]["value"] == "/tmp" and env["HF_HOME"]["value"].startswith("/workspace/")
            mounts = {m["mountPath"] for m in c["volumeMounts"]}
            assert {"/workspace", "/tmp", "/etc/mlshift"} <= mounts
            # Secrets only by reference: no literal value of a secret-bearing variable.
            for key in ("HF_TOKEN", "WANDB_API_KEY", "RUNTIME_API_KEY", "VLLM_API_KEY"):
                if key in env:
                    assert "value" not in env[key] and "secretKeyRef" in env[key]["valueFrom"]


def test_recommended_labels_on_every_object(rendered):
    _, config, files = rendered
    for rel, (text, _) in files.items():
        if not rel.startswith("manifests/") or rel.endswith("kustomization.yaml"):
            continue
        labels = yaml.safe_load(text)["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == config.name
        assert labels["app.kubernetes.io/managed-by"] == "mlshift"
        assert {"app.kubernetes.io/instance", "app.kubernetes.io/component", "app.kubernetes.io/part-of"} <= set(labels)


def test_gpu_pods_get_limits_toleration_and_shm():
    config = load(EXAMPLES / "llama-server.yaml", "llama")
    spec = pod_specs(manifests(config, "llama"))[0]
    c = spec["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 8 == c["resources"]["requests"]["nvidia.com/gpu"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    dshm = next(v for v in spec["volumes"] if v["name"] == "dshm")
    assert dshm["emptyDir"] == {"medium": "Memory", "sizeLimit": "64Gi"}


def test_cpu_pods_have_no_gpu_toleration_or_shm_volume():
    spec = pod_specs(manifests(load(EXAMPLES / "ablation-study.yaml", "x", resources={"gpus": 0})))[0]
    assert "tolerations" not in spec and not any(v["name"] == "dshm" for v in spec["volumes"])


def test_cluster_profile_supplies_storage_class_and_tolerations():
    config = load(DATA / "seed_experiment_suite.yaml", "sweep", resources={"gpus": 1})
    objs = manifests(config, "sweep")
    # the seed's pods share the volume at once (2 nodes, 4 runs): the profile's ReadWriteMany class
    pvc = objs["persistentvolumeclaim.yaml"]["spec"]
    assert pvc["storageClassName"] == "ocs-external-storagecluster-cephfs" and pvc["accessModes"] == ["ReadWriteMany"]
    keys = {t["key"] for t in pod_specs(objs)[0]["tolerations"]}
    assert keys == {"nvidia.com/gpu", "nvidia.com/gpu.product"}
    one = load(DATA / "seed_experiment_suite.yaml", "sweep", deployment={"mode": "single-node", "num_nodes": None},
               experiment={"parallelism": 1})
    pvc = manifests(one, "sweep")["persistentvolumeclaim.yaml"]["spec"]
    assert pvc["storageClassName"] == "ocs-external-storagecluster-ceph-rbd" and pvc["accessModes"] == ["ReadWriteOnce"]


def test_served_application_gets_service_route_and_probes():
    objs = manifests(load(EXAMPLES / "llama-server.yaml", "llama"), "llama")
    route = objs["route.yaml"]
    assert route["metadata"]["name"] == "llama-api"
    assert route["spec"]["tls"] == {"termination": "edge", "insecureEdgeTerminationPolicy": "Redirect"}
    assert route["metadata"]["annotations"]["haproxy.router.openshift.io/timeout"] == "10m"
    assert objs["service.yaml"]["spec"]["ports"][0]["targetPort"] == "http"
    c = objs["deployment.yaml"]["spec"]["template"]["spec"]["containers"][0]
    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] >= 1800
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"
    # two replicas: replaced one at a time, never a third pod (tests/test_rollouts.py)
    assert objs["deployment.yaml"]["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    assert objs["deployment.yaml"]["spec"]["replicas"] == 2
    assert objs["servicemonitor.yaml"]["spec"]["endpoints"][0]["path"] == "/metrics"
    env = {e["name"]: e for e in c["env"]}
    # vLLM's own image: its one key from the Secret's api-key, in the environment (tests/test_security.py)
    assert env["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "llama-api-key", "key": "api-key"}
    assert route["spec"]["path"] == "/v1"  # only the API leaves the cluster


def test_included_transformers_server_is_ready_only_when_loaded():
    objs = manifests(load(EXAMPLES / "bert-classifier.yaml", "bert"), "bert")
    c = objs["deployment.yaml"]["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["python3", "-m", "runtime", "serve", "--config", "/etc/mlshift/config.yaml"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"


def test_autoscaling_adds_an_hpa():
    config = load(EXAMPLES / "llama-server.yaml", "llama", inference={
        "enabled": True, "engine": "vllm", "model": "m", "replicas": 1,
        "autoscaling": {"enabled": True, "min_replicas": 1, "max_replicas": 3}})
    hpa = manifests(config, "llama")["horizontalpodautoscaler.yaml"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "llama" and hpa["spec"]["maxReplicas"] == 3


def test_manual_mode_is_an_idle_pod_with_the_same_resources():
    objs = manifests(load(EXAMPLES / "data-analysis.yaml", "analysis"), "analysis")
    c = objs["deployment.yaml"]["spec"]["template"]["spec"]["containers"][0]
    assert c["command"][:2] == ["/bin/sh", "-c"] and "sleep" in c["command"][2]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "startupProbe" not in c and "service.yaml" not in objs


def test_job_mode_renders_a_template_not_a_running_job():
    objs = manifests(load(EXAMPLES / "batch-inference.yaml", "batch"), "batch")
    assert "deployment.yaml" not in objs
    job = objs["job.yaml"]
    assert job["kind"] == "Job" and job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["python3", "/etc/mlshift/launch.py", "/workspace/batch/batch_predict.py", "--input", "/datasets/unlabeled",
                            "--output", "/workspace/predictions", "--batch-size", "32"]  # through the launcher (wizard/launch.py)


def test_multi_node_uses_an_indexed_job_with_rendezvous():
    objs = manifests(load(EXAMPLES / "multi-node-training.yaml", "mn"), "mn")
    job = objs["job.yaml"]["spec"]
    assert (job["completionMode"], job["completions"], job["parallelism"]) == ("Indexed", 2, 2)
    spec = job["template"]["spec"]
    assert spec["subdomain"] == "mn-nodes"
    headless = objs["service-headless.yaml"]["spec"]
    assert headless["clusterIP"] == "None" and headless["selector"]["app.kubernetes.io/component"] == "job"
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    assert env["MASTER_ADDR"]["value"] == "$(JOB_NAME)-0.mn-nodes"
    assert "job-completion-index" in env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
    cmd = spec["containers"][0]["command"]
    assert cmd[0] == "torchrun" and "$(NODE_RANK)" in cmd and "--nnodes" in cmd


def test_prebuilt_image_needs_no_build_objects():
    config = load(EXAMPLES / "ablation-study.yaml", "abl", image={"build": False, "name": "quay.io/me/train:1.0"})
    objs = manifests(config, "abl")
    assert "buildconfig.yaml" not in objs and "imagestream.yaml" not in objs
    assert objs["job.yaml"]["spec"]["template"]["spec"]["containers"][0]["image"] == "quay.io/me/train:1.0"


def test_requirements_without_a_build_install_at_start_without_a_shell_parse():
    config = load(EXAMPLES / "ablation-study.yaml", "abl", image={"build": False},
                  application={"name": "abl", "type": "single_file", "source": {"path": "train.py"},
                               "execution": {"mode": "job", "arguments": ["$(whoami)"]}, "requirements": "req.txt"})
    cmd = manifests(config, "abl")["job.yaml"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert cmd[:2] == ["/bin/sh", "-c"] and '"$1"' in cmd[2]
    assert cmd[3:] == ["mlshift-start", "/workspace/abl/req.txt", "python3", "/etc/mlshift/launch.py", "/workspace/abl/train.py", "$$(whoami)"]


def test_tracking_reaches_the_pod_as_environment():
    config = load(EXAMPLES / "lr-sweep.yaml", "sweep")
    env = {e["name"]: e for e in pod_specs(manifests(config, "sweep"))[0]["containers"][0]["env"]}
    assert env["WANDB_PROJECT"]["value"] == "lr-sweep" and env["WANDB_TAGS"]["value"] == "sweep,lr"
    assert env["WANDB_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "wandb-api-key"


def test_namespace_is_set_everywhere_when_configured():
    config = load(EXAMPLES / "gpt2-inference.yaml", "g", deployment={"namespace": "team-a"})
    files = render_files(config, "g")
    for rel, (text, _) in files.items():
        if rel.startswith("manifests/"):
            obj = yaml.safe_load(text)
            if obj["kind"] == "Kustomization":
                assert obj["namespace"] == "team-a"
            else:
                assert obj["metadata"]["namespace"] == "team-a"


def test_containerfile_builds_from_the_base_image_and_runs_unprivileged():
    config = load(EXAMPLES / "llama-inference.yaml", "llama")
    text = render_files(config, "llama")["Containerfile"][0]
    assert "ARG BASE_IMAGE=docker.io/vllm/vllm-openai" in text
    assert "COPY workspace/requirements-inference.txt" in text
    assert text.rstrip().splitlines()[-2] == "USER 1001"


GO_NUMBERS_AND_WORDS = ["1e-3", "0o17", "08", "0x1F", "y", "off", "1_000", ".5", "+1"]


@pytest.mark.parametrize("mode", ["auto_start", "job"])
def test_arguments_that_go_would_read_as_numbers_stay_text(mode: str):
    """oc reads YAML with Go's rules, where 1e-3 is a number and y a boolean: the API server
    would refuse such a command. Every manifest quotes them, so they reach the container as typed."""
    config = validate({"application": {"name": "demo", "execution": {"mode": mode, "arguments": GO_NUMBERS_AND_WORDS}}},
                      source="test")
    text = render_files(config, "demo")["manifests/" + ("job.yaml" if mode == "job" else "deployment.yaml")][0]
    for word in GO_NUMBERS_AND_WORDS:
        assert f"- '{word}'\n" in text, word
    command = yaml.safe_load(text)["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[-len(GO_NUMBERS_AND_WORDS):] == GO_NUMBERS_AND_WORDS


def test_multi_node_ranks_never_share_a_node():
    """docs/modes/multi-node.md: one pod per node. A required pod anti-affinity on the hostname
    against the application's job pods, whose labels the ranks carry, in the Job template and in
    every submitted Job; no such rule on single-node jobs or Deployments."""
    from wizard.blueprint import Blueprint
    from wizard.render import JobSubmission, render_job

    config = load(EXAMPLES / "multi-node-training.yaml", "mn")
    template = manifests(config, "mn")["job.yaml"]["spec"]["template"]
    submitted = yaml.safe_load(render_job(Blueprint(config, "mn"), JobSubmission(
        name="mn-250102-130405-k3x9", labels={"mlshift.io/submission": "250102-130405-k3x9"}, annotations={},
        config_annotation="mlshift.io/config")))["spec"]["template"]
    for pod in (template, submitted):
        terms = pod["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert len(terms) == 1 and terms[0]["topologyKey"] == "kubernetes.io/hostname"
        wanted = terms[0]["labelSelector"]["matchLabels"]
        assert wanted == {"app.kubernetes.io/instance": "mn", "app.kubernetes.io/component": "job"}
        assert wanted.items() <= pod["metadata"]["labels"].items()  # the rule matches the ranks themselves
    for example in ("batch-inference.yaml", "llama-inference.yaml"):
        assert all("affinity" not in spec for spec in pod_specs(manifests(load(EXAMPLES / example, "one"), "one")))
