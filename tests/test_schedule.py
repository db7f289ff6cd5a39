"""Schedules (application.execution.schedule): the cron expressions taken, the CronJob and the
promote step's ServiceAccount, Role and RoleBinding as rendered and checked against the strict
schemas, where the token goes, and deploy and status against the recording oc."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from wizard import cron
from wizard.blueprint import AFTER_QUIET_WRAPPER, Blueprint
from wizard.config import Config
from wizard.errors import ConfigError
from wizard.loader import validate
from wizard.ops import diagnose
from wizard.ops.schedule import status_lines
from wizard.render import render_files
from wizard.summary import summary_lines
from wizard.validate import check_manifest_text

from conftest import run_wizard

sys.path.insert(0, str(Path(__file__).parent))
from fake_oc.harness import Cluster  # noqa: E402

TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
SCHEDULE_OBJECTS = ("cronjob.yaml", "serviceaccount-promote.yaml", "role-promote.yaml", "rolebinding-promote.yaml")


def config(*, eval_watcher: bool = False, promote: str | None = None, **execution) -> Config:
    data: dict = {
        "application": {"name": "train", "execution": {"mode": "job", "schedule": "0 3 * * *", "arguments": "--lr 0.1",
                                                        **execution}},
        "deployment": {"namespace": "team-a"},
        "resources": {"gpus": 1},
        "experiment": {"eval_watcher": {"enabled": eval_watcher}},
    }
    if promote:
        data["experiment"]["promote"] = {"to": promote, "metric": "val_loss"}
    return validate(data, source="config.yaml")


def rendered(cfg: Config) -> dict[str, str]:
    return {rel.removeprefix("manifests/"): text for rel, (text, _) in render_files(cfg, "train").items()
            if rel.startswith("manifests/")}


def pod_of(objs: dict[str, str]) -> dict:
    return yaml.safe_load(objs["cronjob.yaml"])["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def containers(pod: dict) -> list[dict]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def problem(data: dict) -> str:
    data.setdefault("application", {}).setdefault("name", "train")
    with pytest.raises(ConfigError) as info:
        validate(data, source="config.yaml")
    return str(info.value)


# --------------------------------------------------------------------------- the expressions
@pytest.mark.parametrize("text,words", [
    ("0 3 * * *", "daily at 03:00 UTC"),
    ("@daily", "daily at 00:00 UTC"),
    ("@midnight", "daily at 00:00 UTC"),
    ("@hourly", "every hour at minute 0"),
    ("@weekly", "weekly on Sunday at 00:00 UTC"),
    ("@monthly", "monthly on day 1 at 00:00 UTC"),
    ("@yearly", "yearly on 1 January at 00:00 UTC"),
    ("30 2 * * 1-5", "on Monday to Friday at 02:30 UTC"),
    ("0 9 * * MON-FRI", "on Monday to Friday at 09:00 UTC"),
    ("0 4 * * 0,3", "on Sunday and Wednesday at 04:00 UTC"),
    ("*/15 * * * *", "every 15 minutes"),
    ("5 */6 * * *", "every 6 hours from 00:05 UTC"),
    ("  0   3 * *  *  ", "daily at 03:00 UTC"),
    ("5 4 1-7 * 1", "at '5 4 1-7 * 1' (cron) UTC"),  # not a common one: the expression as given
])
def test_schedules_in_words(text, words):
    assert cron.parse(text).words() == words


@pytest.mark.parametrize("text,message", [
    ("0 3 * *", "'0 3 * *' has 4 fields; a schedule has five fields (minute hour day-of-month month day-of-week"),
    ("0 3 * * * *", "has 6 fields"),
    ("@Daily", "'@Daily' is not a schedule"),  # Kubernetes reads descriptors in lower case only
    ("@every 1h", "'@every 1h' is not a schedule"),
    ("60 * * * *", "minute field: 60 is out of range (0-59)"),
    ("0 24 * * *", "hour field: 24 is out of range (0-23)"),
    ("0 3 0 * *", "day of month field: 0 is out of range (1-31)"),
    ("0 3 * 13 *", "month field: 13 is out of range (1-12)"),
    ("0 3 * * 7", "day of week field: 7 is out of range (0-6)"),
    ("0 3 * * mon-fry", "day of week field: 'fry' is not a value (0-6, or SUN-SAT)"),
    ("*/0 * * * *", "minute field: the step in '*/0' is not a whole number of 1 or more"),
    ("5-1 * * * *", "minute field: the range '5-1' ends before it starts"),
    ("0 ? * * *", "hour field: '?' is only for the day fields"),
    ("0 3 * * *;", "day of week field: '*;' has characters a cron field does not take"),
    ("1,,2 * * * *", "minute field: '1,,2' has an empty item between commas"),
    ("0 3 L * *", "day of month field: 'L' is not a value (1-31)"),
    ("CRON_TZ=Europe/Berlin 0 3 * * *", "a time zone does not go in the schedule; set application.execution.timezone"),
])
def test_expressions_a_cronjob_would_refuse_are_refused_in_one_line(text, message):
    with pytest.raises(ValueError) as info:
        cron.parse(text)
    assert str(info.value).startswith(message) or message in str(info.value)
    assert "\n" not in str(info.value)


def test_next_times_follow_cron_rules():
    utc = dt.timezone.utc
    now = dt.datetime(2025, 1, 2, 3, 4, tzinfo=utc)  # a Thursday
    assert cron.parse("0 3 * * *").next_times(now, utc, 2) == [dt.datetime(2025, 1, 3, 3, 0, tzinfo=utc),
                                                                dt.datetime(2025, 1, 4, 3, 0, tzinfo=utc)]
    # both day fields restricted: either matches (the 2nd is in 1-7; Monday the 6th too, the 13th is a Monday)
    days = [t.day for t in cron.parse("5 4 1-7 * 1").next_times(now, utc, 7)]
    assert days == [2, 3, 4, 5, 6, 7, 13]
    # one of them '*': both must match
    assert [t.day for t in cron.parse("0 0 * * 1").next_times(now, utc, 2)] == [6, 13]
    assert cron.parse("0 0 29 2 *").next_times(now, utc)[0] == dt.datetime(2028, 2, 29, tzinfo=utc)
    assert cron.parse("0 0 30 2 *").next_times(now, utc) == []  # never


def test_next_times_in_a_time_zone_skip_the_hour_summer_time_skips():
    berlin = ZoneInfo("Europe/Berlin")
    before = dt.datetime(2025, 3, 29, 12, 0, tzinfo=berlin)  # the clocks go from 02:00 to 03:00 on the 30th
    times = cron.parse("30 2 * * *").next_times(before, berlin, 2)
    assert [(t.month, t.day) for t in times] == [(3, 31), (4, 1)]  # no 02:30 on the 30th
    assert all(t.hour == 2 and t.minute == 30 and t.utcoffset() == dt.timedelta(hours=2) for t in times)
    assert cron.parse("0 3 * * *").next_times(before, berlin)[0].astimezone(dt.timezone.utc).hour == 1


@pytest.mark.parametrize("name,message", [
    ("Europe/Berln", "'Europe/Berln' is not a time zone in the IANA database; did you mean Europe/Berlin?"),
    ("Local", "'Local' is not an IANA time zone name"),
    ("../etc/passwd", "'../etc/passwd' is not an IANA time zone name"),
])
def test_time_zones_are_iana_names(name, message):
    msg = problem({"application": {"execution": {"mode": "job", "schedule": "@daily", "timezone": name}}})
    assert f"application.execution.timezone: {message}" in msg
    assert len(msg.splitlines()) == 1


# --------------------------------------------------------------------------- config rules
@pytest.mark.parametrize("mode", ["auto_start", "manual"])
def test_a_schedule_is_for_job_deployments_only(mode):
    msg = problem({"application": {"execution": {"mode": mode, "schedule": "0 3 * * *"}}})
    assert msg.splitlines() == [f"config.yaml: application.execution.schedule: a schedule starts runs that end, as Jobs: "
                                f"it needs execution.mode: job, not {mode} (whose pod runs all the time)"]


def test_a_time_zone_without_a_schedule_is_refused():
    msg = problem({"application": {"execution": {"mode": "job", "timezone": "Europe/Berlin"}}})
    assert "application.execution.timezone: Europe/Berlin is the time zone of a schedule" in msg


def test_a_multi_node_schedule_trains_only():
    base = {"application": {"execution": {"mode": "job", "schedule": "@daily"}},
            "deployment": {"mode": "multi-node", "num_nodes": 2}, "resources": {"storage": {"access_mode": "ReadWriteMany"}}}
    validate({**base, "application": {**base["application"], "name": "train"}}, source="config.yaml")  # train only: fine
    msg = problem({**base, "experiment": {"promote": {"to": "llm"}}})
    assert "application.execution.schedule: a scheduled run's steps after training (promote (experiment.promote.to))" in msg


def test_the_promote_step_needs_the_runtime_in_the_image():
    msg = problem({"application": {"type": "custom_command", "source": {"command": "python train.py"},
                                   "execution": {"mode": "job", "schedule": "@daily"}},
                   "image": {"build": False}, "experiment": {"promote": {"to": "llm"}}})
    assert "image.build: false runs" in msg and "the schedule's promote step runs the included runtime" in msg


def test_bad_cron_from_the_command_line_is_one_line_and_writes_nothing(deployments: Path):
    result = run_wizard("new", "train", "--defaults", "--set", "application.execution.mode=job",
                        "--set", "application.execution.schedule=0 3 * *", "--deployments-dir", str(deployments))
    assert result.returncode == 2
    assert result.stderr.startswith("error: answers: application.execution.schedule: '0 3 * *' has 4 fields; ")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert list(deployments.iterdir()) == []


def test_bad_cron_in_config_yaml_changes_nothing_on_render(deployments: Path):
    assert run_wizard("new", "train", "--defaults", "--set", "application.execution.mode=job",
                      "--set", "application.execution.schedule=@daily", "--deployments-dir", str(deployments)).returncode == 0
    target = deployments / "train"
    before = {p: p.read_bytes() for p in target.rglob("*") if p.is_file()}
    cfg = target / "config.yaml"
    cfg.write_text(cfg.read_text().replace("'@daily'", "'0 25 * * *'"))
    before[cfg] = cfg.read_bytes()
    result = run_wizard("render", str(target))
    assert result.returncode == 2
    assert "application.execution.schedule: hour field: 25 is out of range (0-23)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in target.rglob("*") if p.is_file()} == before


def test_schedule_is_set_like_any_key_and_reaches_the_cronjob(deployments: Path):
    result = run_wizard("new", "train", "--defaults", "--set", "application.execution.mode=job",
                        "--set", "application.execution.schedule=30 2 * * 1-5",
                        "--set", "application.execution.timezone=Europe/Berlin", "--deployments-dir", str(deployments))
    assert result.returncode == 0, result.stderr
    target = deployments / "train"
    user = yaml.safe_load((target / "config.yaml").read_text())
    assert user["application"]["execution"]["schedule"] == "30 2 * * 1-5"
    cronjob = yaml.safe_load((target / "manifests" / "cronjob.yaml").read_text())
    assert cronjob["spec"]["schedule"] == "30 2 * * 1-5" and cronjob["spec"]["timeZone"] == "Europe/Berlin"
    assert "cronjob.yaml" in yaml.safe_load((target / "manifests" / "kustomization.yaml").read_text())["resources"]
    assert run_wizard("validate", str(target)).returncode == 0


# --------------------------------------------------------------------------- what is rendered
@pytest.mark.parametrize("eval_watcher,promote,steps", [
    (False, None, ["app"]),
    (True, None, ["app", "eval"]),
    (False, "llm", ["app", "promote"]),
    (True, "llm", ["app", "eval", "promote"]),
])
def test_steps_run_in_order_in_one_pod(eval_watcher, promote, steps):
    cfg = config(eval_watcher=eval_watcher, promote=promote)
    objs = rendered(cfg)
    pod = pod_of(objs)
    assert [c["name"] for c in pod.get("initContainers", [])] == steps[:-1]  # each runs when the one before succeeded
    assert [c["name"] for c in pod["containers"]] == steps[-1:]
    train, *rest = containers(pod)
    job_pod = yaml.safe_load(objs["job.yaml"])["spec"]["template"]["spec"]
    submitted = job_pod["containers"][0]
    assert train["command"][-4:] == submitted["command"][-4:] == ["/etc/mlshift/launch.py", "/workspace/train/main.py",
                                                                  "--lr", "0.1"]
    for key in ("image", "workingDir", "resources", "securityContext"):
        assert train[key] == submitted[key], key  # the pod a submitted Job runs
    assert train["volumeMounts"] == submitted["volumeMounts"]
    assert pod["volumes"][:len(job_pod["volumes"])] == job_pod["volumes"]
    for key in ("tolerations", "securityContext", "restartPolicy", "enableServiceLinks", "automountServiceAccountToken"):
        assert pod.get(key) == job_pod.get(key), key
    blueprint = Blueprint(cfg, "train")
    by_name = {c["name"]: c for c in rest}
    if "eval" in by_name:
        # at once, no quiet period to sleep: the launcher marked the run's models when it exited 0
        assert by_name["eval"]["command"] == [*blueprint.eval_command, "--once"]
        assert by_name["eval"]["command"][:4] == ["python3", "-m", "runtime", "watch"]
        assert by_name["eval"]["resources"] == train["resources"]  # the pod's GPUs
        assert "MLSHIFT_RUN" not in {e["name"] for e in by_name["eval"]["env"]}  # the watcher's environment
    if "promote" in by_name:
        assert by_name["promote"]["command"] == ["python3", "-m", "runtime", "promote", "--config",
                                                 "/etc/mlshift/config.yaml", "--if-better"]
        assert "nvidia.com/gpu" not in by_name["promote"]["resources"]["requests"]
        names = {e["name"] for e in by_name["promote"]["env"]}
        assert {"MLSHIFT_MODELS_ROOT", "POD_NAMESPACE", "PYTHONPATH"} <= names
        assert not {"HF_TOKEN", "WANDB_API_KEY"} & names  # no Secret in the container that holds the token


def test_after_a_custom_command_the_eval_step_waits_the_quiet_period():
    """No launcher runs a custom_command training, so nothing marks its models: the watcher takes
    them as complete once their files have stayed unchanged for its quiet period."""
    cfg = validate({"application": {"name": "train", "type": "custom_command", "source": {"command": "python -m trainer"},
                                    "execution": {"mode": "job", "schedule": "0 3 * * *"}},
                    "experiment": {"eval_watcher": {"enabled": True}}}, source="config.yaml")
    train, command = [c["command"] for c in containers(pod_of(rendered(cfg)))]
    assert "/etc/mlshift/launch.py" not in train
    assert command[:5] == ["/bin/sh", "-c", AFTER_QUIET_WRAPPER, "mlshift-eval", "30"]
    assert command[5:] == [*Blueprint(cfg, "train").eval_command, "--once"]


def test_the_eval_step_waits_the_quiet_period_then_runs_its_words_as_they_are(tmp_path):
    out = subprocess.run(["/bin/sh", "-c", AFTER_QUIET_WRAPPER, "mlshift-eval", "0", "printf", "%s|", "a b", "$(x)", "--once"],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and out.stdout == "a b|$(x)|--once|"


def test_schedule_objects_pass_the_strict_schemas():
    for cfg in (config(eval_watcher=True, promote="llm"), config(),
                validate({"application": {"name": "train", "execution": {"mode": "job", "schedule": "@hourly"}},
                          "deployment": {"mode": "multi-node", "num_nodes": 2},
                          "resources": {"storage": {"access_mode": "ReadWriteMany"}}}, source="config.yaml")):
        objs = rendered(cfg)
        assert "cronjob.yaml" in objs
        for name in SCHEDULE_OBJECTS:
            if name in objs:
                assert check_manifest_text(objs[name]) == [], name
    kinds = {yaml.safe_load(t)["kind"] for n, t in rendered(config(promote="llm")).items() if n in SCHEDULE_OBJECTS}
    assert kinds == {"CronJob", "ServiceAccount", "Role", "RoleBinding"}


def test_cronjob_runs_one_at_a_time_and_keeps_a_short_history():
    cronjob = yaml.safe_load(rendered(config())["cronjob.yaml"])
    spec = cronjob["spec"]
    assert spec["concurrencyPolicy"] == "Forbid" and spec["startingDeadlineSeconds"] == 3600
    assert spec["successfulJobsHistoryLimit"] == spec["failedJobsHistoryLimit"] == 7
    assert spec["timeZone"] == "Etc/UTC"  # the times are UTC whatever the controller's clock
    assert spec["jobTemplate"]["spec"]["backoffLimit"] == 0  # a retry would train again from the start
    labels = spec["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "job" and labels["mlshift.io/schedule"] == "train"  # list-jobs finds them
    assert spec["jobTemplate"]["metadata"]["annotations"] == {"mlshift.io/arguments": '["--lr", "0.1"]'}  # and shows these
    assert cronjob["metadata"]["labels"]["app.kubernetes.io/component"] == "schedule"


def test_each_run_is_named_by_its_job():
    pod = pod_of(rendered(config(eval_watcher=True, promote="llm")))
    for c in containers(pod):
        env = {e["name"]: e for e in c["env"]}
        if c["name"] == "eval":
            continue
        assert env["MLSHIFT_RUN"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['batch.kubernetes.io/job-name']"
    train = {e["name"]: e.get("value") for e in containers(pod)[0]["env"]}
    assert train["MLSHIFT_RESULTS"] == "/workspace/train/results/$(MLSHIFT_RUN)/"
    assert train["MLSHIFT_MODEL_DIR"].endswith("/$(MLSHIFT_RUN)")
    assert train["MLSHIFT_RUN_GROUP"] == "train-schedule"
    # a submitted Job keeps its submission id
    job = yaml.safe_load(rendered(config())["job.yaml"])["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in job["env"]}
    assert env["MLSHIFT_RUN"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['mlshift.io/submission']"


def test_every_container_runs_under_restricted_v2():
    pod = pod_of(rendered(config(eval_watcher=True, promote="llm")))
    assert pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    assert len(containers(pod)) == 3
    for c in containers(pod):
        sc = c["securityContext"]
        assert sc == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
                      "seccompProfile": {"type": "RuntimeDefault"}}, c["name"]
    for v in pod["volumes"]:  # volume types restricted-v2 allows
        assert set(v) - {"name"} <= {"persistentVolumeClaim", "configMap", "emptyDir", "projected", "downwardAPI", "secret"}
        assert "hostPath" not in v


def test_the_role_allows_exactly_get_and_patch_of_the_one_deployment():
    objs = rendered(config(promote="llm-serve"))
    role = yaml.safe_load(objs["role-promote.yaml"])
    assert role["rules"] == [{"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["llm-serve"],
                              "verbs": ["get", "patch"]}]
    binding = yaml.safe_load(objs["rolebinding-promote.yaml"])
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "train-promote"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "train-promote", "namespace": "team-a"}]
    account = yaml.safe_load(objs["serviceaccount-promote.yaml"])
    assert account["metadata"]["name"] == "train-promote" and account["automountServiceAccountToken"] is False


def test_without_a_namespace_the_binding_names_the_account_of_its_own():
    cfg = validate({"application": {"name": "train", "execution": {"mode": "job", "schedule": "@daily"}},
                    "experiment": {"promote": {"to": "llm"}}}, source="config.yaml")
    text = rendered(cfg)["rolebinding-promote.yaml"]
    assert yaml.safe_load(text)["subjects"] == [{"kind": "ServiceAccount", "name": "train-promote"}]
    assert check_manifest_text(text) == []


def test_the_token_is_in_the_promote_container_only():
    objs = rendered(config(eval_watcher=True, promote="llm"))
    pod = pod_of(objs)
    assert pod["automountServiceAccountToken"] is False and pod["serviceAccountName"] == "train-promote"
    holders = [c["name"] for c in containers(pod) for m in c["volumeMounts"] if m["mountPath"] == TOKEN_PATH]
    assert holders == ["promote"]
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == TOKEN_PATH]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    sources = volume["projected"]["sources"]
    assert sources[0] == {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}}
    assert sources[1] == {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}
    assert sources[2] == {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}
    # no other pod of the deployment gets an account or a token
    for name, text in objs.items():
        if name == "cronjob.yaml" or not text.strip():
            continue
        obj = yaml.safe_load(text)
        spec = ((obj.get("spec") or {}).get("template") or {}).get("spec")
        if spec:
            assert spec.get("automountServiceAccountToken") is False, name
            assert "serviceAccountName" not in spec and TOKEN_PATH not in text, name
    # and without a promote step, the CronJob's pod has none either
    plain = pod_of(rendered(config(eval_watcher=True)))
    assert "serviceAccountName" not in plain and TOKEN_PATH not in yaml.safe_dump(plain)


def test_no_schedule_renders_no_schedule_objects():
    cfg = validate({"application": {"name": "train", "execution": {"mode": "job"}},
                    "experiment": {"promote": {"to": "llm"}}}, source="config.yaml")  # promote.sh by hand only
    assert not set(SCHEDULE_OBJECTS) & set(rendered(cfg))


def test_a_long_name_gets_a_cronjob_name_that_fits():
    name = "a-very-long-application-name-for-training-every-night-x"  # 55 characters
    cfg = validate({"application": {"name": name, "execution": {"mode": "job", "schedule": "@daily"}}}, source="config.yaml")
    blueprint = Blueprint(cfg, name)
    assert len(blueprint.cronjob_name) <= 52 and blueprint.cronjob_name.startswith("a-very-long")
    assert ("CronJob", name, blueprint.cronjob_name) in blueprint.shortened_names
    files = render_files(cfg, name)
    assert yaml.safe_load(files["manifests/cronjob.yaml"][0])["metadata"]["name"] == blueprint.cronjob_name


def test_summary_says_the_schedule_in_words_and_each_step(tmp_path):
    cfg = config(eval_watcher=True, promote="llm", timezone="Europe/Berlin")
    lines = summary_lines(cfg, "train", tmp_path / "train", force=False, old=None)
    (line,) = [x for x in lines if x.startswith("  Schedule")]
    assert line == ("  Schedule     daily at 03:00 Europe/Berlin (CronJob train), one run at a time: train, then evaluate, "
                    "then promote to llm if better")
    assert any("ServiceAccount train-promote may get and patch Deployment llm, nothing else" in x for x in lines)


# --------------------------------------------------------------------------- on the cluster
@pytest.fixture
def cluster(tmp_path, monkeypatch):
    return Cluster(tmp_path, monkeypatch)


def _applied_kinds(cluster: Cluster) -> list[list[str]]:
    return [[yaml.safe_load(t)["kind"] for t in c["files"].values()] for c in cluster.calls() if c["argv"][0] == "apply"]


def test_deploy_applies_the_schedule_after_the_shared_objects(cluster, capsys):
    dep = cluster.job("train", "application.execution.schedule=0 3 * * *", "experiment.promote.to=llm")
    rc, out, err = cluster.verb(capsys, "deploy", dep)
    assert rc == 0, err
    kinds = _applied_kinds(cluster)
    assert kinds[0][0] == "ConfigMap"
    assert kinds[-1] == ["ServiceAccount", "Role", "RoleBinding", "CronJob"]  # the account before the pods that use it
    assert not [c for c in cluster.calls() if c["argv"][0] == "delete" and "cronjobs" in " ".join(c["argv"])]
    assert "Scheduled: daily at 03:00 UTC, the CronJob train starts a run: train, then promote to llm if better." in out


def test_a_schedule_taken_out_of_config_yaml_stops(cluster, capsys):
    dep = cluster.job("train", "application.execution.schedule=@daily", "experiment.promote.to=llm")
    assert cluster.verb(capsys, "deploy", dep)[0] == 0
    cfg = dep / "config.yaml"
    cfg.write_text(cfg.read_text().replace("  promote:\n    to: llm\n", ""))
    cluster.reset()
    rc, out, err = cluster.verb(capsys, "deploy", dep)  # the schedule stays, its promote step goes
    assert rc == 0, err
    (delete,) = [c["argv"] for c in cluster.calls() if c["argv"][0] == "delete" and "-l" in c["argv"]]
    assert delete[2] == "rolebindings,roles,serviceaccounts,deployments" and "--cascade=orphan" not in delete
    assert '  role "train-promote" deleted (config.yaml no longer asks for it)' in out
    state = (cluster.log / "state.json").read_text()
    assert "CronJob/train" in state and "Role/train-promote" not in state
    cfg.write_text(cfg.read_text().replace("    schedule: '@daily'\n", ""))
    cluster.reset()
    rc, out, err = cluster.verb(capsys, "deploy", dep)
    assert rc == 0, err
    (delete,) = [c["argv"] for c in cluster.calls() if c["argv"][0] == "delete" and "-l" in c["argv"]]
    assert delete[2] == "cronjobs,rolebindings,roles,serviceaccounts,deployments,replicasets,pods" and "--cascade=orphan" in delete
    assert ("app.kubernetes.io/instance=train,app.kubernetes.io/component in (schedule,eval),"
            "app.kubernetes.io/managed-by=mlshift") in delete
    assert "CronJob/train" not in (cluster.log / "state.json").read_text()
    assert "Scheduled:" not in out


def test_a_member_without_the_admin_role_still_removes_the_cronjob(cluster, capsys):
    dep = cluster.job("train", "application.execution.schedule=@daily")
    assert cluster.verb(capsys, "deploy", dep)[0] == 0
    cfg = dep / "config.yaml"
    cfg.write_text(cfg.read_text().replace("    schedule: '@daily'\n", ""))
    cluster.set(FAKE_OC_FORBID="delete:Role")
    cluster.reset()
    rc, out, err = cluster.verb(capsys, "deploy", dep)
    assert rc == 0, err
    deletes = [c["argv"][2] for c in cluster.calls() if c["argv"][0] == "delete" and "-l" in c["argv"]]
    assert deletes == ["cronjobs,rolebindings,roles,serviceaccounts,deployments,replicasets,pods",
                       "cronjobs,serviceaccounts,deployments,replicasets,pods"]
    assert "CronJob/train" not in (cluster.log / "state.json").read_text()
    assert "could not remove" not in err


def test_a_refused_removal_of_the_watcher_alone_is_one_request_and_a_note(cluster, capsys):
    """Only the eval watcher not asked for: no Role among the kinds, so a refusal is not asked again."""
    dep = cluster.job("train", "application.execution.schedule=@daily", "experiment.promote.to=llm")
    cluster.set(FAKE_OC_FORBID="delete:Deployment")
    rc, out, err = cluster.verb(capsys, "deploy", dep)
    assert rc == 0, err
    deletes = [c["argv"][2] for c in cluster.calls() if c["argv"][0] == "delete" and "-l" in c["argv"]]
    assert deletes == ["deployments"]
    assert "note: could not remove what config.yaml no longer asks for" in err
    assert "see `oc get deployments -l app.kubernetes.io/instance=train,app.kubernetes.io/component=eval," in err


PROMPTS = '{"id": "p1", "prompt": "The capital of France is"}\n'


def _unasked_deletes(cluster: Cluster) -> list[list[str]]:
    """deploy's requests that remove what config.yaml does not ask for (by labels; its other
    deletes, such as the upload's helper pod, go by name)."""
    return [c["argv"][1:] for c in cluster.calls() if c["argv"][0] == "delete" and "-l" in c["argv"]]


@pytest.mark.parametrize("sets, kinds, components, orphan", [
    ((), "cronjobs,rolebindings,roles,serviceaccounts,deployments,replicasets,pods", " in (schedule,eval)", True),
    (("experiment.eval_watcher.enabled=true",), "cronjobs,rolebindings,roles,serviceaccounts", "=schedule", True),
    (("application.execution.schedule=@daily",), "rolebindings,roles,serviceaccounts,deployments", " in (schedule,eval)", False),
    (("application.execution.schedule=@daily", "experiment.promote.to=llm"), "deployments", "=eval", False),
    (("application.execution.schedule=@daily", "experiment.promote.to=llm", "experiment.eval_watcher.enabled=true"),
     None, None, None),
])
def test_each_job_deploy_removes_what_is_not_asked_for_in_one_request(cluster, capsys, sets, kinds, components, orphan):
    dep = cluster.job("train", *sets)
    (dep / "workspace" / "eval-prompts.jsonl").write_text(PROMPTS)
    rc, out, err = cluster.verb(capsys, "deploy", dep)
    assert rc == 0, err
    deletes = _unasked_deletes(cluster)
    if kinds is None:  # config.yaml asks for all of it: no request at all
        assert deletes == []
        return
    selector = (f"app.kubernetes.io/instance=train,app.kubernetes.io/component{components},"
                "app.kubernetes.io/managed-by=mlshift")
    assert deletes == [["--namespace=team-a", kinds, "-l", selector, "--ignore-not-found", "--wait=false",
                        *(["--cascade=orphan"] if orphan else [])]]


def test_a_schedule_and_an_eval_watcher_taken_out_together_go_in_one_request(cluster, capsys):
    dep = cluster.job("train", "application.execution.schedule=@daily", "experiment.eval_watcher.enabled=true")
    (dep / "workspace" / "eval-prompts.jsonl").write_text(PROMPTS)
    assert cluster.verb(capsys, "deploy", dep)[0] == 0
    state = lambda: json.loads((cluster.log / "state.json").read_text())["objects"]  # noqa: E731
    assert {"CronJob/train", "Deployment/train-eval"} <= set(state())
    cfg = dep / "config.yaml"
    text = cfg.read_text()
    text = text.replace("    schedule: '@daily'\n", "")
    text = text.replace("  eval_watcher:\n    enabled: true\n", "  eval_watcher:\n    enabled: false\n")
    cfg.write_text(text)
    assert "@daily" not in text and "enabled: false" in text
    cluster.reset()
    rc, out, err = cluster.verb(capsys, "deploy", dep, "--build=never")
    assert rc == 0, err
    assert len(_unasked_deletes(cluster)) == 1
    assert "CronJob/train" not in state() and "Deployment/train-eval" not in state()
    assert 'cronjob "train" deleted (config.yaml no longer asks for it)' in out
    assert 'deployment "train-eval" deleted (config.yaml no longer asks for it)' in out


def test_status_shows_the_last_and_the_next_run(cluster, capsys):
    dep = cluster.job("train", "application.execution.schedule=0 3 * * *",
                      "application.execution.timezone=Europe/Berlin")
    assert cluster.verb(capsys, "deploy", dep)[0] == 0
    cluster.set(FAKE_OC_CRONJOB_LAST="2025-01-02T02:00:00Z", FAKE_OC_CRONJOB_ACTIVE="train-28929720")
    rc, out, err = cluster.verb(capsys, "status", dep)
    assert rc == 0, err
    lines = out.splitlines()
    i = lines.index("Schedule train: daily at 03:00 Europe/Berlin")
    assert lines[i + 1].startswith("  last run  2025-01-02 03:00 CET (") and lines[i + 1].endswith(" ago), running: train-28929720")
    assert re.fullmatch(r"  next run  \d{4}-\d\d-\d\d 03:00 CES?T \(in \d+[hm]\)", lines[i + 2]), lines[i + 2]


def test_status_lines_of_a_cronjob():
    now = dt.datetime(2025, 1, 2, 12, 0, tzinfo=dt.timezone.utc)
    cronjob = {"metadata": {"name": "train"}, "spec": {"schedule": "0 3 * * *", "timeZone": "Etc/UTC"},
               "status": {"lastScheduleTime": "2025-01-02T03:00:00Z", "lastSuccessfulTime": "2025-01-02T03:00:00Z"}}
    assert status_lines(cronjob, now) == ["Schedule train: daily at 03:00 UTC",
                                          "  last run  2025-01-02 03:00 UTC (9h ago), succeeded",
                                          "  next run  2025-01-03 03:00 UTC (in 15h)"]
    cronjob["status"] = {"lastScheduleTime": "2025-01-02T03:00:00Z", "lastSuccessfulTime": "2024-12-31T03:00:00Z"}
    assert status_lines(cronjob, now)[1] == "  last run  2025-01-02 03:00 UTC (9h ago); last success 2024-12-31 03:00 UTC (2d ago)"
    cronjob["spec"]["suspend"] = True
    cronjob["status"] = {}
    assert status_lines(cronjob, now) == ["Schedule train: daily at 03:00 UTC (suspended: spec.suspend is true)",
                                          "  last run  none yet"]
    edited = {"metadata": {"name": "train"}, "spec": {"schedule": "@every 1h"}, "status": {}}
    assert status_lines(edited, now) == ["Schedule train: '@every 1h'", "  last run  none yet"]


def test_a_scheduled_run_is_the_newest_job_when_it_started_last(cluster, capsys):
    dep = cluster.job("train", "application.execution.schedule=@daily")
    cluster.seed(dep)
    jobs = []
    for name, when in (("train-251130-120000-abcd", "2025-11-30T12:00:00Z"), ("train-29405440", "2025-12-01T00:00:00Z"),
                       ("train-251201-090000-ef01", "2025-12-01T09:00:00Z")):
        jobs.append({"apiVersion": "batch/v1", "kind": "Job",
                     "metadata": {"name": name, "creationTimestamp": when,
                                  "labels": {"app.kubernetes.io/instance": "train", "app.kubernetes.io/component": "job"}},
                     "spec": {"template": {"metadata": {"labels": {}}, "spec": {}}}})
    subprocess.run(["oc", "create", "-f", "-"], input=yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": jobs}),
                   text=True, check=True, capture_output=True, env=cluster.env | {"HOME": str(cluster.root)})
    from wizard.ops.base import Operation
    from wizard.ops.jobs import job_name

    ctx = Operation.load(dep, dry_run=False)
    assert job_name(ctx, None) == "train-251201-090000-ef01"  # not the scheduled one, whose name sorts last
    assert job_name(ctx, "train-29405440") == "train-29405440"  # a scheduled run's name is taken as it is
    assert job_name(ctx, "251130-120000-abcd") == "train-251130-120000-abcd"


def test_a_pod_running_its_steps_shows_them_as_init():
    pod = {"metadata": {"name": "train-29405440-x"}, "status": {"phase": "Pending", "initContainerStatuses": [
        {"name": "app", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
        {"name": "eval", "state": {"running": {}}}],
        "containerStatuses": [{"name": "promote", "state": {"waiting": {"reason": "PodInitializing"}}}]}}
    assert diagnose.started(pod) and diagnose.phase(pod) == "Init:1/2"
    waiting = {"metadata": {"name": "p"}, "status": {"phase": "Pending", "initContainerStatuses": [
        {"name": "app", "state": {"waiting": {"reason": "PodInitializing"}}}]}}
    assert not diagnose.started(waiting) and diagnose.phase(waiting) == "Pending"


def test_a_run_the_cronjob_starts_is_listed_watched_and_logged_like_a_submitted_one(cluster, capsys):
    dep = cluster.job("train", "application.execution.schedule=@daily", "experiment.promote.to=llm")
    assert cluster.verb(capsys, "deploy", dep)[0] == 0
    got = subprocess.run(["oc", "get", "cronjob", "train", "-o", "json"], env=cluster.env, capture_output=True, text=True,
                         check=True)
    template = yaml.safe_load(got.stdout)["spec"]["jobTemplate"]
    run = {"apiVersion": "batch/v1", "kind": "Job",  # what the CronJob controller creates at 00:00
           "metadata": {"name": "train-29405440", "creationTimestamp": "2025-12-01T00:00:00Z",
                        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "train", "uid": "u"}],
                        **template["metadata"]},
           "spec": template["spec"]}
    subprocess.run(["oc", "create", "-f", "-"], input=yaml.safe_dump(run), env=cluster.env, capture_output=True, text=True,
                   check=True)
    rc, out, err = cluster.verb(capsys, "jobs", dep)
    assert rc == 0, err
    (row,) = [line for line in out.splitlines() if line.startswith("train-29405440")]
    assert row.split()[1] == "Running" and row.rstrip().endswith("--lr 0.1")
    cluster.reset()
    rc, out, err = cluster.verb(capsys, "logs", dep)  # the newest job: the scheduled run; its training's logs
    assert rc == 0, err
    assert [c["argv"] for c in cluster.calls() if c["argv"][0] == "logs"] == [
        ["logs", "--namespace=team-a", "job/train-29405440", "-c", "app"]]
    rc, out, err = cluster.verb(capsys, "watch", dep, "train-29405440", "--no-logs")
    assert rc == 0, err
    assert "train-29405440 succeeded" in out


def test_leaving_job_mode_in_the_dialogue_drops_the_schedule():
    from wizard.questions import QUESTIONS

    (mode,) = [q for q in QUESTIONS if q.key == "application.execution.mode"]
    answers = {"application": {"name": "train", "execution": {"mode": "job", "schedule": "@daily", "timezone": "Europe/Berlin"}}}
    mode.store(answers, "auto_start")
    assert answers["application"]["execution"] == {"mode": "auto_start"}
    validate(answers, source="answers")  # valid again: a schedule is for jobs only
    plain = {"application": {"name": "train"}}
    mode.store(plain, "manual")
    assert "schedule" not in plain["application"].get("execution", {})


def test_a_member_who_may_not_create_roles_is_told_which_role_it_takes(cluster, capsys):
    dep = cluster.job("train", "application.execution.schedule=@daily", "experiment.promote.to=llm")
    cluster.set(FAKE_OC_FORBID="apply:Role")
    rc, out, err = cluster.verb(capsys, "deploy", dep)
    assert rc != 0
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert line == ("error: cannot apply the manifests: alice may not create roles in team-a (ask the project's admin for "
                    "the admin role: oc adm policy add-role-to-user admin alice -n team-a)")
    assert "Traceback" not in err


def test_the_promote_step_as_rendered_promotes_with_no_more_than_its_role_allows(tmp_path, monkeypatch):
    """The promote container of the CronJob, its command and environment as rendered, run against
    a real HTTPS server on loopback standing in for the Kubernetes API (tests/test_promote.py's),
    with the token, CA and namespace where the projected volume puts them: it promotes, and every
    request it makes is one the rendered Role allows, which allows nothing else."""
    from conftest import ROOT
    from test_promote import BEST, TOKEN, Api, env_of, sample_runs

    c = Cluster(tmp_path, monkeypatch)
    train = c.job("train", "resources.storage.models.enabled=true", "application.execution.schedule=@daily",
                  "experiment.promote.to=llm", "experiment.promote.metric=val_loss")
    llm = c.server("llm", "resources.storage.models.enabled=true")
    volume = tmp_path / "volume"
    sample_runs(volume / "train")
    manifests = train / "manifests"
    pod = yaml.safe_load((manifests / "cronjob.yaml").read_text())["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (step,) = pod["containers"]
    role = yaml.safe_load((manifests / "role-promote.yaml").read_text())
    config = tmp_path / "config.yaml"  # the ConfigMap's config.yaml, mounted at /etc/mlshift in the pod
    config.write_text(yaml.safe_load((manifests / "configmap.yaml").read_text())["data"]["config.yaml"])
    api = Api(tmp_path / "api", yaml.safe_load((llm / "manifests" / "deployment.yaml").read_text()))
    (mount,) = [m for m in step["volumeMounts"] if m["name"] == "api-token"]
    (volume_spec,) = [v for v in pod["volumes"] if v["name"] == "api-token"]
    assert sorted(s.get("path") or s.get("items", [{}])[0].get("path") for src in volume_spec["projected"]["sources"]
                  for s in src.values()) == sorted(p.name for p in api.sa.iterdir())  # token, ca.crt, namespace
    try:
        fields = {"metadata.namespace": "team-a", "metadata.name": "train-29405440-q8w2r",
                  "metadata.labels['batch.kubernetes.io/job-name']": "train-29405440"}
        env = {e["name"]: e["value"] if "value" in e else fields[e["valueFrom"]["fieldRef"]["fieldPath"]] for e in step["env"]}
        argv = step["command"]
        assert argv[:3] == ["python3", "-m", "runtime"]
        args = [str(config) if w == "/etc/mlshift/config.yaml" else w for w in argv[3:]]
        done = subprocess.run([sys.executable, "-m", "runtime", *args, "--results", str(volume / "train" / "results"),
                               "--service-account", str(api.sa)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                              env={**os.environ, **env, **api.env()})
        assert done.returncode == 0, done.stderr
        assert mount["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"  # where it looked by default
        allowed = {(verb, resource, name) for rule in role["rules"] for verb in rule["verbs"]
                   for resource in rule["resources"] for name in rule["resourceNames"]}
        made = {({"GET": "get", "PATCH": "patch"}[r["method"]], *r["path"].split("/")[-2:]) for r in api.requests}
        assert made == allowed == {("get", "deployments", "llm"), ("patch", "deployments", "llm")}
        assert all(r["auth"] == f"Bearer {TOKEN}" for r in api.requests)
        assert env_of(api.deployment)["RUNTIME_MODEL"] == f"/models/train/{BEST}"
    finally:
        api.close()
