"""How the command lines fail: one line naming the cause and a non-zero exit status.

- ``UserError`` (and the library's errors about files and specs a user fixes: a malformed space
  or cell file, a missing data path, an unset mandatory key) print ``<prog>: error: ...`` and
  exit with status 2.
- ``RunFailed``: the command ran and what it ran failed (a training run that failed, a search in
  which no trial completed); ``<prog>: error: ...`` and exit status 1.
- Anything else keeps its traceback: it is a bug or a real failure, never disguised as a config
  error. ``convert`` therefore wraps only a config conversion, keeping the original exception as
  the cause.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

from omegaconf.errors import MissingMandatoryValue

R = TypeVar("R")


class UserError(Exception):
    """An error the user fixes in the config or the files (printed without a traceback)."""


class RunFailed(Exception):
    """What the command ran failed; the message says why in one line (exit status 1)."""


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception types ``run_cli`` prints as one line with exit status 2."""
    from attnas.space import SpecError

    errors: list[type[BaseException]] = [UserError, SpecError, MissingMandatoryValue]
    errors.append(FileNotFoundError)
    data = sys.modules.get("attnas.data")  # only when loaded: importing it would import torch
    if data is not None:
        errors.append(data.NoReadableVideosError)
    return tuple(errors)


def run_cli(prog: str, fn: Callable[[], R]) -> R:
    """Call ``fn``; print a user error or a failed run as one ``<prog>: error:`` line and exit."""
    try:
        return fn()
    except RunFailed as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        sys.exit(1)
    except user_errors() as err:
        msg = str(err)
        if isinstance(err, MissingMandatoryValue):
            key = getattr(err, "full_key", None) or ""
            msg = f"missing mandatory value {key!r}: set it on the command line ({key}=...)"
        print(f"{prog}: error: {msg}", file=sys.stderr)
        sys.exit(2)


def convert(what: str, fn: Callable[[], R]) -> R:
    """Run one config conversion; its ``ValueError``/``KeyError``/``TypeError`` is a user error.

    Wrap only the conversion of config values into the library's plain types (a schema's
    ``to_*``): whatever the library raises later must keep its traceback.
    """
    try:
        return fn()
    except (ValueError, KeyError, TypeError) as err:
        text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        raise UserError(f"{what}: {text}") from err


def first_line(text: Any) -> str:
    """The first non-empty line of an error text."""
    lines = [ln for ln in str(text or "").strip().splitlines() if ln.strip()]
    return lines[0] if lines else "failed"
