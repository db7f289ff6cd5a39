"""The schedule of a job deployment on the cluster: what deploy says and removes, what status shows.

deploy applies the CronJob (and the promote step's ServiceAccount, Role and RoleBinding) with the
other objects that run beside the jobs, and removes the ones config.yaml no longer asks for (here:
which kinds), found by their labels (component ``schedule``), in its one request for all that runs
beside the jobs (deploy.prune_unasked): a schedule taken out of config.yaml must stop starting runs.
The Jobs a removed CronJob started are kept (``--cascade=orphan``): a run going on finishes, and its
Job expires as a submitted one does. status reads the CronJob as the cluster has it: its schedule,
its last run and the next one.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from .. import cron
from ..blueprint import Blueprint
from .base import Operation

COMPONENT = "schedule"
# The kinds a project member without the admin role may not delete (nor have made).
MEMBERS_MAY_NOT = ("rolebindings", "roles")


def unasked(blueprint: Blueprint) -> list[str]:
    """The kinds of the schedule's objects that config.yaml does not ask for, which deploy removes:
    the CronJob when there is no schedule (with ``--cascade=orphan``: the runs it started go on, and
    expire as submitted ones do), the promote step's identity (its ServiceAccount, Role and
    RoleBinding) when there is no promote step; none when the whole pipeline is configured."""
    if blueprint.promote_account:
        return []
    return ([] if blueprint.schedule else ["cronjobs"]) + ["rolebindings", "roles", "serviceaccounts"]


def say_ready(ctx: Operation) -> None:
    """deploy's line about the schedule, after the objects are applied."""
    blueprint = ctx.blueprint
    if not blueprint.schedule:
        return
    steps = ", then ".join(step.what for step in blueprint.scheduled_run.schedule_steps)
    ctx.say(f"Scheduled: {blueprint.schedule_words}, the CronJob {blueprint.cronjob_name} starts a run: {steps}.")
    ctx.say(f"Its last and next run: {ctx.script('status.sh')}; its runs: {ctx.script('list-jobs.sh')}")


# --------------------------------------------------------------------------- status
def when(stamp: str | None) -> dt.datetime | None:
    """A Kubernetes timestamp (2025-11-30T03:00:00Z) as an aware datetime; None when there is none."""
    if not stamp:
        return None
    try:
        return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None


def span(seconds: float) -> str:
    """A duration the way status shows ages: 45s, 12m, 5h, 3d."""
    secs = int(abs(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{secs}s"


def shown(when: dt.datetime, zone: dt.tzinfo) -> str:
    local = when.astimezone(zone)
    return local.strftime("%Y-%m-%d %H:%M ") + (local.tzname() or "")


def status_lines(cronjob: dict[str, Any], now: dt.datetime | None = None) -> list[str]:
    """A CronJob as status shows it: its schedule in words, its last run and its next."""
    now = now or dt.datetime.now(dt.timezone.utc)
    spec, st = cronjob.get("spec") or {}, cronjob.get("status") or {}
    name = (cronjob.get("metadata") or {}).get("name", "?")
    text, tz_name = str(spec.get("schedule") or ""), spec.get("timeZone")
    try:
        parsed = cron.parse(text)
        zone = cron.zone(tz_name)
    except (ValueError, KeyError, OSError):  # edited on the cluster into something this tool does not read
        parsed, zone = None, dt.timezone.utc
    label = None if not tz_name or tz_name in ("UTC", "Etc/UTC") else tz_name
    words = parsed.words(label) if parsed else f"'{text}'" + (f" ({tz_name})" if tz_name else "")
    lines = [f"Schedule {name}: {words}" + (" (suspended: spec.suspend is true)" if spec.get("suspend") else "")]
    last, ok = when(st.get("lastScheduleTime")), when(st.get("lastSuccessfulTime"))
    active = [a.get("name", "?") for a in st.get("active") or []]
    if last:
        line = f"  last run  {shown(last, zone)} ({span((now - last).total_seconds())} ago)"
        if active:
            line += f", running: {', '.join(active)}"
        elif ok and ok >= last:
            line += ", succeeded"
        elif ok:
            line += f"; last success {shown(ok, zone)} ({span((now - ok).total_seconds())} ago)"
        lines.append(line)
    else:
        lines.append("  last run  none yet")
    if parsed and not spec.get("suspend"):
        upcoming = parsed.next_times(now, zone)
        if upcoming:
            lines.append(f"  next run  {shown(upcoming[0], zone)} (in {span((upcoming[0] - now).total_seconds())})")
    return lines
