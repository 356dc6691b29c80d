"""The one exception type for mistakes a user can fix (bad paths, names, values, files); how warnings reach users."""

import sys
import warnings
from contextlib import contextmanager
from typing import Iterator


class DiffkitError(Exception):
    """A user-facing error: its message is one sentence naming the bad thing and what to do.

    The command line prints it without a traceback and exits with status 2; library callers
    catch it like any exception.
    """


class DiffkitNotice(UserWarning):
    """Something the user should know that is not an error (a prompt cut to the encoder's length): a warning
    for library callers, one `diffkit: notice:` line on the command line (`warning_line`)."""


Rule = tuple[str, object, bool, str]  # (key, value, holds?, what it must be)


def check_rules(rules: "list[Rule]") -> None:
    """Raise a DiffkitError for the first rule that does not hold, naming its key, value and requirement.

    Every config section validates itself this way (a table of rules), so all range errors read alike.
    """
    for key, value, holds, requirement in rules:
        if not holds:
            raise DiffkitError(f"Config value {key}={value!r} is out of range: it must be {requirement}.")


@contextmanager
def warnings_as_lines() -> Iterator[None]:
    """Show the warnings raised inside as `diffkit: warning: MESSAGE` lines on stderr (not Python's format)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for warning in caught:
        print(warning_line(warning.message, warning.category), file=sys.stderr, flush=True)


def warning_line(message: object, category: type[Warning]) -> str:
    """A warning as the command line shows it: `diffkit: notice: ...` for a DiffkitNotice, else `diffkit: warning:`."""
    kind = "notice" if issubclass(category, DiffkitNotice) else "warning"
    return f"diffkit: {kind}: {message}"
