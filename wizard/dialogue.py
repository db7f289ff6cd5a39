"""The interactive wizard: the questions of :mod:`wizard.questions` asked in order, each answer
validated as it is typed.

There is no second list of rules here. Every answer is checked by applying it to the answers so
far and validating the result with :class:`wizard.config.Config`; the message shown is the
model's own. Defaults that depend on other answers (CPU, memory and shared memory per GPU,
tensor parallel size, the base image) are the model's derived values: an answer left at its
derived value is not stored, so it keeps following the answers it depends on.

The dialogue starts from :class:`wizard.loader.Answers` (preset, existing config.yaml, answers
file, ``--set``). Nothing is written here. :func:`run_dialogue` returns a validated
:class:`Config` (or ``None`` when the user cancels); ``new`` writes it. Ctrl-C raises
``KeyboardInterrupt`` from any question, which the command line turns into exit status 130 with
nothing written.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from .config import Config
from .errors import ConfigError
from .loader import MISSING, Answers, chosen_answers, del_path, validate
from .questions import QUESTIONS, Draft, Question, attr, problems_of, related
from .summary import summary_lines

ANSWER_EVERYTHING = "-"  # the first question's "no preset" choice (a Choice value cannot be None)


# --------------------------------------------------------------------------- the dialogue
class Dialogue:
    def __init__(self, answers: Answers, *, target: Path, force: bool):
        self.answers = answers
        self.name = answers.name
        self.target = target
        self.force = force
        self.preset = None
        self.existing = answers.existing is not None
        self.old: Config | None = None  # the deployment as it is, to list the answers that change
        if self.existing:
            try:
                self.old = validate(answers.only("config.yaml").data, source="config.yaml")
            except ConfigError:
                self.old = None
        if answers.preset:
            from . import presets

            self.preset = presets.get(answers.preset)
        self.data: dict[str, Any] = {}
        self.only: set[str] | None = None  # with a preset: the questions asked; the others keep its answers

    # ---- helpers
    def _start(self) -> None:
        """The answers in their order of priority, keeping only what was chosen, not derived."""
        data = self.answers.data
        problems = problems_of(data)
        asked = {q.key for q in QUESTIONS}
        stray = [(p, m) for p, m in problems if not any(related(p, k) for k in asked) or m.startswith("unknown key")]
        if stray:
            raise ConfigError(f"{self.target.name}/config.yaml" if self.existing else "answers", stray)
        if not problems:
            data = chosen_answers(validate(data, source="answers"))
        self.data = data

    def _candidate(self, q: Question, value: Any) -> dict[str, Any]:
        cand = copy.deepcopy(self.data)
        q.store(cand, value)
        return cand

    def _verdict(self, index: int, cand: dict[str, Any], baseline: set[tuple[str, str]]) -> str | None:
        """The model's message for this answer, or None when it is acceptable (for now)."""
        q = QUESTIONS[index]
        problems = problems_of(cand)
        if not problems:
            return None
        for path, msg in problems:
            if related(path, q.key):
                return msg
        view = Draft(cand)
        later = [x.key for x in QUESTIONS[index + 1:] if x.applies(view) and (self.only is None or x.key in self.only)]
        for path, msg in problems:
            if (path, msg) in baseline or any(related(path, k) for k in later):
                continue  # an earlier problem, or one a later question settles
            return f"{path}: {msg}"
        return None

    def _derived(self, q: Question) -> Any:
        """What the model derives for ``q`` from the other answers (MISSING if it cannot yet)."""
        trial = copy.deepcopy(self.data)
        del_path(trial, q.key)
        for _attempt in range(2):
            try:
                return attr(validate(trial, source="answers", checks=False), q.key)
            except ConfigError as exc:
                # Other answers are still incomplete: derive with their sections' defaults.
                broken = {path.split(".")[0] for path, _ in exc.problems}
                if "" in broken or q.key.split(".")[0] in broken:
                    return MISSING
                for section in broken:
                    trial.pop(section, None)
        return MISSING

    # ---- asking
    def ask(self, index: int) -> None:
        import questionary

        q = QUESTIONS[index]
        baseline = set(problems_of(self.data))
        current = q.current(self.data)
        following = q.follows and current in (MISSING, None)  # derived: shown, not stored
        if following:
            current = self._derived(q)
        elif current is MISSING:
            current = Draft(self.data).get(q.key)
        if q.kind == "select":
            self._ask_select(index, q, current, baseline)
            return
        if q.key == "inference.enabled" and Draft(self.data).runs_vllm:
            current = True  # a command that starts vLLM serves requests
        if q.kind == "confirm":
            while True:
                default = current is True or (isinstance(current, str) and current.lower() in ("true", "yes", "on"))
                answer = questionary.confirm(q.message, default=default).unsafe_ask()
                cand = self._candidate(q, answer)
                msg = self._verdict(index, cand, baseline)
                if msg is None:
                    self.data = cand
                    return
                print(f"  ! {msg}")
                current = answer

        def check(text: str) -> bool | str:
            try:
                value = q.parse(text)
            except ValueError as exc:
                return str(exc)
            msg = self._verdict(index, self._candidate(q, value), baseline)
            return True if msg is None else msg

        hint = q.hint
        if q.empty and current in (MISSING, None):
            hint = (hint + " " if hint else "") + q.empty
        text = questionary.text(q.message, default=q.show(current), validate=check, instruction=hint).unsafe_ask()
        value = q.parse(text)
        cand = self._candidate(q, value)
        if following and value is not MISSING:  # the derived value typed again: keep following
            trial = copy.deepcopy(cand)
            del_path(trial, q.key)
            try:
                if attr(validate(trial, source="answers"), q.key) == attr(validate(cand, source="answers"), q.key):
                    cand = trial  # the derived value: keep following
            except ConfigError:
                pass
        self.data = cand

    def _ask_select(self, index: int, q: Question, current: Any, baseline: set[tuple[str, str]]) -> None:
        import questionary

        assert q.choices is not None
        options = q.choices(Draft(self.data))
        canonical_current = Draft(self.data).choice(q.key, [v for v, _ in options]) if current is not MISSING else None
        choices = []
        for value, title in options:
            msg = self._verdict(index, self._candidate(q, value), baseline)
            choices.append(questionary.Choice(title, value=value, disabled=msg))
        enabled = [c.value for c in choices if not c.disabled]
        if not enabled:  # nothing fits the earlier answers; let the final check send the user back
            for c in choices:
                c.disabled = None
            enabled = [c.value for c in choices]
        default = canonical_current if canonical_current in enabled else enabled[0]
        answer = questionary.select(q.message, choices=choices, default=default).unsafe_ask()
        self.data = self._candidate(q, answer)

    # ---- the flow
    def run(self) -> Config | None:
        import questionary

        from .deployment import build_config

        where = f"{self.target.parent.name}/{self.target.name}"
        if self.existing:
            self._start()  # an answer no question can fix fails here, before any question
            print(f"Updating {where}: every question starts from its current answer.")
        elif self.preset is None:
            from .presets import PRESETS

            choices = [questionary.Choice(f"{p.name}: {p.title}", value=p.name) for p in PRESETS]
            choices.append(questionary.Choice("something else: answer every question", value=ANSWER_EVERYTHING))
            picked = questionary.select("What are you deploying?", choices=choices).unsafe_ask()
            if picked != ANSWER_EVERYTHING:
                from . import presets

                self.answers = self.answers.replace(preset=picked)
                self.preset = presets.get(picked)
        if not self.existing:
            self._start()
        self.only = set(self.preset.ask) if (self.preset and not self.existing) else None
        if self.only is not None:
            print(f"Preset {self.preset.name}: a few questions; the rest keep the preset's answers "
                  "(change any of them at the summary).")
        index = 0
        while True:
            section = None
            while index < len(QUESTIONS):
                q = QUESTIONS[index]
                if q.applies(Draft(self.data)) and (self.only is None or q.key in self.only):
                    if q.section != section:
                        section = q.section
                        print(f"\n{section}")
                    self.ask(index)
                index += 1
            try:
                config = build_config(copy.deepcopy(self.data), source="answers")
            except ConfigError as exc:
                index = self._back_to(exc)
                self.only = None
                continue
            action = self.summary(config)
            if action == "write":
                return config
            if action == "cancel":
                return None
            index = self._pick_question()
            self.only = None

    def _back_to(self, exc: ConfigError) -> int:
        view = Draft(self.data)
        for path, msg in exc.problems:
            for i, q in enumerate(QUESTIONS):
                if q.applies(view) and related(path, q.key):
                    print(f"\n  ! {path}: {msg}")
                    return i
        raise exc

    def _pick_question(self) -> int:
        import questionary

        view = Draft(self.data)
        choices = []
        for i, q in enumerate(QUESTIONS):
            if not q.applies(view):
                continue
            current = q.current(self.data)
            shown = q.show(view.get(q.key) if current is MISSING and not q.read else current)
            if q.follows and current in (MISSING, None):
                shown = "(follows other answers)"
            choices.append(questionary.Choice(f"{q.section}: {q.message} [{shown}]", value=str(i)))
        return int(questionary.select("Which answer do you want to change? (the questions after it follow)",
                                      choices=choices).unsafe_ask())

    # ---- the summary
    def summary(self, config: Config) -> str:
        import questionary

        for line in summary_lines(config, self.name, self.target, force=self.force, old=self.old):
            print(line)
        choice = questionary.select(
            "Write it?",
            choices=[questionary.Choice("Write the deployment", value="write"),
                     questionary.Choice("Change an answer", value="change"),
                     questionary.Choice("Cancel: write nothing", value="cancel")],
        ).unsafe_ask()
        return str(choice)


def run_dialogue(answers: Answers, *, target: Path, force: bool = False) -> Config | None:
    """Ask the questions that apply, starting from ``answers``; the validated config, or None if cancelled."""
    try:
        return Dialogue(answers, target=target, force=force).run()
    except EOFError:  # Ctrl-D at a question: leave like Ctrl-C, with nothing written
        raise KeyboardInterrupt from None
