"""Volumes several pods use at once (ReadWriteMany, derived or refused) and the names of long
applications (every object within its kind's limit, shortened with a stable hash)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

from wizard import clusters
from wizard.blueprint import JOB_NAME_MAX, Blueprint, object_name
from wizard.config import NAME_MAX, pods_sharing_volume
from wizard.errors import ConfigError
from wizard.loader import dump_user_config, parse_yaml, validate
from wizard.render import render_files

from conftest import EXAMPLES, run_wizard

sys.path.insert(0, str(Path(__file__).parent))
from fake_oc.harness import Cluster  # noqa: E402

DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
SUB_ID = "250102-130405-k3x9"

# The multi-node example of seed 001 as it was: a multi-node job on the default profile's volume.
MULTI_NODE = {
    "deployment": {"mode": "multi-node", "num_nodes": 2},
    "application": {"name": "mn", "type": "single_file", "source": {"path": "./train.py"},
                    "execution": {"mode": "job", "arguments": "--epochs 3"}},
    "resources": {"gpus": 8},
}
SWEEP = {
    "application": {"name": "sw", "type": "single_file", "execution": {"mode": "job"}},
    "experiment": {"sweep": {"parameters": {"lr": [0.1, 0.01, 0.001, 0.0001]}}, "parallelism": 4},
}


def merged(base: dict, **over: dict) -> dict:
    out = yaml.safe_load(yaml.safe_dump(base))
    for section, values in over.items():
        node = out.setdefault(section, {})
        for k, v in values.items():
            if isinstance(v, dict) and isinstance(node.get(k), dict):
                node[k] = {**node[k], **v}
            else:
                node[k] = v
    return out


def refusal(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        validate(data, source="t")
    return str(info.value)


@pytest.fixture
def lab_profile(tmp_path, monkeypatch):
    """A user profile 'lab' with a ReadWriteMany class, as a clusters.yaml of the user's own."""
    f = tmp_path / "clusters.yaml"
    f.write_text("lab:\n  storage_class: lab-rbd\n  rwx_storage_class: lab-cephfs\n")
    monkeypatch.setattr(clusters, "USER_FILE", f)
    return f


# --------------------------------------------------------------------------- volumes several pods use at once
def test_multi_node_job_on_a_readwriteonce_volume_is_refused_with_the_key_and_the_fix():
    msg = refusal(MULTI_NODE)
    assert "\n" not in msg
    assert msg.startswith("t: resources.storage.access_mode: the 2 pods of a multi-node run (deployment.num_nodes) "
                          "cannot share a ReadWriteOnce volume")
    assert "set access_mode: ReadWriteMany" in msg and "names no rwx_storage_class" in msg
    assert "deployment.mode: single-node" in msg
    validate(merged(MULTI_NODE, resources={"storage": {"access_mode": "ReadWriteMany"}}), source="t")


def test_sweep_with_parallelism_above_one_on_a_readwriteonce_volume_is_refused():
    msg = refusal(SWEEP)
    assert "resources.storage.access_mode: 4 sweep runs at once (experiment.parallelism) cannot share" in msg
    assert "experiment.parallelism: 1" in msg
    validate(merged(SWEEP, experiment={"parallelism": 1}), source="t")
    # no more runs at once than the sweep has
    one = merged(SWEEP, experiment={"sweep": {"parameters": {"lr": [0.1]}}})
    assert pods_sharing_volume(validate(one, source="t")).pods == 1
    both = merged(SWEEP, deployment={"mode": "multi-node", "num_nodes": 3},
                  resources={"storage": {"access_mode": "ReadWriteMany"}})
    assert pods_sharing_volume(validate(both, source="t")).pods == 12


def test_served_replicas_are_the_same_rule():
    served = {"application": {"name": "s"}, "inference": {"enabled": True, "replicas": 3}}
    msg = refusal(served)
    assert "resources.storage.access_mode: 3 replicas on several nodes cannot share a ReadWriteOnce volume" in msg
    auto = {"application": {"name": "s"}, "inference": {"enabled": True, "autoscaling": {"enabled": True, "max_replicas": 5}}}
    assert "5 replicas on several nodes" in refusal(auto)
    assert pods_sharing_volume(validate({"application": {"name": "s"}, "inference": {"enabled": True}}, source="t")).pods == 1


def test_a_profile_with_a_readwritemany_class_derives_it(lab_profile, tmp_path):
    data = merged(MULTI_NODE, deployment={"cluster": "lab"})
    config = validate(data, source="t")
    storage = config.resources.storage
    assert (storage.access_mode, storage.storage_class) == ("ReadWriteMany", "lab-cephfs")
    assert {"resources.storage.access_mode", "resources.storage.storage_class"} <= config.derived_paths
    text = dump_user_config(config, schema_ref="config.schema.json")
    assert "    # access_mode: ReadWriteMany  (follows the pods that share it at once and the cluster profile; set it to choose)" in text
    assert "    # storage_class: lab-cephfs  (follows access_mode and the cluster profile; set it to choose)" in text
    again = validate(parse_yaml(text, "config.yaml"), source="config.yaml")
    assert again == config and again.derived_paths == config.derived_paths
    pvc = yaml.safe_load(render_files(config, "mn")["manifests/persistentvolumeclaim.yaml"][0])["spec"]
    assert pvc["accessModes"] == ["ReadWriteMany"] and pvc["storageClassName"] == "lab-cephfs"
    # one pod at a time: nothing derived, the profile's default class
    single = validate(merged(data, deployment={"mode": "single-node", "num_nodes": None}), source="t")
    assert single.resources.storage.access_mode == "ReadWriteOnce" and single.resources.storage.storage_class is None
    assert "resources.storage.access_mode" not in single.derived_paths


def test_a_choice_of_the_user_is_kept_and_checked(lab_profile):
    lab = merged(MULTI_NODE, deployment={"cluster": "lab"})
    # a ReadWriteOnce written in config.yaml (older files spell it out) is a choice: refused
    msg = refusal(merged(lab, resources={"storage": {"access_mode": "ReadWriteOnce"}}))
    assert "leave both out to get the profile's lab-cephfs" in msg
    # a storage class of one's own may not offer ReadWriteMany: not switched silently
    assert "resources.storage.access_mode" in refusal(merged(lab, resources={"storage": {"storage_class": "mine"}}))
    ok = validate(merged(lab, resources={"storage": {"storage_class": "mine", "access_mode": "ReadWriteMany"}}), source="t")
    assert ok.resources.storage.storage_class == "mine"
    # ReadWriteMany chosen: the profile's class for it follows
    rwx = validate(merged(lab, resources={"storage": {"access_mode": "ReadWriteMany"}}), source="t")
    assert rwx.resources.storage.storage_class == "lab-cephfs"
    assert rwx.derived_paths & {"resources.storage.access_mode", "resources.storage.storage_class"} == {
        "resources.storage.storage_class"}


def test_the_summary_says_why_the_volume_is_readwritemany(lab_profile, tmp_path):
    from wizard.summary import summary_lines

    config = validate(merged(MULTI_NODE, deployment={"cluster": "lab"}), source="t")
    text = "\n".join(summary_lines(config, "mn", tmp_path / "mn", force=False, old=None))
    assert "50Gi workspace volume (ReadWriteMany)" in text
    assert ("Volume       ReadWriteMany in lab-cephfs, the cluster profile's class for it: the 2 pods of a "
            "multi-node run (deployment.num_nodes) share it") in text


def test_validate_and_new_refuse_the_seed_multi_node_example(tmp_path):
    answers = tmp_path / "old.yaml"
    answers.write_text(yaml.safe_dump({k: v for k, v in MULTI_NODE.items()}))
    r = run_wizard("new", "mn", "--answers", str(answers), "--defaults", "--deployments-dir", str(tmp_path / "d"))
    assert r.returncode == 2 and "resources.storage.access_mode: the 2 pods of a multi-node run" in r.stderr
    # a deployment written before the rule: validate says what to change
    ok = run_wizard("new", "mn", "--answers", str(EXAMPLES / "multi-node-training.yaml"), "--defaults",
                    "--deployments-dir", str(tmp_path / "d"))
    assert ok.returncode == 0, ok.stderr
    cfg = tmp_path / "d" / "mn" / "config.yaml"
    assert "access_mode: ReadWriteMany" in cfg.read_text()
    cfg.write_text(cfg.read_text().replace("access_mode: ReadWriteMany", "access_mode: ReadWriteOnce"))
    v = run_wizard("validate", str(tmp_path / "d" / "mn"))
    assert v.returncode == 1
    assert "mn/config.yaml: resources.storage.access_mode: the 2 pods of a multi-node run" in v.stdout + v.stderr


# --------------------------------------------------------------------------- names
def long_name(n: int, seed: str = "x") -> str:
    base = (seed + "abcdefghij-klmnopqrst-uvwxyz0123-456789" * 3)[:n]
    return base[:-1] + "z" if n > 1 else "z"


def test_a_name_of_63_characters_is_accepted_64_refused():
    assert NAME_MAX == 63
    validate({"application": {"name": long_name(63)}}, source="t")
    assert "is 64 characters; a application name has at most 63" in refusal({"application": {"name": "a" * 64}})


@pytest.mark.parametrize("n", [1, 20, 34, 35, 36, 40, 48, 57, 58, 62, 63])
def test_every_object_name_fits_its_kind(n):
    name = long_name(n)
    assert len(name) == n
    job = validate(merged(MULTI_NODE, application={"name": name}, deployment={"num_nodes": 64},
                          resources={"storage": {"access_mode": "ReadWriteMany"}}), source="t")
    bp = Blueprint(job, name)
    sub = bp.job_name(SUB_ID)
    # job-name label <= 63; pods <job>-<index>-<5 random> and host names <job>-<index> <= 63
    assert len(sub) <= JOB_NAME_MAX and len(f"{sub}-63-abcde") <= 63 and DNS_1123.match(sub)
    assert sub == f"{bp.job_prefix}-{SUB_ID}"
    assert len(bp.headless_service) <= 63 and DNS_1035.match(bp.headless_service)
    env = {e["name"]: e.get("value") for e in bp.env}
    assert env["MASTER_ADDR"] == f"$(JOB_NAME)-0.{bp.headless_service}"
    for ns in (None, "team-a", "n" * 48):
        served = validate({"application": {"name": name}, "inference": {"enabled": True},
                           "deployment": {"namespace": ns}}, source="t")
        sp = Blueprint(served, name)
        room = len(ns) if ns else 24
        assert len(f"{sp.route_name}-{'n' * room}") <= 63 and DNS_1123.match(sp.route_name)
        for rel, (text, _) in render_files(served, name).items():
            if rel.startswith("manifests/") and rel != "manifests/kustomization.yaml":
                obj = yaml.safe_load(text)
                assert all(len(v) <= 63 for v in obj["metadata"]["labels"].values())
                if obj["kind"] == "Service":
                    assert len(obj["metadata"]["name"]) <= 63 and DNS_1035.match(obj["metadata"]["name"])
    if n + len("-" + SUB_ID) <= JOB_NAME_MAX:
        assert (sub, bp.headless_service, bp.workspace_claim) == (f"{name}-{SUB_ID}", f"{name}-nodes", f"{name}-workspace")


def test_short_names_are_the_name_and_its_suffix():
    config = validate(merged(MULTI_NODE, application={"name": "train"},
                             resources={"storage": {"access_mode": "ReadWriteMany"}}), source="t")
    bp = Blueprint(config, "train")
    assert (bp.job_name(SUB_ID), bp.job_prefix, bp.headless_service, bp.workspace_claim, bp.config_map) == (
        f"train-{SUB_ID}", "train", "train-nodes", "train-workspace", "train-config")
    assert bp.shortened_names == []
    served = Blueprint(validate({"application": {"name": "llama"}, "inference": {"enabled": True}}, source="t"), "llama")
    assert served.route_name == "llama-api"


def test_shortened_names_are_stable_distinct_and_keep_the_suffix():
    a, b = "q" * 62 + "a", "q" * 62 + "b"
    assert object_name(a, "nodes") == object_name(a, "nodes")
    assert object_name(a, "nodes") != object_name(b, "nodes")
    assert object_name(a, "nodes").endswith("-nodes") and len(object_name(a, "nodes")) == 63
    # one hash per application: its Jobs share one prefix, so they sort by submission time
    assert object_name(a, "250102-130405-k3x9", JOB_NAME_MAX)[:-18] == object_name(a, "260101-000000-zzzz", JOB_NAME_MAX)[:-18]
    # a cut that ends on "-" drops it: never two in a row
    cut = object_name("abcd-" + "e" * 58, "nodes", 20)
    assert re.fullmatch(r"abcd-[0-9a-f]{8}-nodes", cut) and "--" not in cut


def test_the_route_leaves_room_for_the_namespace():
    name = long_name(63)
    served = {"application": {"name": name}, "inference": {"enabled": True}}
    known = Blueprint(validate(merged(served, deployment={"namespace": "research-team-a"}), source="t"), name)
    assert len(f"{known.route_name}-research-team-a") <= 63 and known.route_name.endswith("-api")
    with_host = Blueprint(validate(merged(served, inference={"route": {"host": "llm.example.com"}}), source="t"), name)
    assert with_host.route_name == f"{name}-api"  # the name is not in the host: no need to shorten
    msg = refusal(merged(served, deployment={"namespace": "n" * 50}))
    assert "inference.route.host: the namespace" in msg and "(50 characters)" in msg
    validate(merged(served, deployment={"namespace": "n" * 50}, inference={"route": {"enabled": False}}), source="t")
    short = {"application": {"name": "ab"}, "inference": {"enabled": True}}
    assert Blueprint(validate(merged(short, deployment={"namespace": "n" * 56}), source="t"), "ab").route_name == "ab-api"


def test_the_summary_lists_the_shortened_names(tmp_path):
    from wizard.summary import summary_lines

    name = long_name(63)
    config = validate(merged(MULTI_NODE, application={"name": name},
                             resources={"storage": {"access_mode": "ReadWriteMany"}}), source="t")
    bp = Blueprint(config, name)
    text = "\n".join(summary_lines(config, name, tmp_path / name, force=False, old=None))
    assert f"  Name         Job of each submission {bp.job_prefix}-<submission id> (shortened from {name}-<submission id>" in text
    assert f"  Name         headless Service {bp.headless_service} (shortened from {name}-nodes" in text
    assert "PersistentVolumeClaim" not in text
    short = validate(merged(config.model_dump(mode="json", exclude_none=True), application={"name": "train"}), source="t")
    assert "  Name  " not in "\n".join(summary_lines(short, "train", tmp_path / "train", force=False, old=None))


def test_submit_names_the_job_with_the_blueprint(tmp_path, monkeypatch, capsys):
    cluster = Cluster(tmp_path, monkeypatch)
    name = long_name(63)
    dep = cluster.job(name)
    cluster.seed(dep)
    rc, out, err = cluster.verb(capsys, "submit", dep)
    assert rc == 0, err
    (job,) = [o for o in cluster.created() if o["kind"] == "Job"]
    job_name = job["metadata"]["name"]
    assert len(job_name) <= JOB_NAME_MAX and DNS_1123.match(job_name)
    sub = job["metadata"]["labels"]["mlshift.io/submission"]
    bp = Blueprint(validate(yaml.safe_load((dep / "config.yaml").read_text()), source="t"), name)
    assert job_name == bp.job_name(sub) == f"{bp.job_prefix}-{sub}"
    assert f"watch-job.sh {sub}" in out  # the submission id, found after the shortened prefix
    cluster.reset()
    rc, out, err = cluster.verb(capsys, "logs", dep, sub)
    assert rc == 0, err
    assert any(f"job/{job_name}" in a or f"job-name={job_name}" in a for argv in cluster.argvs() for a in argv)
