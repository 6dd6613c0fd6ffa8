"""Errors that reach the user as one clear line (the CLI prints them without a traceback)."""

from __future__ import annotations

from pathlib import Path


class GkdcnError(Exception):
    """Any problem the user can fix: bad input, bad config, an output that already exists."""


class InputError(GkdcnError):
    """A problem with one named file (or config key): rendered as ``path: problem``."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")


class OutputExistsError(GkdcnError):
    """Refusing to overwrite something the user already has."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        super().__init__(f"{path}: already exists (pass --overwrite to replace it)")


class Note(UserWarning):
    """Something the user should know that is not a problem (the CLI prints it as ``note:``)."""
