"""The project's errors: a small tree, caught once at the command line.

Every error a user can cause is a :class:`UserError`; the command line prints its one-line
message and exits non-zero, never a traceback. :class:`OcError` keeps what a failed ``oc``
process said so that the message can name the next step.
"""

from __future__ import annotations

from dataclasses import dataclass


class MlshiftError(Exception):
    """Base of every error raised on purpose by this project."""

    exit_code = 1


class UserError(MlshiftError):
    """Something the user can fix: bad input, a missing file, a refused request."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class ConfigError(UserError):
    """config.yaml (or answers, or --set) does not describe a valid deployment.

    ``problems`` holds one ``(field path, message)`` pair per problem found.
    """

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        first_path, first_msg = problems[0]
        where = f"{source}: {first_path}: " if first_path else f"{source}: "
        message = where + first_msg
        if len(problems) > 1:
            message += f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})"
        super().__init__(message)

    def lines(self) -> list[str]:
        """Every problem on its own line, for ``validate``."""
        return [f"{self.source}: {p + ': ' if p else ''}{m}" for p, m in self.problems]


@dataclass
class OcFailure:
    command: list[str]
    returncode: int
    stderr: str


class OcError(UserError):
    """An ``oc`` command failed; keeps the command, its exit code and stderr."""

    exit_code = 3

    def __init__(self, message: str, failure: OcFailure, *, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.failure = failure
