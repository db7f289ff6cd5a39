"""mlshift's launcher: runs a job's Python entry point, records the run and starts its W&B run.

    python3 /etc/mlshift/launch.py SCRIPT [ARG ...]
    torchrun ... /etc/mlshift/launch.py SCRIPT [ARG ...]

The deployment's ConfigMap carries this file to /etc/mlshift/launch.py; it uses the standard
library only (and wandb when tracking is on and the image has it), so it runs in any image with
Python 3.8+. It never imports mlshift. SCRIPT runs in this same process (runpy, as
``python3 SCRIPT ARG ...`` would run it: ``__main__``, sys.argv, sys.path[0]), after:

- the record folder ($MLSHIFT_RESULTS): run.json (written at start and rewritten at the end, each
  time to a temporary file renamed into place; with $MLSHIFT_MODEL_DIR, the folder the run saves
  its model in, as model_dir), metrics.jsonl (one JSON object per logged step,
  from wandb.log calls and from stdout lines made only of ``name=number`` pairs) and stdout.log
  (the process's stdout and stderr as printed, its child processes' too). Written whether
  tracking is on or not; a folder that cannot be written is said once and the run goes on.
- with W&B tracking (MLSHIFT_TRACKING=wandb): wandb.init(project, name, tags, config=the run's
  parameters); everything else comes from the WANDB_* variables (id, group, job type, resume,
  dir, mode, base URL). Without WANDB_MODE (experiment.tracking.mode auto, not decided yet) it is
  online when WANDB_API_KEY is set, else offline. A later plain ``wandb.init()`` in SCRIPT joins
  this run (its config is added to it). An image without wandb, or an init that fails, is said
  and the run goes on with its records (W&B disabled, so wandb.log still records).

When SCRIPT ends with exit code 0 and $MLSHIFT_MODEL_DIR is a folder, the models it saved there are
whole once the threads it left running have ended (a checkpoint saved in the background): the
launcher waits for them, as Python would before exiting, then writes the marker file ``mlshift-complete`` (:data:`MARKER`, empty) in every
model folder there that lacks one, the folder itself when it holds a model (a config.json) and each
folder directly in it that does (``checkpoint-500/``; hidden folders and ``tmp-checkpoint-*`` left
out), as the checkpoint watcher (``python -m runtime watch``) looks; the watcher then takes them as
complete at once, without waiting for its quiet period. Not after a failure or a signal; a marker
that cannot be written is said once and the exit code stays SCRIPT's.

Under torchrun (or any launcher setting RANK / LOCAL_RANK) only rank 0 records, tracks and marks
the models; the other ranks run SCRIPT with W&B disabled (WANDB_MODE=disabled: their wandb.init
and wandb.log do nothing). The exit code is SCRIPT's (an uncaught exception: 1, its
traceback printed); a signal that would have ended SCRIPT (SIGTERM, SIGINT, SIGHUP) ends this
process by the same signal, after the records say so.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import runpy
import signal
import sys
import threading
import time
import traceback

NOTE = "mlshift:"
# Katib's convention: a line made only of name=number pairs, separated by spaces or commas.
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:inf|nan)"
_PAIR = re.compile(r"([A-Za-z_][\w./-]*)\s*=\s*(" + _NUMBER + r")")
_LINE = re.compile(r"\s*(?:" + _PAIR.pattern + r")(?:[\s,]+(?:" + _PAIR.pattern + r"))*[\s,]*")
STEP_KEYS = ("_step", "step")
# The checkpoint watcher's marker of a model folder written whole (runtime/watch.py's MARKER; this
# file imports nothing of mlshift, so it keeps its own copy, which a test compares).
MARKER = "mlshift-complete"
SAVING = "tmp-checkpoint-"  # the Hugging Face Trainer saves into tmp-checkpoint-<step>/, then renames it


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _say(text: str) -> None:
    sys.stderr.write(f"{NOTE} {text}\n")
    sys.stderr.flush()


def is_main_rank(env=os.environ) -> bool:
    """Rank 0 (or no rank at all): the process that records and tracks."""
    for key in ("RANK", "LOCAL_RANK"):  # RANK is global; LOCAL_RANK alone is a single-node launcher's
        value = env.get(key)
        if value not in (None, ""):
            return value.strip() == "0"
    return True


def metrics_of_line(line: str) -> dict | None:
    """The metrics of a stdout line made only of ``name=number`` pairs, or None."""
    if "=" not in line or not _LINE.fullmatch(line):
        return None
    return {name: float(value) for name, value in _PAIR.findall(line)}


def _number(value):
    """A logged value as a JSON number, or None when it is not one (text, media, tables...)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    item = getattr(value, "item", None)  # numpy and torch scalars
    shape = getattr(value, "shape", None)
    if callable(item) and (shape is None or tuple(shape) in ((), (1,))):
        try:
            return _number(item())
        except Exception:
            return None
    return None


class Records:
    """The run's record folder: run.json, metrics.jsonl, stdout.log."""

    def __init__(self, folder: str | None, env=os.environ):
        self.folder = folder
        self.lock = threading.Lock()
        self.step = 0
        run_id = env.get("MLSHIFT_RUN") or ""
        group = env.get("MLSHIFT_RUN_GROUP") or run_id
        sweep, index = None, None
        tail = run_id[len(group) + 1:] if group and run_id.startswith(group + "-") else ""
        if tail.isdigit():  # a sweep trial: <sweep id>-<index>
            sweep, index = group, int(tail)
        try:
            params = json.loads(env.get("MLSHIFT_PARAMS") or "{}")
        except ValueError:
            params = {}
        self.run = {
            "id": run_id, "name": env.get("MLSHIFT_RUN_NAME") or run_id, "group": group or None,
            "job_type": env.get("WANDB_JOB_TYPE") or ("sweep-trial" if sweep else "train"),
            "params": params if isinstance(params, dict) else {}, "sweep": sweep, "index": index,
            "state": "running", "started": _now(), "finished": None, "exit_code": None,
        }
        if env.get("MLSHIFT_MODEL_DIR"):  # where the run saves its model: what promote serves
            self.run["model_dir"] = env["MLSHIFT_MODEL_DIR"]
        self.metrics_file = None
        if folder:
            try:
                os.makedirs(folder, exist_ok=True)
                self.metrics_file = open(os.path.join(folder, "metrics.jsonl"), "a", encoding="utf-8")
                self.write_run()
            except OSError as exc:
                _say(f"cannot write the run's records in {folder} ({exc.strerror or exc}); the run goes on without them")
                self.folder = None

    def write_run(self) -> None:
        if not self.folder:
            return
        path = os.path.join(self.folder, "run.json")
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self.run, f, indent=1, ensure_ascii=False)
                f.write("\n")
            os.replace(tmp, path)
        except OSError as exc:
            _say(f"cannot write {path}: {exc.strerror or exc}")

    def log(self, data: dict, step=None, commit=True, step_keys: tuple = ()) -> None:
        """One logged step: its numbers, with _step (``step`` if given, else the next; a stdout
        line's ``step=N`` with ``step_keys``) and _time. The step counts wandb.log calls as W&B does."""
        numbers = {}
        for key, value in data.items():
            number = _number(value)
            if number is not None and isinstance(key, str) and key not in ("_step", "_time"):
                numbers[key] = number
        with self.lock:
            if step is None:
                for key in step_keys:
                    if isinstance(data.get(key), (int, float)) and not isinstance(data.get(key), bool):
                        step = int(data[key])
                        numbers.pop(key, None)
                        break
            if step is not None:
                self.step = int(step)
            if numbers and self.metrics_file is not None:
                line = {"_step": self.step, "_time": round(time.time(), 3), **numbers}
                try:
                    self.metrics_file.write(json.dumps(line, ensure_ascii=False) + "\n")
                    self.metrics_file.flush()
                except OSError:
                    pass
            if commit is not False:
                self.step += 1

    def finish(self, exit_code: int) -> None:
        self.run.update(state="finished" if exit_code == 0 else "failed", finished=_now(), exit_code=exit_code)
        self.write_run()
        if self.metrics_file is not None:
            try:
                self.metrics_file.close()
            except OSError:
                pass
            self.metrics_file = None


class Tee:
    """fd 1 and 2 through pipes: each goes on to where it went, and into stdout.log; stdout's
    lines go to ``on_line``. Child processes inherit the pipes, so their output is in it too."""

    def __init__(self, log_path: str, on_line):
        self.log = open(log_path, "ab", buffering=0)
        self.lock = threading.Lock()
        self.on_line = on_line
        self.saved: dict[int, int] = {}
        self.threads: list[threading.Thread] = []
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        for fd in (1, 2):
            read, write = os.pipe()
            self.saved[fd] = os.dup(fd)
            os.dup2(write, fd)
            os.close(write)
            t = threading.Thread(target=self._pump, args=(read, self.saved[fd], fd == 1), name=f"mlshift-tee-{fd}", daemon=True)
            t.start()
            self.threads.append(t)

    def _pump(self, read: int, out: int, parse: bool) -> None:
        """Copy one pipe to where it went at once, and to the log line by line (so that stdout's
        and stderr's lines do not cut into each other there)."""
        pending = b""
        while True:
            try:
                data = os.read(read, 65536)
            except OSError:
                break
            if not data:
                break
            view = memoryview(data)
            while view:
                try:
                    view = view[os.write(out, view):]
                except OSError:  # where it went is gone (a closed pipe): keep recording
                    break
            pending += data
            cut = pending.rfind(b"\n") + 1 if len(pending) < 65536 else len(pending)
            if cut:
                self._record(pending[:cut], parse)
                pending = pending[cut:]
        if pending:
            self._record(pending + b"\n", parse)
        try:
            os.close(read)
        except OSError:
            pass

    def _record(self, text: bytes, parse: bool) -> None:
        with self.lock:
            try:
                self.log.write(text)
            except (OSError, ValueError):  # closed: a child process wrote after the end
                pass
        if parse:
            for line in text.decode("utf-8", "replace").split("\n"):
                try:
                    self.on_line(line.rstrip("\r"))
                except Exception:
                    pass

    def close(self, timeout: float = 2.0) -> None:
        """Back to the original fds; what is still in the pipes is written out first. A child
        process left running still holds them: its output is not waited for beyond ``timeout``
        (it still reaches the original fds while this process lives)."""
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        for fd, saved in self.saved.items():
            os.dup2(saved, fd)
        for t in self.threads:
            t.join(timeout)
        if not any(t.is_alive() for t in self.threads):
            for saved in self.saved.values():
                os.close(saved)
            with self.lock:
                try:
                    self.log.close()
                except OSError:
                    pass
        self.saved = {}


class Tracker:
    """The run's W&B run, started here on rank 0 when tracking is on; wandb.log is recorded too."""

    def __init__(self, records: Records, env=os.environ, main_rank: bool = True):
        self.records = records
        self.wandb = None
        self.run = None
        if env.get("MLSHIFT_TRACKING") != "wandb":
            return
        if env.get("WANDB_DIR"):  # wandb wants it to exist (its own wandb/ folder goes in it)
            try:
                os.makedirs(env["WANDB_DIR"], exist_ok=True)
            except OSError:
                pass
        if not main_rank:  # another rank: W&B disabled, so that its wandb.init() and wandb.log() do nothing
            os.environ["WANDB_MODE"] = "disabled"
            try:
                import wandb

                wandb.init(mode="disabled")
            except Exception:
                pass
            return
        if not env.get("WANDB_MODE"):  # experiment.tracking.mode auto, not decided when the pod was made
            os.environ["WANDB_MODE"] = "online" if env.get("WANDB_API_KEY") else "offline"
            _say(f"W&B mode {os.environ['WANDB_MODE']} (experiment.tracking.mode auto: "
                 f"WANDB_API_KEY is {'set' if env.get('WANDB_API_KEY') else 'not set'})")
        try:
            import wandb
        except ImportError:
            _say("W&B tracking is on but this image has no wandb (pip install wandb; an image built by mlshift has it): "
                 "the run is recorded in its record folder only")
            return
        self.wandb = wandb
        tags = [t for t in (env.get("WANDB_TAGS") or "").split(",") if t] or None
        kwargs = dict(project=env.get("WANDB_PROJECT") or None, name=env.get("MLSHIFT_RUN_NAME") or None,
                      tags=tags, config=records.run["params"])
        try:
            self.run = wandb.init(**kwargs)
        except Exception as exc:  # a wrong key, a server out of reach: the run goes on, recorded
            _say(f"wandb.init failed ({type(exc).__name__}: {exc}); W&B is disabled for this run, its records are still written")
            try:
                self.run = wandb.init(mode="disabled", **kwargs)
            except Exception:
                self.run = None
        if self.run is not None:
            self._wrap()

    def _wrap(self) -> None:
        wandb, run, records = self.wandb, self.run, self.records
        real_log, real_init = run.log, wandb.init

        def log(data, step=None, commit=None, *args, **kwargs):
            result = real_log(data, step, commit, *args, **kwargs)
            if isinstance(data, dict):
                records.log(data, step=step, commit=commit)
            return result

        def init(*args, **kwargs):
            """The script's own wandb.init() joins the run started at launch."""
            if wandb.run is not run:
                return real_init(*args, **kwargs)
            for key in ("project", "entity", "id"):
                if kwargs.get(key) and kwargs[key] != getattr(run, key, None):
                    _say(f"wandb.init({key}={kwargs[key]!r}) ignored: this run was started at launch with "
                         f"{key} {getattr(run, key, None)!r} (experiment.tracking in config.yaml)")
            config = kwargs.get("config")
            if config is not None:
                try:
                    run.config.update(config, allow_val_change=True)
                except Exception as exc:
                    _say(f"wandb.init(config=...) not added to the run: {exc}")
            for key in ("name", "notes"):
                if kwargs.get(key):
                    setattr(run, key, kwargs[key])
            if kwargs.get("tags"):
                run.tags = tuple(dict.fromkeys([*(run.tags or ()), *kwargs["tags"]]))
            return run

        run.log = log
        wandb.log = log
        wandb.init = init

    def finish(self, exit_code: int) -> None:
        if self.wandb is not None and self.wandb.run is not None:
            try:
                self.wandb.run.finish(exit_code=exit_code)
            except Exception as exc:
                _say(f"wandb finish: {exc}")


def _is_model(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, "config.json"))


def model_folders(model_dir: str) -> list[str]:
    """The model folders the checkpoint watcher finds in a run's model folder (runtime/watch.py,
    find_checkpoints: ``model_dir`` is ``<models root>/<run id>``): ``model_dir`` itself when it
    holds a config.json, and each folder directly in it that does, hidden ones and those the
    Trainer is still saving into left out. Raises OSError when ``model_dir`` cannot be read."""
    found = [model_dir] if _is_model(model_dir) else []
    for name in sorted(os.listdir(model_dir)):
        path = os.path.join(model_dir, name)
        if not name.startswith((".", SAVING)) and os.path.isdir(path) and _is_model(path):
            found.append(path)
    return found


def _join_script_threads() -> None:
    """Wait for the threads SCRIPT started and left running (not daemons: a checkpoint saved in the
    background), as Python waits for them before it exits anyway."""
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()


def mark_models_complete(model_dir: str) -> None:
    """The marker (empty) in every model folder of ``model_dir`` that lacks one. Whatever cannot be
    done is said once (one line), never raised: the run's outcome is the script's."""
    failed = []
    try:
        folders = model_folders(model_dir)
    except OSError as exc:
        _say(f"cannot mark the models in {model_dir} complete ({exc.strerror or exc}); "
             "the checkpoint watcher takes them as complete once their files stay unchanged for its quiet period")
        return
    for folder in folders:
        path = os.path.join(folder, MARKER)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            failed.append((folder, exc))
            continue
        os.close(fd)
    if failed:
        folder, exc = failed[0]
        more = f" and {len(failed) - 1} more" if len(failed) > 1 else ""
        _say(f"cannot write {MARKER} in {folder}{more} ({exc.strerror or exc}); the checkpoint watcher takes "
             "them as complete once their files stay unchanged for its quiet period")


def _user_traceback(exc: BaseException, script: str) -> None:
    """The traceback as Python would print it for SCRIPT, without the launcher's frames."""
    tb = exc.__traceback__
    while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename) != script:
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb or exc.__traceback__)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        sys.stderr.write(__doc__)
        return 0 if argv else 2
    script = os.path.abspath(argv[0])
    main_rank = is_main_rank()
    folder = os.environ.get("MLSHIFT_RESULTS") if main_rank else None
    model_dir = os.environ.get("MLSHIFT_MODEL_DIR") if main_rank else None
    try:
        sys.stdout.reconfigure(line_buffering=True)  # lines reach the log (and name=value lines the metrics) as printed
    except (AttributeError, ValueError):
        pass
    records = Records(folder)
    # W&B first: the service process it starts keeps the original stdout and stderr, not the tee's pipes.
    tracker = Tracker(records, main_rank=main_rank)
    tee = None
    if records.folder:
        try:
            tee = Tee(os.path.join(records.folder, "stdout.log"), lambda line: _stdout_metrics(records, line))
        except OSError as exc:
            _say(f"stdout.log not written: {exc.strerror or exc}")
    done = []

    def finish(code: int) -> None:
        if done:
            return
        done.append(code)
        if code == 0 and model_dir and os.path.isdir(model_dir):  # its models are whole: the watcher need not wait
            _join_script_threads()  # a checkpoint still being saved in the background is not whole yet
            mark_models_complete(model_dir)
        if main_rank:
            tracker.finish(code)
        if tee is not None:
            tee.close()
        records.finish(code)

    def on_signal(signum, frame):  # the script did not take this signal: record, then end by it
        finish(128 + signum)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None and signal.getsignal(sig) == signal.SIG_DFL:
            signal.signal(sig, on_signal)
    sys.argv = [script, *argv[1:]]
    sys.path[0] = os.path.dirname(script)
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        code = exc.code
        if code is None:
            code = 0
        elif not isinstance(code, int):
            print(code, file=sys.stderr)  # sys.exit("message"): Python prints it and exits 1
            code = 1
        finish(code)
        return code
    except KeyboardInterrupt as exc:
        _user_traceback(exc, script)
        finish(128 + signal.SIGINT)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)  # as Python does: end by SIGINT
        return 128 + signal.SIGINT
    except BaseException as exc:
        _user_traceback(exc, script)
        finish(1)
        return 1
    finish(0)
    return 0


def _stdout_metrics(records: Records, line: str) -> None:
    found = metrics_of_line(line)
    if found:
        records.log(found, step_keys=STEP_KEYS)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
