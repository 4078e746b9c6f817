"""Command-line flags that also read an environment variable, named in ``--help``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any


class EnvFlags:
    """Adds flags to a parser, each with an environment variable as its fallback default."""

    def __init__(
        self, parser: argparse.ArgumentParser | Any, environ: Mapping[str, str], prefix: str
    ) -> None:
        self.parser = parser
        self.environ = environ
        self.prefix = prefix

    def add(
        self,
        flag: str,
        *,
        help: str,
        default: Any = None,
        type: Callable[[str], Any] | None = None,
        secret: bool = False,
        **kwargs: Any,
    ) -> None:
        """Add ``flag``; its env name is the prefix plus the flag in capitals."""
        env = self.prefix + flag.lstrip("-").replace("-", "_").upper()
        if env in self.environ:
            raw = self.environ[env]
            if kwargs.get("action") in ("store_true", "store_false"):
                default = raw.strip().lower() in ("1", "true", "yes", "on")
            elif kwargs.get("nargs") in ("+", "*"):
                default = [type(x) if type else x for x in raw.split()]
            else:
                default = type(raw) if type else raw
        shown = "(set)" if secret and default else default
        text = f"{help} [env {env}"
        text += f"; default {shown}]" if default not in (None, False, []) else "]"
        if type is not None:
            kwargs["type"] = type
        self.parser.add_argument(flag, default=default, help=text, **kwargs)


def comma_ints(text: str) -> tuple[int, ...]:
    """Parse ``"5,16,1"`` into a tuple of ints."""
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers"
        ) from exc


def comma_names(text: str) -> tuple[str, ...]:
    """Parse ``"x28,x61"`` into a tuple of names."""
    return tuple(x.strip() for x in text.split(",") if x.strip())


def start(
    build_parser: Callable[[Mapping[str, str]], argparse.ArgumentParser],
    argv: Sequence[str] | None,
    environ: Mapping[str, str] | None,
) -> argparse.Namespace:
    """Parse the command line (flags fall back to the environment) and configure logging."""
    # TensorFlow's C++ start-up notices are noise to a user of these tools.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser(os.environ if environ is None else environ).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return args
