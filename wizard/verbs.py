"""Every operation verb, declared once: its name, its script, what it does, its arguments and the
function that runs it. The command line (``python -m wizard VERB``), the generated scripts and
their ``--help``, and the list in ``python -m wizard --help`` all come from :data:`VERBS`.

Adding a verb is one :class:`Verb` here (with a function adding its flags, if it has any) and
the function in :mod:`wizard.ops` that runs it. This module stays light: the functions are
named, and imported only when their verb runs, so that ``python -m wizard new`` starts fast.
Words after ``--`` are the application's own arguments and reach it word for word.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
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


WORDS_AFTER_DOUBLE_DASH = "mlshift_words_after_double_dash"  # the parser's attribute: where the words after -- go


def _any_order(p: argparse.ArgumentParser) -> None:
    """Options and positionals in any order (``logs.sh -f JOB`` as ``logs.sh JOB -f``), and
    everything after the first ``--`` to the verb's application words as it is (see
    :func:`_app_arguments`), wherever the options are.

    argparse alone gives an optional positional its (empty) value as soon as it sees the
    deployment folder, and then refuses a later JOB, ``down`` or the words after ``--``; its
    intermixed parsing reads the options first and the positionals after.
    """
    plain = p.parse_known_args
    inside = False

    def parse_known_args(args=None, namespace=None):  # type: ignore[no-untyped-def]
        nonlocal inside
        if inside:  # argparse's intermixed parsing calls back in (Python < 3.13)
            return plain(args, namespace)
        words = list(sys.argv[1:] if args is None else args)
        dest = getattr(p, WORDS_AFTER_DOUBLE_DASH, None)
        tail: list[str] = []
        if dest and "--" in words:
            i = words.index("--")
            words, tail = words[:i], words[i + 1:]
        inside = True
        try:
            ns, extras = p.parse_known_intermixed_args(words, namespace)
        finally:
            inside = False
        if tail:
            setattr(ns, dest, list(getattr(ns, dest, None) or []) + tail)
        return ns, extras

    p.parse_known_args = parse_known_args  # type: ignore[method-assign]


def _app_arguments(p: argparse.ArgumentParser, what: str, dest: str = "arguments", metavar: str = "ARG") -> None:
    p.add_argument(dest, nargs="*", metavar=metavar,
                   help=f"after --: {what}, word for word (quotes, $ and newlines are kept as they are)")
    setattr(p, WORDS_AFTER_DOUBLE_DASH, dest)


def _sets(p: argparse.ArgumentParser, scope: str) -> None:
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help=f"override a config.yaml value for {scope} only, e.g. resources.gpus=2 (repeatable; config.yaml is not changed)")


def _model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="NAME",
                   help="the model name to ask for (default: inference.served_model_name or inference.model, a custom "
                        "command's --served-model-name or --model, else the first the server lists at /v1/models)")


def _forwarded(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", metavar="URL", help="send to this base URL instead of a port-forward (e.g. an already running port-forward)")
    p.add_argument("--route", action="store_true", help="send through the application's Route instead of a port-forward")


def _deploy_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--build", choices=("auto", "always", "never"), default="auto",
                   help="build the image: when its inputs changed or it is missing (auto, the default), always, or never")
    p.add_argument("--no-upload", action="store_true", help="do not copy workspace/ to the workspace volume")
    p.add_argument("--no-wait", action="store_true", help="return after applying; do not wait until ready")
    p.add_argument("--timeout", type=_positive, metavar="SECONDS",
                   help="how long to wait until ready (default: inference.startup_timeout + 10 minutes for servers, 15 minutes otherwise)")
    p.epilog = "Safe to re-run: objects are applied, the image is rebuilt only when its inputs changed."


def _delete_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--volumes", action="store_true", help="also delete the workspace volume and every file on it")
    p.add_argument("--jobs", action="store_true", help="also delete the submitted jobs")
    p.add_argument("--yes", action="store_true", help="do not ask before deleting volumes")


def _logs_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("job", nargs="?", metavar="JOB", help="job name or submission id (job mode; default: the newest)")
    p.add_argument("-f", "--follow", action="store_true", help="keep following new lines")
    p.add_argument("--tail", type=int, metavar="N", help="only the last N lines")
    p.add_argument("--since", metavar="DURATION", help="only lines newer than this, e.g. 10m or 2h")
    p.add_argument("-p", "--previous", action="store_true", help="the logs of the previous (crashed) container")


def _no_sync(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-sync", action="store_true",
                   help="run the last snapshot of workspace/ uploaded from here as it is; upload nothing "
                        "(by default what changed in workspace/ is uploaded first, as a new snapshot)")


def _submit_arguments(p: argparse.ArgumentParser) -> None:
    _sets(p, "this submission")
    p.add_argument("--batch", type=Path, metavar="FILE",
                   help="submit one job per item of this YAML list, all in one request; an item is a list of KEY=VALUE "
                        "or a mapping with set: [KEY=VALUE, ...] and args: [word, ...]")
    p.add_argument("--repeat", type=_positive, default=1, metavar="N", help="submit N identical jobs (e.g. seeds read from the job name)")
    p.add_argument("--no-arguments", action="store_true", help="run without the configured arguments")
    _no_sync(p)
    _app_arguments(p, "arguments replacing application.execution.arguments for this submission")
    p.epilog = ("examples:\n"
                "  submit-job.sh --set application.execution.arguments='--lr 0.01'\n"
                "  submit-job.sh -- --lr 0.01 --note 'any text, $(kept) as is'\n"
                "  submit-job.sh --batch runs.yaml     # runs.yaml: [[resources.gpus=1], [resources.gpus=2]]")


def _watch_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("job", nargs="?", metavar="JOB", help="job name or submission id (default: the newest)")
    p.add_argument("--no-logs", action="store_true", help="follow the state only, not the logs")
    p.add_argument("--timeout", type=_positive, metavar="SECONDS", help="give up watching after this long (the job goes on)")
    _trials(p)
    p.epilog = ("A sweep (its id, or its Job) is watched as one line of counts, not its logs.\n"
                "Exit code: 0 when the job (every trial of a sweep) succeeded, 1 when it failed.")


def _trials(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trials", action="store_true",
                   help="show each trial of a sweep (its index, run id, state, pod and parameters), not only the sweep's line")


def _jobs_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sweep", metavar="ID", help="only the jobs of this sweep")
    _trials(p)


def _status_arguments(p: argparse.ArgumentParser) -> None:
    _trials(p)


def _run_app_arguments(p: argparse.ArgumentParser) -> None:
    _app_arguments(p, "arguments replacing application.execution.arguments")


def _exec_arguments(p: argparse.ArgumentParser) -> None:
    _app_arguments(p, "the command to run (default: an interactive shell)", dest="command", metavar="CMD")


def _port_forward_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=_port, metavar="LOCAL", help="local port (default: the server's port, or a free one if taken)")
    p.add_argument("--remote-port", type=_port, metavar="PORT", help="port in the pod (default: inference.port)")


def _test_inference_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompt", default="Say hello in one short sentence.", help="the prompt to send")
    p.add_argument("--max-tokens", type=_positive, default=64, metavar="N")
    p.add_argument("--timeout", type=_positive, default=300, metavar="SECONDS", help="how long to wait for the answer")
    _model(p)
    _forwarded(p)


def _bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--concurrency", type=_positive, default=8, metavar="N", help="requests in flight at once")
    p.add_argument("--num-requests", type=_positive, default=64, metavar="N", help="requests in all")
    p.add_argument("--max-tokens", type=_positive, default=128, metavar="N")
    p.add_argument("--stream", action="store_true", help="stream the answers (measures time to first token)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    _model(p)
    _forwarded(p)


def _api_key_arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group()
    what.add_argument("--name", metavar="KEY", help="print this key instead of api-key (the one the scripts send)")
    what.add_argument("--new", metavar="NAME", help="add a key NAME with a random value to the Secret, and print it")
    what.add_argument("--rotate", metavar="NAME", help="give the key NAME a new random value, and print it (the old value stops working)")
    what.add_argument("--list", action="store_true", help="list the names of the keys, not their values")
    p.epilog = ("Every data key of the Secret inference.api_key_secret is one API key, named by its data key. The key is\n"
                "printed on standard output and nowhere else: KEY=$(scripts/api-key.sh). See docs/security.md.")


def _jupyter_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=_port, default=8888, metavar="PORT", help="port of Jupyter in the pod and, if free, here")


def _vscode_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=_port, default=8080, metavar="PORT", help="port of code-server in the pod and, if free, here")


def _sync_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("direction", nargs="?", choices=("up", "down"), default="up",
                   help="up: workspace/ to the pod (default); down: results back here")
    p.add_argument("--remote", metavar="PATH", help="path in the pod (default: the working directory; results/ in it for down)")
    p.add_argument("--local", metavar="PATH", help="folder here (default: workspace/ for up, the deployment folder for down)")


def _sweep_arguments(p: argparse.ArgumentParser) -> None:
    _sets(p, "every run of this sweep")
    p.add_argument("--max-runs", type=_positive, metavar="N", help="submit at most N runs")
    p.add_argument("--seed", type=int, metavar="N", help="random seed for a random sweep (default: experiment.sweep.seed, else a new one, shown)")
    p.add_argument("--wandb-sweep", metavar="ENTITY/PROJECT/ID",
                   help="bayes: run agents for this existing W&B sweep instead of creating one here with the W&B API")
    _no_sync(p)
    p.add_argument("--yaml", action="store_true",
                   help="with --dry-run: also print the objects (the Job, its table of trials) after the table of trials")


def _compare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sweep", metavar="ID",
                   help="the sweep (or batch) to compare (default: the newest sweep, else every run; all: every run)")
    p.add_argument("--metric", action="append", metavar="NAME",
                   help="the metric to rank the runs by (default: experiment.sweep.metric); repeat it to show more "
                        "(default: monitoring.metrics, else every metric the runs logged)")
    p.add_argument("--goal", choices=("min", "max"), help="whether lower or higher is better (default: experiment.sweep.goal)")
    p.add_argument("--from", dest="from_dir", type=Path, metavar="DIR",
                   help="compare the runs in this folder on this machine, no cluster: W&B offline run folders "
                        "(wandb/offline-run-*) and run records (results/*/run.json), in any mix")
    p.add_argument("--csv", type=Path, metavar="FILE", help="also write the table as CSV (every parameter and shown metric)")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON (with each run's history) instead of the table")
    p.add_argument("--plot", type=Path, metavar="FILE.png",
                   help="also draw the metric per run over steps, and against each swept parameter, as a PNG")
    p.add_argument("--html", type=Path, metavar="FILE", help="also write one self-contained HTML report: the table and the plots")
    p.epilog = ("Runs are read from W&B's API (when tracking is online), from the runs' records and W&B offline runs on\n"
                "the workspace volume (one oc exec), and, for jobs that have neither, from their logs.\n"
                "examples:\n"
                "  compare-experiments.sh --sweep 251130-031200-ab12 --plot sweep.png\n"
                "  compare-experiments.sh --from results/ --metric val_loss --goal min --csv runs.csv")


def _promote_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--to", metavar="NAME", help="the serving deployment (its application name; default experiment.promote.to)")
    p.add_argument("--metric", metavar="NAME",
                   help="rank the runs by this metric (default experiment.promote.metric, else experiment.sweep.metric)")
    p.add_argument("--goal", choices=("min", "max"),
                   help="whether lower or higher is better (default experiment.promote.goal, else experiment.sweep.goal)")
    p.add_argument("--if-better", action="store_true",
                   help="only when the best run beats the value of the model the serving deployment has (by its "
                        "annotation mlshift.io/promoted); otherwise say why and change nothing")
    p.add_argument("--sweep", metavar="ID",
                   help="pick among the runs of this sweep (or batch) (default: the newest sweep, else every run; all: every run)")
    p.add_argument("--from", dest="from_dir", type=Path, metavar="DIR",
                   help="read the runs from this folder on this machine (records results/*/run.json, W&B offline runs)")
    p.add_argument("--model", metavar="PATH",
                   help="promote this model folder (as the serving pods see it) instead of the best run's: no metric; "
                        "what the undo line uses")
    p.epilog = ("The serving deployment (a model_server in the same namespace) must mount the model store\n"
                "(resources.storage.models). It rolls out with the new model; its folder here, when there is one,\n"
                "gets inference.model. examples:\n"
                "  promote.sh --if-better                 # the best of the newest sweep, if it beats the served model\n"
                "  promote.sh --to llm --model /models/train/251130-031200-ab12-004")


def _sync_runs_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="*", metavar="RUN", help="only these runs (run ids; default: every offline run not synced yet)")
    p.epilog = ("Uploads from a short-lived pod of the application's image (it has wandb) with the API key of\n"
                "secrets.wandb: nothing is downloaded. A run already synced is skipped (wandb's .wandb.synced\n"
                "marker beside it on the volume); a run whose job still runs is left for next time.")


def _run_local_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address a server listens on (default: this machine only)")
    p.add_argument("--port", type=_port, metavar="PORT", help="port a server listens on (default: inference.port)")
    p.add_argument("--python", metavar="PYTHON", help="the Python to run a script with (default: python3 on PATH)")
    _app_arguments(p, "arguments replacing application.execution.arguments")


def _no_arguments(p: argparse.ArgumentParser) -> None:
    """A verb with no flags of its own (beyond --dry-run)."""


# A generated script runs ``python -m wizard VERB DIR`` with its own file name in this variable:
# then that verb's usage and errors name the script, not the folder argument it fills in itself.
SCRIPT_ENV = "MLSHIFT_SCRIPT"


@dataclass(frozen=True)
class Verb:
    name: str  # python -m wizard NAME DEPLOYMENT
    file: str  # its script in deployments/<name>/scripts/
    summary: str  # what it does, in one sentence (the script's header and --help)
    function: str  # "module:function" in wizard.ops
    arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments
    renders: bool = False  # acts on the rendered files, so brings them up to date first

    @property
    def verb(self) -> str:  # the name the script templates use
        return self.name

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--dry-run", action="store_true",
                       help="print the oc commands instead of running them; change nothing")
        p.formatter_class = argparse.RawDescriptionHelpFormatter
        self.arguments(p)
        _any_order(p)

    def load(self) -> Callable[..., int]:
        module, function = self.function.split(":")
        return getattr(importlib.import_module(f"wizard.ops.{module}"), function)


VERBS: tuple[Verb, ...] = (
    Verb("deploy", "deploy.sh", "Build the image if needed, apply the manifests and wait until the application is ready.",
         "deploy:deploy", _deploy_arguments, renders=True),
    Verb("delete", "delete.sh", "Delete what deploy created (the workspace volume only with --volumes).",
         "deploy:delete", _delete_arguments),
    Verb("status", "status.sh", "Show pods, jobs, the Route and why anything is pending or failing.", "deploy:status",
         _status_arguments),
    Verb("logs", "logs.sh", "Show (or follow with -f) the application's logs.", "jobs:logs", _logs_arguments),
    Verb("submit", "submit-job.sh", "Submit the job under a unique name; --set key=value changes this submission only.",
         "jobs:submit", _submit_arguments),
    Verb("watch", "watch-job.sh", "Follow a submitted job until it ends; exits with the job's outcome.", "jobs:watch", _watch_arguments),
    Verb("jobs", "list-jobs.sh", "List this application's submitted jobs.", "jobs:jobs", _jobs_arguments),
    Verb("run-app", "run-app.sh", "Run the application by hand inside the running pod.", "pods:run_app", _run_app_arguments),
    Verb("exec", "shell.sh", "Open a shell (or run a command) in the running pod.", "pods:exec_", _exec_arguments),
    Verb("port-forward", "port-forward.sh", "Forward a local port to the ready server pod.", "pods:port_forward", _port_forward_arguments),
    Verb("test-inference", "test-inference.sh", "Send one real request to the server and print the answer and latency.",
         "pods:test_inference", _test_inference_arguments),
    Verb("bench", "benchmark-inference.sh", "Load-test the server: throughput, TTFT and latency percentiles.", "pods:bench", _bench_arguments),
    Verb("api-key", "api-key.sh", "Print the API key clients send; --new NAME adds another key, --rotate NAME replaces one.",
         "keys:api_key", _api_key_arguments),
    Verb("jupyter", "jupyter.sh", "Start Jupyter Lab in the pod and forward it to this machine.", "pods:jupyter", _jupyter_arguments),
    Verb("vscode", "vscode.sh", "Start VS Code (code-server) in the pod and forward it to this machine.", "pods:vscode", _vscode_arguments),
    Verb("sync", "sync-workspace.sh", "Upload workspace/ to the pod's /workspace, or download results.", "pods:sync", _sync_arguments),
    Verb("sync-runs", "sync-runs.sh", "Upload the W&B runs tracked offline (on the workspace volume) with `wandb sync`, each once.",
         "tracking:sync_runs", _sync_runs_arguments),
    Verb("sweep", "run-sweep.sh", "Run the trials of experiment.sweep as one Indexed Job, experiment.parallelism at a time.",
         "jobs:sweep", _sweep_arguments),
    Verb("compare", "compare-experiments.sh", "Compare the submitted runs' outcomes and metrics in one table.",
         "compare:compare", _compare_arguments),
    Verb("promote", "promote.sh", "Serve the best run's model: patch the serving deployment (experiment.promote.to) to load it.",
         "promote:promote", _promote_arguments),
    Verb("run-local", "run-local.sh", "Run the same application or server on this machine (CPU or local GPU).",
         "local:run_local", _run_local_arguments),
)
BY_NAME: dict[str, Verb] = {v.name: v for v in VERBS}
