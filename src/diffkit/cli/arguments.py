"""Argument types and options shared by the command modules: one definition of each check a user's text meets.

argparse calls a `type=` function on the text and turns its `argparse.ArgumentTypeError` into the usual
"argument --x: ..." line and exit status 2, so a bad number or file name is refused before any work starts.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from pathlib import Path

from diffkit.errors import DiffkitError
from diffkit.files import check_output


def finite_float(text: str) -> float:
    """A float that is a real number: 'nan', 'inf' and '-inf' are refused (nan guidance writes black grids)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"'{text}' is not a finite number; pass a real number such as 1.5")
    return value


def scale_list(text: str) -> list[float]:
    """'0,1,2,4' -> [0.0, 1.0, 2.0, 4.0]: comma-separated finite numbers (their range is the library's check)."""
    scales = []
    for part in (part.strip() for part in text.split(",") if part.strip()):
        try:
            scales.append(finite_float(part))
        except argparse.ArgumentTypeError as error:
            raise argparse.ArgumentTypeError(f"takes comma-separated numbers such as 0,1,2,4, not '{text}' "
                                             f"({error})") from None
    if not scales:
        raise argparse.ArgumentTypeError(f"needs at least one scale such as 0,1,2,4, not '{text}'")
    return scales


def output_file(suffixes: Sequence[str] | Callable[[], Sequence[str]], *,
                directory: bool = False) -> Callable[[str], str]:
    """An argparse type for a file to write: its suffix must be one of `suffixes` (a callable is asked only when
    the option is used, so heavy writers are imported late); with `directory`, a name ending in '/' is a folder."""

    def checked(text: str) -> str:
        allowed = tuple(suffixes() if callable(suffixes) else suffixes)
        if directory and text.endswith(("/", "\\")):
            if Path(text).exists() and not Path(text).is_dir():
                raise argparse.ArgumentTypeError(f"{text} names a folder but {text.rstrip('/')} is a file")
            return text
        try:
            check_output(text, allowed, folder_allowed=directory)
        except DiffkitError as error:
            raise argparse.ArgumentTypeError(str(error).rstrip(".")) from None
        return text

    return checked


def add_quiet(parser: argparse.ArgumentParser) -> None:
    """--quiet: no progress bars (they are drawn on stderr only when it is a terminal)."""
    parser.add_argument("--quiet", action="store_true", help="no progress bars on stderr")


def add_spacing(parser: argparse.ArgumentParser, default_help: str = "the sampler's recommended one",
                fitted: bool = False) -> None:
    """--spacing: the timestep grid, one of the library's one dict of spacings (`schedule.SPACINGS`), and with
    `fitted` (commands that sample from a bundle) also "fitted": the grid `diffkit fit-grid` stored for the sampler
    and step count (`Bundle.settings` refuses a bundle without one)."""
    from diffkit.grids import FITTED
    from diffkit.schedule import SPACINGS

    choices = (*SPACINGS, FITTED) if fitted else tuple(SPACINGS)
    parser.add_argument("--spacing", default=None, choices=choices,
                        help=f"timestep spacing: {', '.join(choices)} (default: {default_help})")


def add_prompt(parser: argparse.ArgumentParser, help_text: str = "the English meaning to condition on") -> None:
    """--prompt: text models' English meaning (`Bundle.labels_for` turns it into the condition and checks it)."""
    parser.add_argument("--prompt", default=None, help=f"text models: {help_text}, e.g. \"water\"")


def add_speed(parser: argparse.ArgumentParser) -> None:
    """--precision, --channels-last, --compile: how the network runs while sampling (`Bundle.speed_up`)."""
    from diffkit.acceleration import COMPILE_MODES
    from diffkit.precision import PRECISIONS

    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="fp32, bf16 (autocast) or auto: bf16 where the hardware has native bf16 (default fp32)")
    parser.add_argument("--channels-last", action="store_true",
                        help="run the network in channels-last memory format (a speed option; same maths)")
    parser.add_argument("--compile", nargs="?", const="blocks", default="none", choices=COMPILE_MODES,
                        help="torch.compile the network's ResBlocks (blocks, the default of a bare --compile) "
                             "or the whole model (model); compiling takes a while before the first step")
