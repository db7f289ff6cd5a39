"""promote: the best run's model served by a serving deployment (``scripts/promote.sh``).

The runs are read as compare-experiments reads them (its sources: the records and W&B offline
runs on the workspace volume, or ``--from DIR``; by default the newest sweep's, else every run;
``--sweep ID|all``). The decision, the change and what is said of them are the runtime's
(``runtime.promote.decide``), the same that ``python -m runtime promote`` makes in a scheduled pod;
this verb does the reading and writing around it:

1. ``oc get deployment <to> -o json``: what it serves now (its ``RUNTIME_MODEL``) and the
   promotion that put it there (the annotation ``mlshift.io/promoted``);
2. one ``oc exec`` in a pod of it: which of the runs' model folders it can see;
3. the decision (``decide``): the best finished run whose folder it sees; with ``--if-better``,
   nothing more unless it beats the served one; nothing more when it serves that model already;
4. ``oc patch deployment <to> --type strategic``: the annotation and ``RUNTIME_MODEL``; the
   Deployment rolls out;
5. when the serving deployment's folder is in this checkout (``deployments/<to>/``), its
   config.yaml gets ``inference.model: <folder>`` (the rest of the file as it was) and is
   re-rendered, so that the checkout says what the cluster serves.

``--model PATH`` promotes a folder given by hand (no metric; what the undo line uses): the same
``decide``, with the model instead of the runs.
"""

from __future__ import annotations

import json
import os
import posixpath
import shlex
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.errors import UsageError
from runtime.promote import (
    MODEL_ENV,
    PROMOTE,
    PROMOTED_ANNOTATION,
    Decision,
    Served,
    Store,
    best_line,
    check_mount,
    decide,
    folder_claim,
    metric_and_goal as configured_metric_goal,
    model_folder,
    num,
    pick,
    rank,
    read_served,
    serving_container,
)
from runtime.records import Run

from ..config import check_name
from ..errors import ConfigError, UserError
from ..paths import DEFAULT_DEPLOYMENTS
from .base import Operation, warn

# Run in a pod of the serving deployment: sh -c SCRIPT mlshift-promote FOLDER...; prints the
# index of each folder that exists there.
EXISTS_SCRIPT = 'i=0; for d in "$@"; do if [ -d "$d" ]; then echo "$i"; fi; i=$((i+1)); done'


def _user(exc: UsageError) -> UserError:
    return UserError(str(exc))


def _shown(path: Path) -> str:
    """A path as the user would type it: from the current folder when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- the serving deployment's checkout
@dataclass
class Checkout:
    """The serving deployment's folder in this checkout, and its config.yaml as it will be."""

    directory: Path
    text: str  # config.yaml with the new inference.model
    served_name: str | None  # inference.served_model_name


def find_checkout(ctx: Operation, target: str) -> tuple[Path | None, str | None]:
    """The folder of the serving deployment ``target`` here (beside this deployment's folder, or
    under deployments/), and a note when one is there but cannot be used."""
    for folder in dict.fromkeys([ctx.directory.parent / target, DEFAULT_DEPLOYMENTS.resolve() / target]):
        if not (folder / "config.yaml").is_file():
            continue
        from ..deployment import load_deployment

        try:
            _, config = load_deployment(folder)
        except ConfigError as exc:
            return None, f"note: {_shown(folder)}/config.yaml is not valid ({exc}); it is not updated"
        if config.name != target:
            continue
        if config.application.type != "model_server" or not config.serves:
            return None, f"note: {_shown(folder)} is not a model_server that serves; its config.yaml is not updated"
        return folder, None
    return None, None


def prepare_checkout(folder: Path, model: str) -> Checkout:
    """config.yaml of ``folder`` with inference.model set to ``model``, checked before anything changes."""
    from ..deployment import build_config
    from ..loader import parse_yaml, set_answer_text, with_default_name

    path = folder / "config.yaml"
    label = f"{folder.name}/config.yaml"
    text = set_answer_text(path.read_text(encoding="utf-8"), "inference.model", model, label=label)
    config = build_config(with_default_name(parse_yaml(text, label), folder.name), source=label)
    return Checkout(folder, text, config.inference.served_model_name)


def write_checkout(ctx: Operation, checkout: Checkout) -> list[str]:
    """Write the new config.yaml and re-render the deployment; the files it changed."""
    from ..deployment import rerender
    from ..files import write_file

    path = checkout.directory / "config.yaml"
    write_file(checkout.directory, "config.yaml", checkout.text, stat.S_IMODE(os.lstat(path).st_mode))
    outcome = rerender(checkout.directory)
    for r in outcome.reports:
        if r.status == "kept":
            warn(f"note: you edited {_shown(checkout.directory / r.path)}; it is kept as it is "
                 f"(the version with the new model is beside it as {r.path}.new)")
    return [r.path for r in outcome.reports if r.status not in ("unchanged", "kept")]


# --------------------------------------------------------------------------- the runs
def read_runs(ctx: Operation, args, metric: str) -> tuple[list[Run], str, str]:  # type: ignore[no-untyped-def]
    """The runs to pick from (compare-experiments' sources and default choice), their title, and
    where they were read."""
    from .compare import Found, from_cluster, read_folder, select

    if args.from_dir is not None:
        if not args.from_dir.is_dir():
            raise UserError(f"--from {args.from_dir}: not a folder")
        found = Found()
        read_folder(args.from_dir, found, f"{args.from_dir}/")
        where = f"in {args.from_dir}"
    else:
        found, where = from_cluster(ctx, args.sweep, [metric])
    for note in found.notes:
        warn(note)
    runs, sweep = select(sorted(found.runs.values(), key=lambda r: r.id), args.sweep)
    title = f"sweep {sweep}" if sweep else f"the runs {where}"
    return runs, title, where


def metric_and_goal(ctx: Operation, args) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    cfg = ctx.config
    sweep = cfg.experiment.sweep
    metric, goal = configured_metric_goal(args.metric, args.goal, cfg.experiment.promote, sweep.metric if sweep else None,
                                   sweep.goal if sweep else None)
    if not metric:
        raise UserError("no metric to rank the runs by", hint="set experiment.promote.metric or experiment.sweep.metric "
                                                              "in config.yaml, or pass --metric NAME")
    return metric, goal


# --------------------------------------------------------------------------- the verb
def promote(ctx: Operation, args) -> int:  # type: ignore[no-untyped-def]
    cfg = ctx.config
    settings = cfg.experiment.promote
    target = args.to if args.to is not None else (settings.to if settings else None)
    if not target:
        raise UserError("no serving deployment to promote to",
                        hint="set experiment.promote.to in config.yaml to its application name, or pass --to NAME")
    try:
        check_name(target, "deployment name")
    except ValueError as exc:
        raise UserError(f"--to: {exc}") from None
    if target == ctx.name:
        raise UserError(f"--to {target} is this deployment; name the serving deployment (a model_server)")
    if args.model is not None:
        given = [flag for flag, on in (("--metric", args.metric), ("--goal", args.goal), ("--if-better", args.if_better),
                                       ("--from", args.from_dir), ("--sweep", args.sweep)) if on]
        if given:
            raise UserError(f"--model promotes the folder given; {', '.join(given)} choose{'s' if len(given) == 1 else ''} "
                            "among runs and do not go with it")
        model = args.model.strip()
        if not model or model.startswith((".", "~")) or any(c.isspace() for c in model):
            raise UserError(f"--model {args.model!r}: give a model folder as the serving pods see it, an absolute path "
                            "(e.g. /models/<name>/<run id>), or a hub id (org/name)")
        return by_hand(ctx, target, posixpath.normpath(model) if model.startswith("/") else model)
    metric, goal = metric_and_goal(ctx, args)
    runs, title, where = read_runs(ctx, args, metric)
    if ctx.dry_run and args.from_dir is None:
        show_dry_patch(ctx, target, "the best run's model folder")
        return 0
    if not runs:
        of = f" of sweep {args.sweep}" if args.sweep and args.sweep != "all" else ""
        raise UserError(f"no runs to promote from: no run records{of} {where}",
                        hint="a run writes its record in /workspace/<name>/results/<run id>/ (compare-experiments.sh reads them too)")
    try:
        ranked = rank(runs, metric, goal)  # the refusals (no run has the metric, none finished) before the cluster is asked
    except UsageError as exc:
        raise _user(exc) from None
    root = ctx.blueprint.models_root
    if ctx.dry_run:
        try:
            best = pick(runs, metric, goal, root)
        except UsageError as exc:
            raise _user(exc) from None
        ctx.say(best_line(best, title))
        show_dry_patch(ctx, target, best.model)
        return 0
    ctx.check_session()
    deployment = read_deployment(ctx, target)
    served = served_of(deployment, target)
    folders = [f for f in dict.fromkeys(model_folder(r, root) for r in ranked) if f]
    if folders:
        mounts_it(ctx, deployment, target, folders[0])  # else its pods see none of the folders
    seen = folders_seen(ctx, target, served, folders)
    decision = decided(ctx, deployment, target, runs, metric=metric, goal=goal, models_root=root,
                       available=None if seen is None else seen.__contains__, if_better=args.if_better, title=title)
    return change(ctx, decision)


def by_hand(ctx: Operation, target: str, folder: str) -> int:
    """--model PATH: that folder (or hub id), with no metric."""
    if ctx.dry_run:
        show_dry_patch(ctx, target, folder)
        return 0
    ctx.check_session()
    decision = decided(ctx, read_deployment(ctx, target), target, model=folder)  # its mount checked first
    if decision.action == PROMOTE and folder.startswith("/"):
        seen = folders_seen(ctx, target, decision.served, [folder])
        if seen is not None and folder not in seen:
            raise UserError(f"{folder} does not exist in {target}'s pods", hint="give a model folder on the volume they mount")
    return change(ctx, decision)


def decided(ctx: Operation, deployment: dict[str, Any], target: str, runs: list[Run] | None = None,
            **how: Any) -> Decision:
    """The runtime's decision (``runtime.promote.decide``) with this deployment's claims, namespace
    and script; its refusals as one-line errors."""
    try:
        return decide(deployment, target, runs or [], app=ctx.name, store=store_of(ctx),
                      workspace_claim=ctx.blueprint.workspace_claim, where=ctx.where, script=ctx.script("promote.sh"),
                      **how)
    except UsageError as exc:
        raise _user(exc) from None


def change(ctx: Operation, decision: Decision) -> int:
    """Say the decision; when it promotes, patch the serving Deployment, then bring its folder in
    this checkout along."""
    for note in decision.notes:
        warn(note)
    for line in decision.lines:
        ctx.say(line)
    if decision.action != PROMOTE:
        return 0
    target, folder = decision.target, decision.model
    place, note = find_checkout(ctx, target)
    if note:
        warn(note)
    checkout = prepare_checkout(place, folder) if place is not None else None  # checked before the cluster changes
    ctx.oc.call("patch", ["deployment", target, "--type=strategic", "-p", json.dumps(decision.patch, separators=(",", ":"))],
                what=f"patch the serving deployment {target}")
    ctx.say(decision.promoted)
    if checkout is not None:
        changed = write_checkout(ctx, checkout)
        ctx.say(f"Updated {_shown(checkout.directory)}/config.yaml: inference.model: {folder}"
                + (f" (re-rendered: {', '.join(changed)})" if changed else ""))
        if not checkout.served_name:
            warn(f"note: clients ask for {target}'s model by name, and it has no inference.served_model_name: the name "
                 f"is now {folder}; set served_model_name to keep one name across promotions")
    else:
        ctx.say(f"No folder of {target} in this checkout: set its inference.model to {folder} where you keep it, "
                "or its next deploy puts its old model back.")
    if decision.undo_line:
        ctx.say(decision.undo_line)
    return 0


# --------------------------------------------------------------------------- the cluster
def store_of(ctx: Operation) -> Store | None:
    """This deployment's model store (resources.storage.models), when it is on."""
    store = ctx.blueprint.model_store
    return Store(store.claim, store.mount) if store else None


def claim_of(ctx: Operation, folder: str) -> str | None:
    """The claim that holds ``folder``: the model store's, or this deployment's workspace volume."""
    return folder_claim(folder, ctx.name, store_of(ctx), ctx.blueprint.workspace_claim)


def mounts_it(ctx: Operation, deployment: dict[str, Any], target: str, folder: str) -> None:
    """Refuse (one line) unless the serving deployment mounts the volume ``folder`` is on."""
    try:
        check_mount(deployment, target, serving_container(deployment, target), folder, claim_of(ctx, folder))
    except UsageError as exc:
        raise _user(exc) from None


def read_deployment(ctx: Operation, target: str) -> dict[str, Any]:
    return ctx.oc.get_json(["deployment", target], what=f"read the serving deployment {target}")


def served_of(deployment: dict[str, Any], target: str) -> Served:
    try:
        return read_served(deployment, target)
    except UsageError as exc:
        raise _user(exc) from None


def folders_seen(ctx: Operation, target: str, served: Served, folders: list[str]) -> set[str] | None:
    """Which of ``folders`` a pod of the serving deployment sees, in one ``oc exec``; None when no
    pod could be asked (then the best run's folder is taken as it is, with a note)."""
    if not folders:
        return set()
    ans = ctx.oc.call("exec", [f"deployment/{target}", "-c", served.container, "--", "/bin/sh", "-c", EXISTS_SCRIPT,
                               "mlshift-promote", *folders], check=False, what=f"look for the model folders in {target}'s pods")
    if not ans.ok:
        from .oc import first_line

        warn(f"note: could not look for the model folders in {target}'s pods ({first_line(ans.err) or ans.returncode}); "
             "the best run's folder is taken as it is")
        return None
    indexes = {int(w) for w in ans.out.split() if w.isdigit()}
    return {f for i, f in enumerate(folders) if i in indexes}


def show_dry_patch(ctx: Operation, target: str, model: str) -> None:
    ctx.oc.call("get", ["deployment", target, "-o", "json"])
    ctx.oc.call("exec", [f"deployment/{target}", "-c", "<its container>", "--", "/bin/sh", "-c", EXISTS_SCRIPT,
                         "mlshift-promote", "<the runs' model folders>"])
    ctx.oc.note("then, unless --if-better finds the served model as good:")
    ctx.oc.call("patch", ["deployment", target, "--type=strategic", "-p",
                          f"<the annotation {PROMOTED_ANNOTATION} and {MODEL_ENV}={model}>"])
    ctx.oc.note(f"and deployments/{target}/config.yaml, when it is in this checkout: inference.model: {shlex.quote(model)}")


# --------------------------------------------------------------------------- deploy of a serving deployment
def promoted_note(ctx: Operation) -> str | None:
    """When the serving Deployment on the cluster serves a model promoted to it (on the cluster, e.g.
    by a schedule) other than config.yaml's, the note that says a deploy puts config.yaml's back.
    One ``oc get``; None in a dry run, or when there is nothing to say."""
    ans = ctx.oc.call("get", ["deployment", ctx.name, "-o", "json", "--ignore-not-found"],
                      what="look for a model promoted to the Deployment")
    if ctx.dry_run or not ans.out.strip():
        return None
    try:
        deployment = json.loads(ans.out)
        served = read_served(deployment, ctx.name)
    except (ValueError, UsageError):
        return None
    p, configured = served.promoted, ctx.config.inference.model
    if p is None or p.get("model") == configured:
        return None
    by = (f"run {p.get('run')}, {p.get('metric')} {num(p.get('value'))}" if p.get("metric") else "chosen by hand")
    return (f"note: {ctx.name} serves the model promoted to it on the cluster, {p['model']} ({by}, at {p.get('at') or '?'}), "
            f"and config.yaml says {configured}: this deploy puts {configured} back. To keep the promoted one, set "
            f"inference.model: {p['model']} in config.yaml and deploy again")
