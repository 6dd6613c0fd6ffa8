"""Errors that reach the user as one clear line (the CLI prints them without a traceback)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class GkdcnError(Exception):
    """Any problem the user can fix: bad input, bad config, an output that already exists.

    Programming errors (an API called with arguments no user input can produce) raise plain
    :class:`ValueError` / :class:`TypeError` instead, so they are never shown as a user's mistake.
    """


class Terminated(SystemExit):
    """The process was asked to stop (SIGTERM: ``kill``, a batch scheduler's time limit) while
    worker processes ran; its exit status is 128 + the signal number, as a shell reports it.
    A :class:`SystemExit`, so a script that does not catch it ends with that status."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(128 + signum)


class InputError(GkdcnError, ValueError):
    """A problem with one named file (or config key): rendered as ``path: problem``.

    Also a :class:`ValueError`, so library callers can catch it as bad input."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")


class OutputExistsError(GkdcnError, FileExistsError):
    """Refusing to overwrite something the user already has (also a :class:`FileExistsError`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        super().__init__(f"{path}: already exists (pass --overwrite to replace it)")


def validation_message(exc: ValidationError) -> str:
    """A pydantic ``ValidationError`` as one line: ``key 'a.b': what is wrong (and N more)``.

    The one formatter for every validated input (study config, synthetic spec, command-line
    overrides), so each reaches the user as the same kind of line.
    """
    first = exc.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
    extra = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return (f"key '{key}': " if key else "") + message + extra


class Note(UserWarning):
    """Something the user should know that is not a problem (the CLI prints it as ``note:``)."""
