"""The one exception type for mistakes a user can fix (bad paths, names, values, files)."""


class DiffkitError(Exception):
    """A user-facing error: its message is one sentence naming the bad thing and what to do.

    The command line prints it without a traceback and exits with status 2; library callers
    catch it like any exception.
    """


class DiffkitNotice(UserWarning):
    """Something the user should know that is not an error (a prompt cut to the encoder's length): a warning
    for library callers, one `diffkit: notice:` line on the command line."""
