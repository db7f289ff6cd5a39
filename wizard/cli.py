"""The command line: argument parsing mapped onto the core API, errors onto messages and exit codes.

``python -m wizard new NAME`` creates or updates ``deployments/NAME``; ``render``, ``validate``
and ``schema`` work offline; the operations verbs (deploy, submit, logs, ...) drive ``oc`` and
are what the generated scripts call.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from .errors import ConfigError, MlshiftError, UserError
from .paths import DEFAULT_DEPLOYMENTS

# How the user started this program: the installed `mlshift` command, or python -m wizard.
PROG = "mlshift" if os.path.basename(sys.argv[0]) == "mlshift" else "python -m wizard"


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake in one line and exits 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _deployment_arg(p: argparse.ArgumentParser, *, hidden: bool = False) -> None:
    """``hidden``: a generated script fills it in, so its usage and help leave it out."""
    p.add_argument("deployment", metavar="DEPLOYMENT_DIR", type=Path,
                   help=argparse.SUPPRESS if hidden else "the deployment folder (or its name under deployments/)")


def resolve_deployment(path: Path) -> Path:
    if path.is_dir() or len(path.parts) != 1:
        return path
    candidate = DEFAULT_DEPLOYMENTS / path
    return candidate if candidate.is_dir() else path


# --------------------------------------------------------------------------- new / render / validate
def cmd_new(args: argparse.Namespace) -> int:
    if args.list_presets:
        from .presets import listing

        for line in listing():
            print(line)
        return 0
    if not args.name:
        raise UserError("give the deployment's NAME, e.g. python -m wizard new llama-inference")
    if args.preset:
        from .presets import get as get_preset

        get_preset(args.preset)  # an unknown preset fails here, before any question
    from .deployment import build_config, create_or_update
    from .loader import Answers
    from .render import check_target, summarize

    deployments_dir: Path = args.deployments_dir
    target = check_target(deployments_dir, args.name)
    interactive = args.interactive or not (args.answers or args.defaults or args.set)
    # --set > --answers > the deployment's config.yaml > --preset > derived (see Answers)
    answers = Answers.gather(target, name=args.name, answers_file=args.answers, sets=args.set or [], preset=args.preset)
    if interactive:
        if not sys.stdin.isatty() or not sys.stdout.isatty():
            if args.preset and not args.interactive:
                raise UserError(f"no terminal to ask preset {args.preset}'s questions on; add --defaults to take its answers "
                                "as they are, or --set key=value")
            raise UserError("no terminal to ask questions on; pass --defaults, --answers FILE or --set key=value")
        from .dialogue import run_dialogue

        config = run_dialogue(answers, target=target, force=args.force)
        if config is None:
            print("Nothing written.")
            return 1
    else:
        config = build_config(answers.data, source=str(args.answers) if args.answers else "answers")
    outcome = create_or_update(args.name, deployments_dir, config=config, force=args.force,
                               dry_run=args.dry_run, copy_source_from=Path.cwd())
    verb = "Would write" if args.dry_run else ("Created" if outcome.created else "Updated")
    print(f"{verb} {_shown(outcome.target)}/")
    for line in summarize(outcome.reports):
        print(line)
    for note in outcome.notes:
        print(f"  note: {note}")
    if outcome.kept and not args.dry_run:
        print(f"Kept {len(outcome.kept)} file(s) you edited; the new version of each is beside it as <file>.new. "
              "Merge what you want, or run again with --force to overwrite.")
    if interactive:
        from .summary import equivalent_command

        custom_dir = None if deployments_dir.resolve() == DEFAULT_DEPLOYMENTS.resolve() else deployments_dir
        print("\nThe same answers without questions:")
        print("  " + without_questions(equivalent_command(config, args.name, deployments_dir=custom_dir, prog=PROG)))
    if not args.dry_run:
        _next_steps(outcome.target, outcome.config)
    return 0


def without_questions(command: str) -> str:
    """``new NAME --preset P`` alone asks the preset's questions on a terminal: with nothing else
    given, the command that asks none takes ``--defaults`` too."""
    import shlex

    words = shlex.split(command)
    if "--preset" in words and not {"--set", "--answers", "--defaults"} & set(words):
        return f"{command} --defaults"
    return command


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _next_steps(target: Path, config) -> None:
    from .blueprint import Blueprint

    plan = Blueprint(config, target.name)
    where = _shown(target)
    print("\nNext:")
    for s in plan.secrets:
        opt = "  # optional" if s["required"] == "no" else ""
        print(f"  oc create secret generic {s['name']} --from-literal={s['key']}=...{opt}")
    print(f"  {where}/scripts/deploy.sh")
    if plan.is_job:
        print(f"  {where}/scripts/submit-job.sh")
    elif plan.serves:
        print(f"  {where}/scripts/port-forward.sh   # then: {where}/scripts/test-inference.sh")
        if plan.api_keys_secret:
            print(f"  {where}/scripts/api-key.sh        # the API key clients send (deploy made it)")
    else:
        print(f"  {where}/scripts/shell.sh")


def cmd_render(args: argparse.Namespace) -> int:
    from .deployment import rerender
    from .render import summarize

    outcome = rerender(resolve_deployment(args.deployment), force=args.force, dry_run=args.dry_run)
    lines = summarize(outcome.reports)
    print(("Would update" if args.dry_run else "Rendered") + f" {_shown(outcome.target)}/" + ("" if lines else ": up to date"))
    for line in lines:
        print(line)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from .validate import check_deployment

    directory = resolve_deployment(args.deployment)
    problems, notes = check_deployment(directory)
    for note in notes:
        print(f"note: {note}")
    if problems:
        for p in problems:
            print(f"error: {p}", file=sys.stderr)
        print(f"{_shown(directory)}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{_shown(directory)}: config, manifests and scripts are valid")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    import json

    from .config import json_schema

    text = json.dumps(json_schema(), indent=2) + "\n"
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def cmd_docs(args: argparse.Namespace) -> int:
    from .docs import write_docs

    for path in write_docs(args.output_dir):
        print(f"wrote {_shown(path)}")
    return 0


def cmd_operation(args: argparse.Namespace) -> int:
    from . import ops

    return ops.run(args.verb, resolve_deployment(args.deployment), args)


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from .verbs import SCRIPT_ENV, VERBS

    # Run by a generated script (it names itself in SCRIPT_ENV): its verb's usage, help and errors
    # name the script, and leave out the deployment folder, which the script fills in itself.
    script = next((v.file for v in VERBS if v.file == os.environ.get(SCRIPT_ENV)), None)
    parser = Parser(prog=f"scripts/{script}" if script else PROG, description="Scaffold, validate and operate OpenShift GPU deployments.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser, prog=PROG)
    sub.required = True

    p = sub.add_parser("new", help="create or update deployments/NAME from answers",
                       description="Create deployments/NAME (or update it, starting from its config.yaml). "
                                   "Asks questions on a terminal unless --defaults, --answers or --set is given.")
    p.add_argument("name", metavar="NAME", nargs="?", help="deployment folder and default application name")
    p.add_argument("--answers", type=Path, metavar="FILE", help="a (partial) config.yaml with the answers")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="one answer, e.g. resources.gpus=2 (repeatable)")
    p.add_argument("--preset", metavar="PRESET",
                   help="start from a preset's answers (see --list-presets); on a terminal it asks the preset's few "
                        "questions, unless --defaults or --set is given")
    p.add_argument("--list-presets", action="store_true", help="list the presets and exit")
    p.add_argument("--defaults", action="store_true", help="take defaults for everything not given; never ask")
    p.add_argument("-i", "--interactive", action="store_true", help="ask questions even when answers are given")
    p.add_argument("--deployments-dir", type=Path, default=DEFAULT_DEPLOYMENTS, metavar="DIR",
                   help="where deployment folders live (default: deployments/ under the current folder)")
    p.add_argument("--force", action="store_true", help="overwrite files you edited instead of writing FILE.new beside them")
    p.add_argument("--dry-run", action="store_true", help="show what would be written; write nothing")
    p.set_defaults(func=cmd_new)

    p = sub.add_parser("render", help="re-render a deployment from its config.yaml")
    _deployment_arg(p)
    p.add_argument("--force", action="store_true", help="overwrite files you edited")
    p.add_argument("--dry-run", action="store_true", help="show what would change; write nothing")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("validate", help="check config, manifests (strict schemas) and scripts (shellcheck) offline")
    _deployment_arg(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("schema", help="print the JSON Schema of config.yaml")
    p.add_argument("--output", type=Path, metavar="FILE", help="write it to FILE instead")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("docs", help="regenerate the configuration reference and schema in docs/")
    p.add_argument("--output-dir", type=Path, default=None, metavar="DIR")
    p.set_defaults(func=cmd_docs)

    for verb in VERBS:
        from_script = script == verb.file
        p = sub.add_parser(verb.name, help=verb.summary[0].lower() + verb.summary[1:].rstrip("."), description=verb.summary,
                           prog=f"scripts/{verb.file}" if from_script else None)
        _deployment_arg(p, hidden=from_script)
        verb.add_arguments(p)
        p.set_defaults(func=cmd_operation, verb=verb.name)
    return parser


def run(argv: Sequence[str] | None, handler: Callable[[argparse.Namespace], int] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return (handler or args.func)(args)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = run(argv)
        sys.stdout.flush()  # here, where a reader that went away (| head) can still be handled
        return code
    except BrokenPipeError:  # before OSError, which it is: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except MlshiftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a path the user gave: unreadable, unwritable, missing folder
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; nothing was left half-written", file=sys.stderr)
        return 130
