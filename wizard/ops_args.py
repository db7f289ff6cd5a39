"""Arguments of the operations verbs (what the generated scripts pass through).

Each verb's flags map onto one function in :mod:`wizard.ops`; words after ``--`` are the
application's own arguments and reach it word for word.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not 1 or more")
    return value


def _port(text: str) -> int:
    value = _positive(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (1-65535)")
    return value


def _words_after_double_dash(p: argparse.ArgumentParser, dest: str) -> None:
    """Everything after the first ``--`` goes to ``dest`` as it is, wherever the options are.

    argparse alone would give the positional list its (empty) value as soon as it sees the
    deployment folder, and then refuse the words after ``--``.
    """
    parse = p.parse_known_args

    def parse_known_args(args=None, namespace=None):  # type: ignore[no-untyped-def]
        words = list(sys.argv[1:] if args is None else args)
        tail: list[str] = []
        if "--" in words:
            i = words.index("--")
            words, tail = words[:i], words[i + 1:]
        ns, extras = parse(words, namespace)
        if tail:
            setattr(ns, dest, list(getattr(ns, dest, None) or []) + tail)
        return ns, extras

    p.parse_known_args = parse_known_args  # type: ignore[method-assign]


def _app_arguments(p: argparse.ArgumentParser, what: str, dest: str = "arguments", metavar: str = "ARG") -> None:
    p.add_argument(dest, nargs="*", metavar=metavar,
                   help=f"after --: {what}, word for word (quotes, $ and newlines are kept as they are)")
    _words_after_double_dash(p, dest)


def _sets(p: argparse.ArgumentParser, scope: str) -> None:
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help=f"override a config.yaml value for {scope} only, e.g. resources.gpus=2 (repeatable; config.yaml is not changed)")


def _forwarded(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", metavar="URL", help="send to this base URL instead of a port-forward (e.g. an already running port-forward)")
    p.add_argument("--route", action="store_true", help="send through the application's Route instead of a port-forward")


def add_operation_arguments(verb: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true",
                   help="print the oc commands instead of running them; change nothing")
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    if verb == "deploy":
        p.add_argument("--build", choices=("auto", "always", "never"), default="auto",
                       help="build the image: when its inputs changed or it is missing (auto, the default), always, or never")
        p.add_argument("--no-upload", action="store_true", help="do not copy workspace/ to the workspace volume")
        p.add_argument("--no-wait", action="store_true", help="return after applying; do not wait until ready")
        p.add_argument("--timeout", type=_positive, metavar="SECONDS",
                       help="how long to wait until ready (default: inference.startup_timeout + 10 minutes for servers, 15 minutes otherwise)")
        p.epilog = "Safe to re-run: objects are applied, the image is rebuilt only when its inputs changed."
    elif verb == "delete":
        p.add_argument("--volumes", action="store_true", help="also delete the workspace volume and every file on it")
        p.add_argument("--jobs", action="store_true", help="also delete the submitted jobs")
        p.add_argument("--yes", action="store_true", help="do not ask before deleting volumes")
    elif verb == "logs":
        p.add_argument("job", nargs="?", metavar="JOB", help="job name or submission id (job mode; default: the newest)")
        p.add_argument("-f", "--follow", action="store_true", help="keep following new lines")
        p.add_argument("--tail", type=int, metavar="N", help="only the last N lines")
        p.add_argument("--since", metavar="DURATION", help="only lines newer than this, e.g. 10m or 2h")
        p.add_argument("-p", "--previous", action="store_true", help="the logs of the previous (crashed) container")
    elif verb == "submit":
        _sets(p, "this submission")
        p.add_argument("--batch", type=Path, metavar="FILE",
                       help="submit one job per item of this YAML list, all in one request; an item is a list of KEY=VALUE "
                            "or a mapping with set: [KEY=VALUE, ...] and args: [word, ...]")
        p.add_argument("--repeat", type=_positive, default=1, metavar="N", help="submit N identical jobs (e.g. seeds read from the job name)")
        p.add_argument("--no-arguments", action="store_true", help="run without the configured arguments")
        _app_arguments(p, "arguments replacing application.execution.arguments for this submission")
        p.epilog = ("examples:\n"
                    "  submit-job.sh --set application.execution.arguments='--lr 0.01'\n"
                    "  submit-job.sh -- --lr 0.01 --note 'any text, $(kept) as is'\n"
                    "  submit-job.sh --batch runs.yaml     # runs.yaml: [[resources.gpus=1], [resources.gpus=2]]")
    elif verb == "watch":
        p.add_argument("job", nargs="?", metavar="JOB", help="job name or submission id (default: the newest)")
        p.add_argument("--no-logs", action="store_true", help="follow the state only, not the logs")
        p.add_argument("--timeout", type=_positive, metavar="SECONDS", help="give up watching after this long (the job goes on)")
        p.epilog = "Exit code: 0 when the job succeeded, 1 when it failed."
    elif verb == "jobs":
        p.add_argument("--sweep", metavar="ID", help="only the jobs of this sweep")
    elif verb == "run-app":
        _app_arguments(p, "arguments replacing application.execution.arguments")
    elif verb == "exec":
        _app_arguments(p, "the command to run (default: an interactive shell)", dest="command", metavar="CMD")
    elif verb == "port-forward":
        p.add_argument("--port", type=_port, metavar="LOCAL", help="local port (default: the server's port, or a free one if taken)")
        p.add_argument("--remote-port", type=_port, metavar="PORT", help="port in the pod (default: inference.port)")
    elif verb == "test-inference":
        p.add_argument("--prompt", default="Say hello in one short sentence.", help="the prompt to send")
        p.add_argument("--max-tokens", type=_positive, default=64, metavar="N")
        p.add_argument("--timeout", type=_positive, default=300, metavar="SECONDS", help="how long to wait for the answer")
        _forwarded(p)
    elif verb == "bench":
        p.add_argument("--concurrency", type=_positive, default=8, metavar="N", help="requests in flight at once")
        p.add_argument("--num-requests", type=_positive, default=64, metavar="N", help="requests in all")
        p.add_argument("--max-tokens", type=_positive, default=128, metavar="N")
        p.add_argument("--stream", action="store_true", help="stream the answers (measures time to first token)")
        p.add_argument("--json", action="store_true", help="print the results as JSON")
        _forwarded(p)
    elif verb == "jupyter":
        p.add_argument("--port", type=_port, default=8888, metavar="PORT", help="port of Jupyter in the pod and, if free, here")
    elif verb == "vscode":
        p.add_argument("--port", type=_port, default=8080, metavar="PORT", help="port of code-server in the pod and, if free, here")
    elif verb == "sync":
        p.add_argument("direction", nargs="?", choices=("up", "down"), default="up",
                       help="up: workspace/ to the pod (default); down: results back here")
        p.add_argument("--remote", metavar="PATH", help="path in the pod (default: the working directory; results/ in it for down)")
        p.add_argument("--local", metavar="PATH", help="folder here (default: workspace/ for up, the deployment folder for down)")
    elif verb == "sweep":
        _sets(p, "every run of this sweep")
        p.add_argument("--max-runs", type=_positive, metavar="N", help="submit at most N runs")
        p.add_argument("--seed", type=int, metavar="N", help="random seed for a random sweep")
    elif verb == "compare":
        p.add_argument("--sweep", metavar="ID", help="the sweep to compare (default: the newest)")
        p.add_argument("--metric", action="append", metavar="NAME", help="a metric to read from the logs (repeatable)")
    elif verb == "run-local":
        p.add_argument("--host", default="127.0.0.1", help="address a server listens on (default: this machine only)")
        p.add_argument("--port", type=_port, metavar="PORT", help="port a server listens on (default: inference.port)")
        p.add_argument("--python", metavar="PYTHON", help="the Python to run a script with (default: python3 on PATH)")
        _app_arguments(p, "arguments replacing application.execution.arguments")
