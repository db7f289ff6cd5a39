"""What the wizard shows before and after writing: the summary of a config, the answers that
changed, and the same answers as a command without questions (replayed before it is shown).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .config import DERIVED, Config, pods_sharing_volume
from .errors import ConfigError
from .loader import MISSING, Answers, chosen_answers, enclosing_sections, flatten, get_path, is_follows_comment, validate
from .questions import show_parameters


def describe_app(config: Config) -> str:
    app, inf = config.application, config.inference
    argv = " ".join(app.execution.argv()) if app.execution.arguments else ""
    if app.type == "model_server":
        tp = f", tensor parallel {inf.tensor_parallel_size}" if inf.engine == "vllm" else ""
        return f"included {inf.engine} server for {inf.model}{tp}"
    if app.type == "batch_inference":
        return f"included batch inference ({inf.engine}) with {inf.model}: {config.batch.input} -> {config.batch.output}"
    if app.type == "single_file":
        return f"python {app.source.path} {argv}".rstrip()
    if app.type == "directory":
        return f"python {app.source.path}/{app.source.entry_point} {argv}".rstrip()
    return f"{app.source.command} {argv}".rstrip()


MODE_WORDS = {
    "auto_start": "auto-start: starts with the pod and keeps running",
    "job": "job: one Job per submission",
    "manual": "manual: an idle pod to exec into",
}


def summary_lines(config: Config, name: str, target: Path, *, force: bool, old: Config | None) -> list[str]:
    from .blueprint import ROUTE_NAMESPACE_ROOM, Blueprint
    from .render import plan_writes, render_files

    plan = Blueprint(config, name)
    res, inf, exp = config.resources, config.inference, config.experiment
    lines = ["", "Summary", f"  Application  {config.name}: {describe_app(config)}",
             f"  Runs as      {MODE_WORDS[config.application.execution.mode]}"]
    nodes = f" x {config.deployment.num_nodes} nodes" if config.multi_node else ""
    gpu = f"{res.gpus} GPU{'s' if res.gpus != 1 else ''}" + (f" ({res.gpu_product})" if res.gpus and res.gpu_product else "")
    lines.append(f"  Resources    {gpu}, {res.cpu} CPU, {res.memory} memory, {res.shm_size} shared memory{nodes}; "
                 f"{res.storage.size} workspace volume ({res.storage.access_mode})")
    if "resources.storage.access_mode" in config.derived_paths:
        lines.append(f"  Volume       ReadWriteMany in {res.storage.storage_class}, the cluster profile's class for it: "
                     f"{pods_sharing_volume(config).why} share it (it follows them)")
    store = res.storage.models
    if store.enabled:
        cls = f" in {store.storage_class}" if store.storage_class else ""
        extra = (", the hub's cache on it" if store.hf_cache else "") + (", offline (HF_HUB_OFFLINE)" if store.offline else "")
        lines.append(f"  Models       store {store.claim} ({store.size}, {store.access_mode}{cls}) at {store.mount}, shared by the "
                     f"namespace's deployments; this application's models in {plan.models_root}{extra}")
        if store.access_mode == "ReadWriteOnce":
            lines.append("  Note         the model store is ReadWriteOnce: every pod that mounts it, of every deployment naming it, "
                         "must run on one node (ReadWriteMany needs a class that offers it, e.g. the cluster profile's rwx_storage_class)")
    if exp.eval_watcher.enabled:
        ew = exp.eval_watcher
        lines.append(f"  Eval         {plan.eval_name} evaluates each model saved in {plan.models_root} on workspace/{ew.prompts} "
                     f"every {ew.every}s; {plan.eval_output}/eval/index.html compares them")
        if plan.eval_affinity:
            lines.append(f"               it runs on the training pods' node (the {' and '.join(plan.volumes_read_write_once)} "
                         "is ReadWriteOnce), so it starts with the first job")
    if config.serves:
        scale = (f"{inf.autoscaling.min_replicas}-{inf.autoscaling.max_replicas} replicas (autoscaled)"
                 if inf.autoscaling.enabled else f"{inf.replicas} replica{'s' if inf.replicas != 1 else ''}")
        route = (f"Route (HTTPS, {plan.route_path} only)" if plan.route and plan.route_path else
                 "Route (HTTPS, every path)" if plan.route else "no Route (port-forward)")
        key = f", API keys in Secret {inf.api_key_secret}" if inf.api_key_secret else ", no API key"
        lines.append(f"  Serving      port {inf.port}, {route}, {scale}{key}")
        if plan.runs_server and plan.most_replicas:  # what a change costs (Blueprint.strategy, docs/rollouts.md)
            drain = f"drain of up to {inf.drain_timeout} s"
            if plan.strategy["type"] == "Recreate":
                lines.append(f"  Rollout      one replica: a change stops the server (its {drain}), then starts the new one "
                             "(Recreate): no service until that one has loaded the model")
            else:
                many = f"up to {plan.most_replicas}" if plan.hpa else str(plan.most_replicas)
                lines.append(f"  Rollout      {many} replicas: a change replaces them one at a time, with no extra pod "
                             f"(RollingUpdate); each takes its {drain} + the model's load, while the others serve")
        if plan.route and inf.route.public:
            lines.append("  OPEN ROUTE   inference.route.public: anyone who can reach the OpenShift router can use the model, "
                         "without a key")
        elif plan.api_keys_secret and not config.uses_runtime and not config.runs_vllm:
            lines.append(f"  Keys         your server checks them itself: one file per key in {plan.api_keys_mount} "
                         "(RUNTIME_API_KEYS_DIR); mlshift cannot enforce them for it")
    if exp.tracking.enabled:
        tr = exp.tracking
        extra = (f", entity {tr.entity}" if tr.entity else "") + (f", tags {', '.join(tr.tags)}" if tr.tags else "")
        lines.append(f"  Tracking     {tr.backend}, project {tr.project}{extra}")
    if exp.sweep is not None and exp.sweep.parameters:
        size, cap = exp.sweep.size, exp.sweep.max_runs
        if exp.sweep.method != "grid":
            count = f"up to {cap} runs"
        else:
            count = f"the first {cap:,} of {size:,} combinations" if cap and cap < size else f"{size:,} combinations"
        lines.append(f"  Sweep        {exp.sweep.method} over {show_parameters(exp.sweep.parameters)} "
                     f"({count}, {exp.parallelism} at once)")
    if plan.schedule:
        steps = ", then ".join(step.what for step in plan.scheduled_run.schedule_steps)
        lines.append(f"  Schedule     {plan.schedule_words} (CronJob {plan.cronjob_name}), one run at a time: {steps}")
        if plan.promote_to:
            lines.append(f"               the promote step alone gets a token: ServiceAccount {plan.promote_account} may get and "
                         f"patch Deployment {plan.promote_to}, nothing else")
    lines.append(f"  Cluster      {config.deployment.cluster}, namespace "
                 f"{config.deployment.namespace or '(the current oc project)'}; image "
                 f"{'built on the cluster from ' + str(config.image.base) if config.image.build else plan.image}")
    for what, plain, actual in plan.shortened_names:
        lines.append(f"  Name         {what} {actual} (shortened from {plain} to fit Kubernetes' limits)")
        if what == "Route" and not plan.namespace:
            lines.append(f"               its host {actual}-<namespace> fits a namespace of up to {ROUTE_NAMESPACE_ROOM} "
                         "characters; set deployment.namespace to size it for yours")
    if plan.secrets:
        names = ", ".join(f"{s['name']} ({s['key']}{', optional' if s['required'] == 'no' else ''})" for s in plan.secrets)
        lines.append(f"  Secrets      {names}: you create them (commands printed at the end); no value is asked for or stored")
    if plan.api_keys_secret:
        lines.append(f"  {'Secrets' if not plan.secrets else '':<13}{plan.api_keys_secret} (API keys): deploy creates it with "
                     "a random key, scripts/api-key.sh prints it")
    if target.joinpath("config.yaml").is_file() and _has_own_comments(target / "config.yaml"):
        lines.append("  Note         config.yaml is written again from these answers; the comments you added to it are not kept")
    if old is not None:
        changes = answer_changes(old, config)
        lines.append("  Answers      " + ("unchanged" if not changes else f"{len(changes)} changed:"))
        lines += [f"                 {c}" for c in changes]
    reports = plan_writes(target, render_files(config, name, with_config=True), force=force)
    if not target.exists():
        groups: dict[str, int] = {}
        for r in reports:
            top = r.path.split("/")[0] + "/" if "/" in r.path else r.path
            groups[top] = groups.get(top, 0) + 1
        listed = ", ".join(k if n == 1 and not k.endswith("/") else f"{k} ({n})" for k, n in groups.items())
        lines.append(f"  Files        {len(reports)} to create in {target.name}/: {listed}")
    else:
        moving = [r for r in reports if r.status != "unchanged"]
        same = len(reports) - len(moving)
        lines.append(f"  Files        {len(moving)} to write, {same} unchanged" + (":" if moving else ""))
        for r in moving:
            lines.append(f"                 {r.status:<9} {r.path}")
        kept = [r.path for r in reports if r.status == "kept"]
        if kept:
            lines.append(f"  Edited       you changed {', '.join(kept)}: yours stay as they are, the new version")
            lines.append("               is written beside each as <file>.new (--force overwrites instead)")
    lines.append("")
    return lines


def _has_own_comments(path: Path) -> bool:
    """Whether config.yaml holds comments the wizard did not write (they would be lost)."""
    from .loader import SCHEMA_COMMENT

    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return False
    ours = {SCHEMA_COMMENT.split("{")[0].strip(), "# Written by mlshift"}
    for i, line in enumerate(lines):
        if not line.lstrip().startswith("#") or any(line.startswith(o) for o in ours) or is_follows_comment(line):
            continue
        if _SECTION_HEADING.match(line) and _heading_of_ours(lines, i):
            continue  # "# source:" above the derived values of a section commented out whole
        return True
    return False


_SECTION_HEADING = re.compile(r"^( *)# ( *)[A-Za-z_][A-Za-z0-9_]*:$")


def _heading_of_ours(lines: list[str], i: int) -> bool:
    m = _SECTION_HEADING.match(lines[i])
    if m is None or i + 1 >= len(lines):
        return False
    nxt = lines[i + 1]
    deeper = f"{m.group(1)}# {m.group(2)}  "
    return nxt.startswith(deeper) and (is_follows_comment(nxt) or _heading_of_ours(lines, i + 1))


def answer_changes(old: Config, new: Config) -> list[str]:
    before, after = flatten(old.model_dump(mode="json")), flatten(new.model_dump(mode="json"))
    out = []
    for path in list(after) + [p for p in before if p not in after]:
        a, b = before.get(path, MISSING), after.get(path, MISSING)
        if a != b:
            show = lambda x: "(none)" if x in (MISSING, None) else json.dumps(x) if not isinstance(x, str) else x  # noqa: E731
            out.append(f"{path}: {show(a)} -> {show(b)}")
    return out


# --------------------------------------------------------------------------- the same, without questions
def _set_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def equivalent_sets(config: Config, name: str) -> tuple[str | None, list[str]] | None:
    """The shortest ``--preset``/``--set`` answers that give ``config`` again, the same values
    derived, checked by replaying them as ``new`` would (None when no such answers were found)."""
    from .presets import PRESETS

    want = config.model_dump(mode="json")
    explicit = flatten(chosen_answers(config))
    best: tuple[str | None, list[str]] | None = None
    for preset in [None, *(p.name for p in PRESETS)]:
        start = Answers(name, preset=preset)
        try:
            base_cfg = validate(start.data, source="preset")
        except ConfigError:
            continue
        base = flatten(base_cfg.model_dump(mode="json"))
        sets = []
        for d in DERIVED:  # a value the preset gives that the answers leave to follow
            if d.path in config.derived_paths and start.origin(d.path) == "preset":
                sets.append(f"{d.path}=")
        for path, value in explicit.items():
            if path in base_cfg.derived_paths:  # the preset leaves it to follow; the answers chose it
                if value is not None:
                    sets.append(f"{path}={_set_text(value)}")
            elif path in base:
                if base[path] != value:
                    sets.append(f"{path}={_set_text(value)}")
            elif value is None:
                if any(p.startswith(path + ".") for p in base):
                    sets.append(f"{path}=")
            else:
                default = _sub_default(path)
                if default is MISSING or default != value:
                    sets.append(f"{path}={_set_text(value)}")
        try:
            replay = validate(start.replace(sets=tuple(sets)).data, source="replay")
        except ConfigError:
            continue
        if replay.model_dump(mode="json") != want or replay.derived_paths != config.derived_paths:
            continue
        if best is None or len(sets) < len(best[1]):
            best = (preset, sets)
    return best


def _sub_default(path: str) -> Any:
    """The default of a field inside an optional section that is absent in the base (the sweep)."""
    for _section, rest, model in enclosing_sections(path):
        try:
            return get_path(model().model_dump(mode="json"), rest)
        except Exception:  # noqa: BLE001 - a section with required fields has no default
            return MISSING
    return MISSING


def equivalent_command(config: Config, name: str, *, deployments_dir: Path | None = None, prog: str = "python -m wizard") -> str:
    import shlex

    found = equivalent_sets(config, name)
    words = [*prog.split(), "new", name]
    if deployments_dir is not None:
        words += ["--deployments-dir", str(deployments_dir)]
    if found is None:  # config.yaml itself holds every answer
        words += ["--answers", str(Path(deployments_dir or "deployments") / name / "config.yaml")]
        return " ".join(shlex.quote(w) for w in words)
    preset, sets = found
    if preset:
        words += ["--preset", preset]
    for s in sets:
        words += ["--set", s]
    if not preset and not sets:
        words.append("--defaults")
    return " ".join(shlex.quote(w) for w in words)
