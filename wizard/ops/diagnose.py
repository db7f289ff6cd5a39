"""Why a pod is not running: read from its status and the project's events, in the user's words."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable


@dataclass
class Problem:
    pod: str
    summary: str  # one line: what is wrong
    hint: str  # the next step
    fatal: bool  # waiting will not fix it

    def line(self) -> str:
        return f"{self.pod}: {self.summary} ({self.hint})"


def events_for(events: dict[str, Any] | list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    items = events.get("items", []) if isinstance(events, dict) else events
    out = [e for e in items if (e.get("involvedObject") or {}).get("name") == name]
    return sorted(out, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or e.get("firstTimestamp") or "")


def is_ready(pod: dict[str, Any]) -> bool:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    if (pod.get("status") or {}).get("phase") != "Running":
        return False
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def started(pod: dict[str, Any]) -> bool:
    """A container of the pod has run or runs: its phase is past Pending, or one of its init
    containers (a scheduled run's steps before the last) has started."""
    st = pod.get("status") or {}
    if st.get("phase") in ("Running", "Succeeded", "Failed"):
        return True
    return any((cs.get("state") or {}).get("running") or (cs.get("state") or {}).get("terminated")
               for cs in st.get("initContainerStatuses") or [])


def phase(pod: dict[str, Any]) -> str:
    """A short state like ``oc get pods`` shows: Running, Pending, ImagePullBackOff, Completed,
    Init:1/3 (its init containers: a scheduled run's steps before the last)..."""
    st = pod.get("status") or {}
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return "Terminating"
    for cs in st.get("initContainerStatuses", []) + st.get("containerStatuses", []):
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason") not in (None, "ContainerCreating", "PodInitializing"):
            return str(waiting["reason"])
        term = (cs.get("state") or {}).get("terminated")
        if term and st.get("phase") not in ("Succeeded",):
            if term.get("reason") and term.get("reason") != "Completed":
                return str(term["reason"])
    if st.get("phase") == "Succeeded":
        return "Completed"
    inits = st.get("initContainerStatuses") or []
    if st.get("phase") == "Pending" and inits and started(pod):
        done = sum(1 for cs in inits if ((cs.get("state") or {}).get("terminated") or {}).get("exitCode") == 0)
        return f"Init:{done}/{len(inits)}"
    if st.get("phase") == "Running" and not is_ready(pod):
        return "Running (not ready)"
    return str(st.get("phase") or "Unknown")


def restarts(pod: dict[str, Any]) -> int:
    return sum(int(cs.get("restartCount") or 0) for cs in (pod.get("status") or {}).get("containerStatuses", []))


_INSUFFICIENT = re.compile(r"Insufficient ([\w./-]+)")


def scheduling_hint(message: str, gpu_resource: str = "nvidia.com/gpu") -> tuple[str, str]:
    """(summary, next step) for a FailedScheduling message."""
    wanted = _INSUFFICIENT.findall(message)
    if any("gpu" in w for w in wanted):
        return (f"waiting for free GPUs: {message}",
                "it starts when GPUs free up; or ask for fewer (resources.gpus) or another GPU type (resources.gpu_product)")
    if wanted:
        return (f"no node has enough {', '.join(sorted(set(wanted)))}: {message}",
                "ask for less in config.yaml (resources.cpu / resources.memory)")
    if "readwriteoncepod" in message.lower():
        return (f"the workspace volume is in use by another pod (ReadWriteOncePod: one pod at a time): {message}",
                "it starts when that pod ends; or delete that pod")
    if "persistentvolumeclaim" in message.lower() or "unbound" in message.lower():
        return (f"the workspace volume is not ready: {message}",
                "check `oc get pvc` and resources.storage.storage_class (run status.sh)")
    if "node affinity" in message or "node selector" in message or "didn't match" in message:
        return (f"no node matches the pod's node selector: {message}",
                "check resources.gpu_product and the cluster profile (deployment.cluster) against `oc get nodes -L nvidia.com/gpu.product`")
    if "taint" in message:
        return (f"the nodes with room have taints the pod does not tolerate: {message}",
                "pick the cluster profile with the right GPU tolerations (deployment.cluster)")
    return (f"cannot be scheduled: {message}", "see `oc describe pod` for details")


_USED_BY = re.compile(r"already used by pod\(?s?\)?\s+(.+)$", re.IGNORECASE)


def volume_busy(message: str) -> str | None:
    """For a Multi-Attach error (a ReadWriteOnce volume attached to another node): where it is, in
    words, with the pods that hold it when the message names them; None for any other message."""
    if "multi-attach" not in message.lower():
        return None
    m = _USED_BY.search(message)
    pods = m.group(1).strip().rstrip(".") if m else ""
    return "it is attached to another node" + (f", in use by {pods}" if pods else "")


def pod_problems(pod: dict[str, Any], events: Any = None, *, image: str = "") -> list[Problem]:
    """What stands between this pod and running, with the next step for each."""
    name = (pod.get("metadata") or {}).get("name", "?")
    st = pod.get("status") or {}
    evs = events_for(events or {}, name)
    out: list[Problem] = []
    for cs in st.get("initContainerStatuses", []) + st.get("containerStatuses", []):
        state, last = cs.get("state") or {}, cs.get("lastState") or {}
        waiting = state.get("waiting") or {}
        reason, msg = waiting.get("reason"), (waiting.get("message") or "").strip()
        if reason in ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"):
            img = cs.get("image") or image
            out.append(Problem(name, f"cannot pull the image {img}" + (f": {msg}" if msg else ""),
                               "if the image is built here, check the build (status.sh, `oc logs -f bc/NAME`); otherwise check image.name "
                               "and the pull secret for its registry", True))
        elif reason == "CrashLoopBackOff":
            term = last.get("terminated") or {}
            code, why = term.get("exitCode"), term.get("reason")
            detail = f"exit code {code}" + (f", {why}" if why and why != "Error" else "")
            hint = ("it ran out of memory: raise resources.memory (or lower the batch size / max_model_len)"
                    if why == "OOMKilled" else "see why with: scripts/logs.sh --previous")
            out.append(Problem(name, f"keeps crashing (CrashLoopBackOff, {restarts(pod)} restarts, last {detail})", hint, True))
        elif reason in ("CreateContainerConfigError", "CreateContainerError", "RunContainerError"):
            hint = ("create the missing Secret (deploy.sh prints the command)" if "secret" in msg.lower()
                    else "see `oc describe pod " + name + "`")
            out.append(Problem(name, f"{reason}: {msg}", hint, True))
        term = state.get("terminated") or {}
        if term.get("reason") == "OOMKilled":
            out.append(Problem(name, "was killed for using more memory than resources.memory",
                               "raise resources.memory in config.yaml", True))
    if st.get("phase") == "Pending" and not out:
        for cond in st.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                msg = (cond.get("message") or "").strip()
                sched = [e for e in evs if e.get("reason") == "FailedScheduling"]
                if sched:
                    msg = (sched[-1].get("message") or msg).strip()
                summary, hint = scheduling_hint(msg)
                out.append(Problem(name, summary, hint, False))
        if not out:
            mounts = [e for e in evs if e.get("reason") in ("FailedMount", "FailedAttachVolume")]
            if mounts:
                message = mounts[-1].get("message", "").strip()
                busy = volume_busy(message)
                if busy:
                    out.append(Problem(name, f"waiting for the workspace volume: {busy} (ReadWriteOnce: "
                                             "it is mounted on one node at a time)",
                                       "it starts when those pods end (a running job holds the volume until it "
                                       "finishes), or delete them", False))
                else:
                    out.append(Problem(name, f"cannot mount a volume: {message}",
                                       "a ReadWriteOnce workspace is attached to another node's pod; wait, or delete that pod", False))
    if st.get("phase") == "Running" and not is_ready(pod) and not out:
        probes = [e for e in evs if e.get("reason") == "Unhealthy"]
        if probes:
            out.append(Problem(name, f"running, not ready yet: {probes[-1].get('message', '').strip()}",
                               "a model can take minutes to load; if probes restart it, raise inference.startup_timeout", False))
    return out


def creation_failures(events: Any, owners: Iterable[str]) -> list[str]:
    """Messages of FailedCreate events on a Job or ReplicaSet (pods refused, e.g. by a quota)."""
    names = set(owners)
    items = events.get("items", []) if isinstance(events, dict) else events
    return [str(e.get("message", "")).strip() for e in items
            if e.get("reason") == "FailedCreate" and (e.get("involvedObject") or {}).get("name") in names]


def quota_line(message: str) -> str | None:
    m = re.search(r"exceeded quota: ([^,\s]+), requested: ([^,]+), used: ([^,]+), limited: ([^\n]+)", message)
    if not m:
        return None
    q, req, used, lim = (g.strip() for g in m.groups())
    return f"the project's quota {q} refuses the pods (requested {req}, used {used}, limited {lim})"
