"""Running ``oc``: captured calls through openshift-client, streamed ones as child processes.

Every command goes through :class:`Oc`, which in a dry run prints it (as a line a user could
paste into a shell) instead of running it, and which turns a refused request into an
:class:`~wizard.errors.OcError` whose one-line message names the next step.

openshift-client runs ``oc`` with its output captured to files, which suits requests that
answer once (``get``, ``apply``, ``create``, ``delete``). Commands that stream to the terminal
for as long as they run (``logs -f``, ``start-build --follow``, ``port-forward``, ``rsh``,
``rsync``) are started directly with the same arguments, so that the user sees them live.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import OcError, OcFailure, UserError

OC = "oc"
DEFAULT_TIMEOUT = 120  # seconds for one captured request
HEREDOC_END = "MLSHIFT_STDIN_END"
LOGIN_HINT = "log in with the command from the web console (your name, top right: Copy login command), then re-run"


@dataclass
class Answer:
    """What one ``oc`` run returned."""

    command: list[str]
    returncode: int
    out: str
    err: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def json(self) -> Any:
        if not self.out.strip():
            return {}
        try:
            return json.loads(self.out)
        except ValueError:
            raise UserError(f"oc answered something that is not JSON to: {shown(self.command)}") from None


def shown(command: Sequence[str]) -> str:
    return shlex.join(["oc", *command[1:]])


class Oc:
    """One deployment's way of talking to the cluster.

    ``namespace`` is passed as ``--namespace`` to namespaced requests (None: the current
    project). ``dry_run`` prints each command instead of running it and answers ``dry_answer``.
    """

    def __init__(self, namespace: str | None, *, dry_run: bool = False, out=None):
        self.namespace = namespace
        self.dry_run = dry_run
        self.out = out or sys.stdout
        self.calls = 0
        self._checked_binary = False

    # ------------------------------------------------------------------ building commands
    def argv(self, verb: str, args: Sequence[str], *, namespaced: bool = True) -> list[str]:
        cmd = [OC, verb]
        if namespaced and self.namespace:
            cmd.append(f"--namespace={self.namespace}")
        return cmd + [str(a) for a in args]

    def _print(self, cmd: list[str], stdin: str | None = None) -> None:
        if stdin is None:
            print(shown(cmd), file=self.out)
        else:
            print(f"{shown(cmd)} <<'{HEREDOC_END}'", file=self.out)
            print(stdin.rstrip("\n"), file=self.out)
            print(HEREDOC_END, file=self.out)
        self.out.flush()

    def note(self, text: str) -> None:
        """A comment line in a dry run's output (so that it stays a runnable script)."""
        if self.dry_run:
            print(f"# {text}", file=self.out)

    def _need_binary(self) -> None:
        if self._checked_binary:
            return
        if shutil.which(OC) is None:
            raise UserError("the OpenShift CLI 'oc' is not on PATH",
                            hint="download it from the web console (? menu: Command line tools) and put it on PATH")
        self._checked_binary = True

    # ------------------------------------------------------------------ captured requests
    def call(self, verb: str, args: Sequence[str] = (), *, stdin: str | None = None, namespaced: bool = True,
             check: bool = True, timeout: int = DEFAULT_TIMEOUT, dry_answer: str = "", what: str | None = None) -> Answer:
        """Run one request through openshift-client and return its answer.

        With ``check``, a non-zero exit raises :class:`OcError` with a message built from oc's
        stderr; ``what`` says in the user's words what was being done ("create the job").
        """
        cmd = self.argv(verb, args, namespaced=namespaced)
        if self.dry_run:
            self._print(cmd, stdin)
            return Answer(cmd, 0, dry_answer, "")
        self._need_binary()
        import openshift_client as oc

        self.calls += 1
        with oc.timeout(timeout):
            # The namespace is already in the arguments (so that what a dry run prints is what
            # runs); openshift-client adds nothing of its own.
            result = oc.invoke(verb, cmd[2:], stdin_str=stdin, no_namespace=True, auto_raise=False)
        action = result.actions()[-1]
        if action.timeout:
            raise OcError(f"oc did not answer within {timeout}s: {shown(cmd)}",
                          OcFailure(cmd, -1, action.err or ""),
                          hint="check the network or VPN to the cluster, then re-run")
        answer = Answer(cmd, int(action.status), action.out or "", action.err or "")
        if check and not answer.ok:
            raise explain(answer, what=what, namespace=self.namespace)
        return answer

    def private(self, verb: str, args: Sequence[str] = (), *, stdin: str | None = None, shown_stdin: str | None = None,
                check: bool = True, timeout: int = DEFAULT_TIMEOUT, dry_answer: str = "", what: str | None = None) -> Answer:
        """A request whose input or answer holds a secret value (an API key): ``oc`` runs with pipes
        for its input and output, so that no file holds the value (openshift-client passes both
        through temporary files and keeps them in its record of actions), and no argument does
        either. A dry run prints ``shown_stdin`` (a placeholder) in place of the input."""
        cmd = self.argv(verb, args)
        if self.dry_run:
            self._print(cmd, shown_stdin if stdin is not None else None)
            return Answer(cmd, 0, dry_answer, "")
        self._need_binary()
        self.calls += 1
        try:
            done = subprocess.run(cmd, input=stdin if stdin is not None else "", capture_output=True, text=True,
                                  errors="replace", timeout=timeout)
        except subprocess.TimeoutExpired:
            raise OcError(f"oc did not answer within {timeout}s: {shown(cmd)}", OcFailure(cmd, -1, ""),
                          hint="check the network or VPN to the cluster, then re-run") from None
        answer = Answer(cmd, done.returncode, done.stdout, done.stderr)
        if check and not answer.ok:  # from oc's stderr alone: its output may hold the value
            raise explain(Answer(cmd, done.returncode, "", done.stderr), what=what, namespace=self.namespace)
        return answer

    def get_json(self, args: Sequence[str], *, namespaced: bool = True, what: str | None = None,
                 dry_answer: Any = None) -> Any:
        dry = json.dumps(dry_answer if dry_answer is not None else {"kind": "List", "items": []})
        return self.call("get", [*args, "-o", "json"], namespaced=namespaced, what=what, dry_answer=dry).json()

    # ------------------------------------------------------------------ streamed commands
    def _start(self, verb: str, args: Sequence[str], namespaced: bool) -> list[str] | None:
        """The command to run with the terminal attached; None in a dry run (it is printed)."""
        cmd = self.argv(verb, args, namespaced=namespaced)
        if self.dry_run:
            self._print(cmd)
            return None
        self._need_binary()
        self.calls += 1
        sys.stdout.flush()
        return cmd

    def stream(self, verb: str, args: Sequence[str] = (), *, namespaced: bool = True, check: bool = True,
               what: str | None = None) -> int:
        """Run a command with the terminal attached (its output shows as it comes)."""
        cmd = self._start(verb, args, namespaced)
        if cmd is None:
            return 0
        try:
            proc = subprocess.run(cmd, stderr=subprocess.PIPE, text=True, errors="replace")
        except KeyboardInterrupt:
            raise
        if proc.stderr:
            sys.stderr.write(proc.stderr)
        if check and proc.returncode != 0:
            raise explain(Answer(cmd, proc.returncode, "", proc.stderr or ""), what=what, namespace=self.namespace)
        return proc.returncode

    def interactive(self, verb: str, args: Sequence[str] = (), *, namespaced: bool = True) -> int:
        """Run a command that owns the terminal (a shell in a pod); its exit code is returned.

        A SIGTERM to us (a job killed by pid, a supervisor stopping it) is passed on, so oc does
        not go on alone (a port-forward holding its port); Ctrl-C reaches both already."""
        cmd = self._start(verb, args, namespaced)
        if cmd is None:
            return 0
        proc: subprocess.Popen | None = None
        stopping = False

        def stop(*_: Any) -> None:
            nonlocal stopping
            stopping = True
            if proc is not None:
                proc.terminate()

        main = threading.current_thread() is threading.main_thread()
        # the handler is in place before oc starts: a SIGTERM in between would leave oc on its own
        previous = signal.signal(signal.SIGTERM, stop) if main else None
        try:
            proc = subprocess.Popen(cmd)
            if stopping:  # the signal came while oc was being started
                proc.terminate()
            return proc.wait()
        except KeyboardInterrupt:
            if proc is not None:
                proc.terminate()
                proc.wait()
            raise
        finally:
            if main:
                signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)

    def background(self, verb: str, args: Sequence[str] = (), *, namespaced: bool = True) -> subprocess.Popen | None:
        """Start a long-running command (a port-forward) and return the process; None in a dry run."""
        cmd = self._start(verb, args, namespaced)
        if cmd is None:
            return None
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                text=True, errors="replace")


# --------------------------------------------------------------------------- what oc's errors mean
_QUOTA = re.compile(r"exceeded quota: ([^,\s]+), requested: ([^,]+), used: ([^,]+), limited: ([^\n]+)")
_FORBIDDEN_USER = re.compile(r'User "([^"]+)" cannot (\w+) resource "([^"]+)"(?: in API group "[^"]*")?(?: in the namespace "([^"]+)")?')
_NS_MISSING = re.compile(r'(?:namespaces|projects(?:\.project\.openshift\.io)?) "([^"]+)" not found')
_NOT_FOUND = re.compile(r'Error from server \(NotFound\):(?: [^:]*:)? ([\w.]+) "([^"]+)" not found')
_NO_RESOURCE = re.compile(r"the server doesn't have a resource type \"?([\w.]+)\"?|no matches for kind \"(\w+)\"")


def first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def explain(answer: Answer, *, what: str | None = None, namespace: str | None = None) -> OcError:
    """Turn a failed oc run into a one-line error that says what to do next."""
    err = answer.err or answer.out
    failure = OcFailure(answer.command, answer.returncode, err)
    doing = f"cannot {what}: " if what else ""
    low = err.lower()
    ns = namespace or "the current project"
    if ("must be logged in" in low or "unauthorized" in low or "missing or incomplete configuration" in low
            or "provide credentials" in low or "token has expired" in low or "no configuration has been provided" in low):
        return OcError(f"{doing}not logged in to the cluster (or the login expired)", failure, hint=LOGIN_HINT)
    if "unable to connect to the server" in low or "no such host" in low or "connection refused" in low or "i/o timeout" in low:
        return OcError(f"{doing}cannot reach the cluster: {first_line(err)}", failure,
                       hint="check the network or VPN, and that `oc whoami --show-server` is the right cluster")
    m = _QUOTA.search(err)
    if m:
        quota, requested, used, limited = (g.strip() for g in m.groups())
        return OcError(f"{doing}the project's quota {quota} is exceeded (requested {requested}, used {used}, limited {limited})",
                       failure, hint="ask for less in config.yaml (resources.*), delete finished jobs or idle deployments, "
                                     "or ask the project's admin for more (oc describe quota)")
    m = _NS_MISSING.search(err)
    if m:
        return OcError(f"{doing}project {m.group(1)!r} does not exist (or you cannot see it)", failure,
                       hint=f"create it with `oc new-project {m.group(1)}`, or set deployment.namespace in config.yaml to one of `oc projects`")
    if "forbidden" in low:
        m = _FORBIDDEN_USER.search(err)
        if m:
            user, verb, resource, where = m.groups()
            where = where or ns
            # Roles and their bindings (a schedule's promote step) are the admin role's, not the edit role's.
            role = "admin" if resource in ("roles", "rolebindings") else "edit"
            return OcError(f"{doing}{user} may not {verb} {resource} in {where}", failure,
                           hint=f"ask the project's admin for the {role} role: oc adm policy add-role-to-user {role} {user} -n {where}")
        return OcError(f"{doing}the cluster refused: {first_line(err)}", failure,
                       hint="ask the project's admin for the edit role in this project")
    m = _NO_RESOURCE.search(err)
    if m:
        kind = m.group(1) or m.group(2)
        return OcError(f"{doing}this cluster has no {kind} resource", failure,
                       hint="its operator is not installed; turn the feature off in config.yaml (e.g. monitoring.service_monitor: false)")
    m = _NOT_FOUND.search(err)
    if m:
        return OcError(f"{doing}{m.group(1)} {m.group(2)!r} not found in {ns}", failure,
                       hint="deploy first (scripts/deploy.sh), or check the name with scripts/status.sh")
    if "already exists" in low:
        return OcError(f"{doing}{first_line(err)}", failure, hint="pick another name, or delete the old one first")
    line = first_line(err) or f"exit code {answer.returncode}"
    return OcError(f"{doing}oc {answer.command[1]} failed: {line}", failure, hint=f"the command was: {shown(answer.command)}")
