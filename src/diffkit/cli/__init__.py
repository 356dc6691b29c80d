"""The `diffkit` command line: each subcommand parses arguments and makes one library call.

Every subcommand lives in its own module with an `add_parser(subparsers)` function that sets
`func` on its parser; `COMMANDS` below lists them in the order `--help` shows.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from diffkit.allocator import configure_allocator
from diffkit.threads import configure_threads, prepare_environment

prepare_environment()  # the OpenMP wait policy is read once, when torch loads: before the commands import it

from diffkit import progress  # noqa: E402
from diffkit.cli import autoencoder, data, edit, evaluate, export, grid, sample, serve, train, viz  # noqa: E402
from diffkit.errors import DiffkitError, DiffkitNotice, warning_line  # noqa: E402

COMMANDS: tuple = (data, train, autoencoder, sample, grid, edit, evaluate, export, viz, serve)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per command module."""
    parser = argparse.ArgumentParser(
        prog="diffkit",
        description="Train, sample, evaluate and explain denoising diffusion models for images.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; user mistakes print one sentence and return 2, never a traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    progress.set_quiet(getattr(args, "quiet", False))
    show = warnings.showwarning

    def notice(message, category, *rest, **keywords) -> None:  # a DiffkitNotice is one plain line
        if issubclass(category, DiffkitNotice):
            print(warning_line(message, category), file=sys.stderr)
        else:
            show(message, category, *rest, **keywords)

    warnings.showwarning = notice
    try:
        configure_threads()
        configure_allocator()
        result = args.func(args)
    except DiffkitError as error:
        print(f"diffkit: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a file we were told to read or write: say which and why, not a traceback
        print(f"diffkit: error: cannot use {error.filename or 'a file'} ({error.strerror or error}).", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("diffkit: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = show
    return int(result or 0)
