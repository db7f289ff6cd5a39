"""Closed by default: nothing a served deployment exposes outside the cluster answers without a key.

The config (a Route derives its key Secret; inference.route.public opens it), the manifests (the
Secret mounted as a folder of keys, vLLM's one key from the environment, the Route limited to
/v1), deploy and api-key.sh against the recording oc (a key travels on stdin, never in an
argument, a file or the output), and, end to end, what a caller outside the cluster reaches: a
real included server on loopback behind a stand-in router that applies the rendered Route's rule
as OpenShift's router does.
"""

from __future__ import annotations

import http.client
import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from fake_oc.harness import Cluster  # noqa: E402

from conftest import EXAMPLES, run_wizard  # noqa: E402
from wizard.config import Config, route_passes  # noqa: E402
from wizard.loader import validate  # noqa: E402
from wizard.render import render_files  # noqa: E402
from wizard.summary import summary_lines  # noqa: E402
from wizard.validate import check_manifest_text  # noqa: E402

KEY_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # 32 random bytes, URL-safe base64 without padding
SERVER = {"application": {"type": "model_server", "name": "llm"},
          "inference": {"enabled": True, "engine": "transformers", "model": "tiny"},
          "deployment": {"namespace": "team-a"}}
# What a server of ours or vLLM's answers besides the API (the probes, metrics, docs, vLLM's utility
# and admin endpoints): none of it may pass the Route.
INSIDE_ONLY = ["/", "/health", "/ready", "/metrics", "/docs", "/redoc", "/openapi.json", "/tokenize", "/detokenize",
               "/invocations", "/pause", "/resume", "/is_paused", "/version", "/ping", "/load", "/pooling", "/classify",
               "/score", "/rerank", "/update_weights", "/collective_rpc", "/server_info", "/v1beta/models", "/v10",
               "/inference/v1/generate", "/v2/embed", "/V1/models", "/api/v1/models", "/metrics/v1"]
API = ["/v1", "/v1/", "/v1/models", "/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/v1/responses/abc/cancel"]


def config(**sections) -> Config:
    data = json.loads(json.dumps(SERVER))
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return validate(data, source="test")


def manifests(cfg: Config) -> dict[str, tuple[str, dict]]:
    return {rel.removeprefix("manifests/"): (text, yaml.safe_load(text))
            for rel, (text, _) in render_files(cfg, cfg.name).items() if rel.startswith("manifests/")}


def container(objs: dict[str, tuple[str, dict]]) -> dict:
    return objs["deployment.yaml"][1]["spec"]["template"]["spec"]["containers"][0]


def router_regexp(host: str, path: str | None) -> re.Pattern:
    """The OpenShift router's rule for one Route (openshift/router, GenerateRouteRegexp), matched
    against HAProxy's ``base``: the Host header and the raw path up to the query."""
    path = path or ""
    if not path.rstrip("/"):
        path_re, sub_re = "", "(/.*)?"
    elif path.endswith("/"):
        path_re, sub_re = re.escape(path), "(.*)?"
    else:
        path_re, sub_re = re.escape(path), "(/.*)?"
    return re.compile("^" + re.escape(host) + r"\.?" + "(:[0-9]+)?" + path_re + sub_re + "$")


def passes(route: dict, request_path: str, host: str = "llm-api-team-a.apps.example.com") -> bool:
    return bool(router_regexp(host, route["spec"].get("path")).match(host + request_path.split("?", 1)[0]))


# --------------------------------------------------------------------------- the config
def test_a_route_derives_its_key_secret_and_only_public_opens_it():
    c = config()
    assert c.inference.api_key_secret == "llm-api-keys" and "inference.api_key_secret" in c.derived_paths
    assert config(inference={"api_key_secret": None}).inference.api_key_secret == "llm-api-keys"  # emptying it does not open it
    assert config(inference={"api_key_secret": ""}).inference.api_key_secret == "llm-api-keys"
    assert config(inference={"route": {"public": True}}).inference.api_key_secret is None
    assert config(inference={"route": {"enabled": False}}).inference.api_key_secret is None  # the cluster only
    given = config(inference={"api_key_secret": "team-keys"})
    assert given.inference.api_key_secret == "team-keys" and "inference.api_key_secret" not in given.derived_paths
    job = validate({"application": {"name": "train", "execution": {"mode": "job"}}}, source="test")
    assert job.inference.api_key_secret is None and job.inference.route.path is None
    # an existing config that names its Secret keeps it
    example = yaml.safe_load((EXAMPLES / "llama-server.yaml").read_text())
    example["application"]["name"] = "llama"
    assert validate(example, source="example").inference.api_key_secret == "llama-api-key"


@pytest.mark.parametrize("sets, message", [
    (["inference.route.public=true", "inference.api_key_secret=llm-key"],
     "inference.route.public: true opens the Route to anyone without a key, but inference.api_key_secret names one (llm-key)"),
    (["inference.route.path=/v2"], "inference.route.path: /v2 does not pass inference.endpoint /v1/completions"),
    (["inference.route.path=/v1/../metrics"], "is not a Route path such as /v1"),
])
def test_contradictions_are_one_line_errors_and_write_nothing(tmp_path, sets, message):
    args = ["new", "llm", "--defaults", "--deployments-dir", str(tmp_path), "--set", "application.type=model_server",
            "--set", "inference.enabled=true", "--set", "inference.engine=transformers", "--set", "inference.model=m"]
    for s in sets:
        args += ["--set", s]
    r = run_wizard(*args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len([line for line in r.stderr.splitlines() if line.startswith("error")]) == 1
    assert not (tmp_path / "llm").exists()


def test_route_path_follows_the_endpoint_at_a_segment_boundary():
    assert config().inference.route.path == "/v1"
    assert config(inference={"endpoint": "/predict"}).inference.route.path == "/predict"
    assert config(inference={"endpoint": "/api/v2/generate"}).inference.route.path == "/api"
    assert config(inference={"route": {"path": "/"}}).inference.route.path == "/"
    assert route_passes("/v1", "/v1/models") and route_passes("/v1", "/v1") and not route_passes("/v1", "/v1beta")
    assert route_passes("/v1/", "/v1/models") and not route_passes("/v1/", "/v1") and route_passes("/", "/metrics")


def test_summary_says_who_holds_the_keys_and_shouts_when_the_route_is_open(tmp_path):
    keyed = "\n".join(summary_lines(config(), "llm", tmp_path / "llm", force=False, old=None))
    assert "Route (HTTPS, /v1 only)" in keyed and "API keys in Secret llm-api-keys" in keyed
    assert "llm-api-keys (API keys): deploy creates it with a random key, scripts/api-key.sh prints it" in keyed
    assert "OPEN ROUTE" not in keyed
    open_ = "\n".join(summary_lines(config(inference={"route": {"public": True}}), "llm", tmp_path / "llm", force=False, old=None))
    assert "OPEN ROUTE   inference.route.public: anyone who can reach the OpenShift router can use the model" in open_
    assert ", no API key" in open_
    own = config(application={"type": "single_file", "name": "llm"}, inference={"enabled": True})
    text = "\n".join(summary_lines(own, "llm", tmp_path / "llm", force=False, old=None))
    assert "your server checks them itself: one file per key in /etc/mlshift/api-keys (RUNTIME_API_KEYS_DIR)" in text


def test_the_wizard_proposes_the_key_secret(tmp_path):
    pytest.importorskip("pexpect")
    from test_wizard_dialogue import CLEAR, ENTER, Wizard

    w = Wizard(tmp_path, "chat", "--preset", "transformers-server")
    w.press("Name").type("GPUs per pod", "0").press("Model")
    w.shows("Secret with the API keys clients must send")
    w.shows("chat-api-keys")  # the proposal, in the answer field
    w.press("", CLEAR + ENTER)  # an empty answer keeps following the Route: still closed
    w.press("Namespace")
    w.see("chat-api-keys (API keys): deploy creates it with a random key")
    assert w.finish() == 0
    assert "api_key_secret" not in w.config()["inference"] and w.follows("api_key_secret", "chat-api-keys")
    assert w.resolved().inference.api_key_secret == "chat-api-keys"
    assert "scripts/api-key.sh" in w.text and "--from-literal=api-key" not in w.text


# --------------------------------------------------------------------------- the manifests
def test_the_pod_reads_the_keys_as_files_and_never_as_a_value():
    objs = manifests(config())
    for rel, (text, _) in objs.items():
        assert check_manifest_text(text) == [], rel
    c = container(objs)
    env = {e["name"]: e for e in c["env"]}
    assert env["RUNTIME_API_KEYS_DIR"] == {"name": "RUNTIME_API_KEYS_DIR", "value": "/etc/mlshift/api-keys"}
    assert "RUNTIME_API_KEY" not in env and "VLLM_API_KEY" not in env  # the folder holds every key
    mount = next(m for m in c["volumeMounts"] if m["name"] == "api-keys")
    assert mount == {"name": "api-keys", "mountPath": "/etc/mlshift/api-keys", "readOnly": True}
    spec = objs["deployment.yaml"][1]["spec"]["template"]["spec"]
    volume = next(v for v in spec["volumes"] if v["name"] == "api-keys")
    assert volume == {"name": "api-keys", "secret": {"secretName": "llm-api-keys", "optional": False}}
    # nested in the config mount, which the kubelet allows for ConfigMap, Secret and projected volumes
    assert any(m["mountPath"] == "/etc/mlshift" for m in c["volumeMounts"])


def test_vllm_gets_the_api_key_from_the_secret_through_its_environment():
    for cfg in (config(inference={"engine": "vllm"}, resources={"gpus": 1}),  # vLLM's own image
                config(inference={"engine": "vllm"}, resources={"gpus": 1}, image={"build": True}),  # the included server on vLLM
                config(application={"type": "custom_command", "name": "llm", "source": {"command": "vllm serve m"}},
                       resources={"gpus": 1})):
        objs = manifests(cfg)
        c = container(objs)
        env = {e["name"]: e for e in c["env"]}
        assert env["VLLM_API_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "llm-api-keys", "key": "api-key"}}
        assert "RUNTIME_API_KEYS_DIR" not in env and not any(m["name"] == "api-keys" for m in c["volumeMounts"])
        assert "llm-api-keys" not in " ".join(c["command"])  # never on the command line
        for rel, (text, _) in objs.items():
            assert check_manifest_text(text) == [], rel


def test_an_open_route_refers_to_no_key_and_a_job_gets_none():
    c = container(manifests(config(inference={"route": {"public": True}})))
    assert not any("API_KEY" in e["name"] for e in c["env"]) and not any(m["name"] == "api-keys" for m in c["volumeMounts"])
    job = validate({"application": {"name": "train", "execution": {"mode": "job"}}, "inference": {"api_key_secret": "k"}},
                   source="test")
    spec = yaml.safe_load(render_files(job, "train")["manifests/job.yaml"][0])["spec"]["template"]["spec"]
    assert not any(e["name"] in ("RUNTIME_API_KEYS_DIR", "VLLM_API_KEY", "RUNTIME_API_KEY") for e in spec["containers"][0]["env"])
    assert not any(v["name"] == "api-keys" for v in spec["volumes"])  # a job serves nothing


def test_the_route_passes_exactly_the_api():
    objs = manifests(config())
    route = objs["route.yaml"][1]
    assert route["spec"]["path"] == "/v1" and route["spec"]["tls"]["termination"] == "edge"
    reachable = {p for p in INSIDE_ONLY + API if passes(route, p)}
    assert reachable == set(API)
    assert all(passes(route, p + "?stream=true") for p in API)
    assert not passes(route, "/v1%2F..%2Fmetrics")  # an encoded slash is no segment boundary to the router
    # the probes go to the pod's port, never through the Route, and their paths stay inside
    c = container(objs)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["port"] == "http" and not passes(route, c[probe]["httpGet"]["path"])
    # what the scripts send goes through: the endpoint and the model list
    cfg = config()
    assert passes(route, cfg.inference.endpoint) and passes(route, "/v1/models")
    # a server of one's own with another endpoint: its first segment; "/" passes everything (no spec.path)
    own = manifests(config(inference={"endpoint": "/predict"}))["route.yaml"][1]
    assert own["spec"]["path"] == "/predict" and passes(own, "/predict") and not passes(own, "/metrics")
    everything = manifests(config(inference={"route": {"path": "/"}}))["route.yaml"][1]
    assert "path" not in everything["spec"] and passes(everything, "/metrics")


# --------------------------------------------------------------------------- deploy and api-key.sh
@pytest.fixture
def cluster(tmp_path, monkeypatch):
    return Cluster(tmp_path, monkeypatch)


def created_key(cluster: Cluster) -> str:
    made = [c for c in cluster.calls() if c["argv"][0] == "create" and c["stdin"] and '"Secret"' in c["stdin"]]
    assert len(made) == 1
    secret = json.loads(made[0]["stdin"])
    return secret["stringData"]["api-key"]


def assert_nowhere(cluster: Cluster, key: str, *texts: str, folder: Path | None = None) -> None:
    """The key is in no argument of any oc call, no file given to oc, no output, no file of the folder."""
    for call in cluster.calls():
        assert not any(key in word for word in call["argv"]), call["argv"]
        assert not any(key in text for text in call["files"].values())
    for text in texts:
        assert key not in text
    if folder is not None:
        for path in folder.rglob("*"):
            if path.is_file():
                assert key.encode() not in path.read_bytes(), path


def test_deploy_creates_the_key_secret_on_stdin_then_leaves_it(cluster, capsys):
    dep = cluster.server("llm")
    rc, out, err = cluster.verb(capsys, "deploy", dep)
    assert rc == 0, err
    calls = cluster.calls()
    seq = [c["argv"][0] for c in calls]
    assert calls[1]["argv"] == ["get", "--namespace=team-a", "secret", "hf-token", "llm-api-keys", "-o", "name",
                                "--ignore-not-found"]
    create = seq.index("create")
    assert calls[create]["argv"] == ["create", "--namespace=team-a", "-f", "-"]
    assert create < seq.index("apply")  # before any pod could mount it
    secret = json.loads(calls[create]["stdin"])
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "llm-api-keys" and secret["type"] == "Opaque"
    assert secret["metadata"]["labels"]["app.kubernetes.io/instance"] == "llm"
    key = created_key(cluster)
    assert KEY_RE.match(key)
    assert_nowhere(cluster, key, out, err, folder=dep)
    assert "Created the Secret llm-api-keys with a random API key" in out and "api-key.sh" in out
    # deployed again: the Secret exists, its key stays
    cluster.reset()
    rc, out, err = cluster.verb(capsys, "deploy", dep)
    assert rc == 0, err
    assert "create" not in cluster.verbs() and "Created the Secret" not in out


def test_deploy_leaves_an_existing_key_secret_and_a_dry_run_shows_no_key(cluster, capsys):
    dep = cluster.server("llm", "inference.api_key_secret=team-keys")
    cluster.set(FAKE_OC_SECRETS="team-keys")
    rc, out, err = cluster.verb(capsys, "deploy", dep)
    assert rc == 0, err
    assert "create" not in cluster.verbs()
    cluster.reset()
    rc, out, err = cluster.verb(capsys, "deploy", dep, "--dry-run")
    assert rc == 0, err
    assert cluster.calls() == []  # a dry run calls nothing
    assert "oc create --namespace=team-a -f - <<'MLSHIFT_STDIN_END'" in out and '"api-key": "<random key>"' in out
    assert not re.search(r"[A-Za-z0-9_-]{43}", out)


def test_a_refused_secret_is_one_line_and_nothing_is_applied(cluster, capsys):
    dep = cluster.server("llm")
    cluster.set(FAKE_OC_FORBID="create:Secret")
    rc, out, err = cluster.verb(capsys, "deploy", dep)
    assert rc == 3
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "cannot create the API key Secret llm-api-keys" in lines[0] and "Traceback" not in err
    assert "apply" not in cluster.verbs()


def test_api_key_sh_prints_lists_adds_and_rotates_keys_never_in_an_argument(cluster, capsys):
    dep = cluster.server("llm")
    assert cluster.verb(capsys, "deploy", dep)[0] == 0
    key = created_key(cluster)
    cluster.reset()
    r = cluster.script(dep, "api-key.sh")
    assert r.returncode == 0, r.stderr
    assert r.stdout == key + "\n" and r.stderr == ""
    assert cluster.argvs()[-1] == ["get", "--namespace=team-a", "secret", "llm-api-keys", "-o", "jsonpath={.data.api-key}"]
    r = cluster.script(dep, "api-key.sh", "--new", "ci.bot")
    assert r.returncode == 0, r.stderr
    second = r.stdout.strip()
    assert KEY_RE.match(second) and second != key
    patch = cluster.calls()[-1]
    assert patch["argv"] == ["patch", "--namespace=team-a", "secret", "llm-api-keys", "--type=merge", "--patch-file=/dev/stdin"]
    assert json.loads(patch["stdin"])["data"].keys() == {"ci.bot"}
    assert "takes it up without a restart" in r.stderr
    assert """oc patch secret llm-api-keys -n team-a --type=json -p '[{"op":"remove","path":"/data/ci.bot"}]'""" in r.stderr
    assert cluster.script(dep, "api-key.sh", "--list").stdout.split() == ["api-key", "ci.bot"]
    assert cluster.script(dep, "api-key.sh", "--name", "ci.bot").stdout.strip() == second  # a dotted name, read back
    r = cluster.script(dep, "api-key.sh", "--rotate", "api-key")
    assert r.returncode == 0, r.stderr
    third = r.stdout.strip()
    assert KEY_RE.match(third) and third not in (key, second)
    assert cluster.script(dep, "api-key.sh").stdout.strip() == third
    for k in (key, second, third):
        assert_nowhere(cluster, k, folder=dep)


@pytest.mark.parametrize("args, message", [
    (["--new", "api-key"], "already has a key 'api-key'"),
    (["--new", ".hidden"], "'.hidden' is not a key name"),
    (["--new", "a/b"], "'a/b' is not a key name"),
    (["--rotate", ""], "'' is not a key name"),  # an unset variable in a script: not "no flag"
    (["--rotate", "nobody"], "has no key 'nobody' to rotate"),
    (["--name", "nobody"], "has no key 'nobody'"),
    (["--new", "x", "--list"], "not allowed with argument"),
])
def test_api_key_sh_refusals_are_one_line(cluster, capsys, args, message):
    dep = cluster.server("llm")
    assert cluster.verb(capsys, "deploy", dep)[0] == 0
    cluster.reset()
    r = cluster.script(dep, "api-key.sh", *args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr and r.stdout == ""
    assert "patch" not in cluster.verbs()


def test_api_key_sh_before_deploy_for_vllm_and_for_an_open_route(cluster, capsys):
    dep = cluster.server("llm")
    r = cluster.script(dep, "api-key.sh")
    assert r.returncode == 2 and "the Secret llm-api-keys does not exist in team-a yet" in r.stderr and "deploy.sh" in r.stderr
    vllm = cluster.new("big", "application.type=model_server", "inference.enabled=true", "inference.engine=vllm",
                       "inference.model=m", "resources.gpus=1", "deployment.namespace=team-a")
    cluster.set(FAKE_OC_SECRETS="big-api-keys")
    r = cluster.script(vllm, "api-key.sh", "--new", "ci")
    assert r.returncode == 2 and "vLLM checks one key, api-key" in r.stderr
    r = cluster.script(vllm, "api-key.sh", "--rotate", "api-key")
    assert r.returncode == 0 and "oc rollout restart deployment/big" in r.stderr
    public = cluster.server("pub", "inference.route.public=true")
    r = cluster.script(public, "api-key.sh")
    assert r.returncode == 2 and "pub asks for no API key: its Route is open (inference.route.public: true)" in r.stderr


def test_delete_keeps_the_key_secret(cluster, capsys):
    dep = cluster.server("llm")
    assert cluster.verb(capsys, "deploy", dep)[0] == 0
    cluster.reset()
    rc, out, err = cluster.verb(capsys, "delete", dep)
    assert rc == 0, err
    assert "The API key Secret llm-api-keys is kept" in out and "oc delete secret llm-api-keys" in out
    assert not any("secret" in " ".join(a).lower() for a in cluster.argvs() if a[0] == "delete")


def test_every_script_that_calls_the_server_sends_the_key(cluster, capsys):
    """test-inference.sh and benchmark-inference.sh, through a port-forward to the stand-in server,
    which records the Authorization header of every request."""
    dep = cluster.server("llm")
    assert cluster.verb(capsys, "deploy", dep)[0] == 0
    key = created_key(cluster)
    r = cluster.script(dep, "test-inference.sh")
    assert r.returncode == 0, r.stderr
    r = cluster.script(dep, "benchmark-inference.sh", "--num-requests", "2", "--concurrency", "1", "--json", timeout=120)
    assert r.returncode == 0, r.stderr
    sent = [json.loads(line) for line in (cluster.log / "requests.jsonl").read_text().splitlines()]
    assert len(sent) == 3 and all(s["auth"] == f"Bearer {key}" for s in sent)
    assert_nowhere(cluster, key, r.stdout, r.stderr)


# --------------------------------------------------------------------------- from outside, end to end
class Router:
    """A stand-in for the OpenShift router in front of one Route: a request whose ``base`` (host and
    raw path) matches the Route's rule is passed to the server as it is; any other gets the
    router's 503, as a path no Route claims does."""

    def __init__(self, route: dict, upstream: str, host: str):
        rule, target = router_regexp(host, route["spec"].get("path")), upstream.removeprefix("http://")

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _any(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not rule.match(host + self.path.split("?", 1)[0]):
                    page = b"<h1>Application is not available</h1>"
                    self.send_response(503)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    self.wfile.write(page)
                    return
                conn = http.client.HTTPConnection(target, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def request(url: str, path: str, key: str | None = None, method: str = "GET", body: dict | None = None) -> tuple[int, str]:
    target = url.removeprefix("http://")
    conn = http.client.HTTPConnection(target, timeout=120)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    data = json.dumps(body).encode() if body is not None else None
    if data is not None:
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=headers)
    resp = conn.getresponse()
    text = resp.read().decode("utf-8", "replace")
    conn.close()
    return resp.status, text


def test_from_outside_only_the_api_answers_and_only_with_a_key(cluster, capsys, tmp_path_factory, tmp_path):
    """deploy makes the key; the included server reads the Secret's keys as the kubelet mounts them
    (one file per data key); a caller outside reaches it only through the router and the Route."""
    pytest.importorskip("torch")
    from runtime_helpers import running_server, tiny_llama_path

    model = tiny_llama_path(tmp_path_factory)
    dep = cluster.server("llm", "inference.served_model_name=tiny")
    assert cluster.verb(capsys, "deploy", dep)[0] == 0
    key = created_key(cluster)
    assert cluster.script(dep, "api-key.sh", "--new", "partner").returncode == 0
    state = json.loads((cluster.log / "state.json").read_text())
    keys_dir = tmp_path / "api-keys"  # the Secret as the pod sees it at /etc/mlshift/api-keys
    keys_dir.mkdir()
    import base64

    for name, value in state["objects"]["Secret/llm-api-keys"]["data"].items():
        (keys_dir / name).write_bytes(base64.b64decode(value))
    partner = (keys_dir / "partner").read_text()
    route = yaml.safe_load((dep / "manifests" / "route.yaml").read_text())
    with running_server(model=str(model), served_model_name="tiny", max_batch_size=4, api_keys_dir=str(keys_dir)) as server:
        router = Router(route, server, "llm-api-team-a.apps.example.com")
        try:
            for path in INSIDE_ONLY:
                assert request(router.url, path, key)[0] == 503, path  # the router has no Route for it
            status, text = request(router.url, "/v1/models")
            assert status == 401, text  # through the Route, without a key
            assert request(router.url, "/v1/models", "not-the-key")[0] == 401
            for k in (key, partner):  # every data key of the Secret is a key
                status, text = request(router.url, "/v1/models", k)
                assert status == 200 and "tiny" in text
            status, text = request(router.url, "/v1/%2e%2e/metrics", key)
            assert status != 200 and "HELP" not in text  # passes the router, but it is no way to the metrics
            # the probes go to the pod itself and need no key
            for probe in ("/health", "/ready"):
                assert request(server, probe)[0] == 200
            # the scripts work through the Route (they read the key from the Secret)
            r = cluster.script(dep, "test-inference.sh", "--url", router.url, "--max-tokens", "4", timeout=300)
            assert r.returncode == 0 and "answer:" in r.stdout, r.stderr
            r = cluster.script(dep, "benchmark-inference.sh", "--url", router.url, "--num-requests", "2",
                               "--concurrency", "1", "--max-tokens", "4", "--json", timeout=300)
            assert r.returncode == 0, r.stderr
            assert json.loads(r.stdout)["successful"] == 2
        finally:
            router.close()
