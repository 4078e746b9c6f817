"""Where ``trainer fit`` reads rows: files, the archiver's archive, or the simulator."""

from __future__ import annotations

import argparse
import datetime as dt

from streamer.cliutil import EnvFlags, comma_names
from streamer.errors import ConfigError
from trainer.archive import ArchiveQuery, read_archive
from trainer.data import Table

_ARCHIVE_ONLY = ("since", "until", "last_days", "machines")


def iso_date(text: str) -> dt.date:
    """Parse ``YYYY-MM-DD``."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-01-31") from exc


def add_archive_flags(flags: EnvFlags) -> None:
    """``--archive ROOT`` and the filters that choose its days and machines."""
    flags.add(
        "--archive",
        help="train on the archive `python -m streamer archive` writes (a folder or a "
        "pyarrow URI such as s3://bucket/path), read day by day in bounded memory",
    )
    flags.add("--since", type=iso_date, help="first archived day to read (UTC, YYYY-MM-DD)")
    flags.add("--until", type=iso_date, help="last archived day to read (UTC, YYYY-MM-DD)")
    flags.add(
        "--last-days",
        type=int,
        help="read the newest N archived days (counted back from the newest day archived)",
    )
    flags.add("--machines", type=comma_names, help="comma-separated machine ids (default: all)")


def check_source(args: argparse.Namespace) -> None:
    """Exactly one of --data, --archive and --sample; archive filters only with --archive."""
    given = [
        flag
        for flag, on in (
            ("--data", args.data),
            ("--archive", args.archive),
            ("--sample", args.sample),
        )
        if on
    ]
    if not given:
        raise ConfigError("give --data PATH..., --archive ROOT or --sample")
    if len(given) > 1:
        raise ConfigError(f"give exactly one data source, not {' and '.join(given)}")
    if args.archive is None:
        for name in _ARCHIVE_ONLY:
            if getattr(args, name):
                raise ConfigError(f"--{name.replace('_', '-')} needs --archive")


def archive_table(args: argparse.Namespace) -> Table | None:
    """The archive's selected rows as a table, or None when --archive is not given."""
    if args.archive is None:
        return None
    query = ArchiveQuery(
        root=args.archive,
        since=args.since,
        until=args.until,
        last_days=args.last_days,
        machines=tuple(args.machines or ()),
        drop=tuple(args.drop),
    )
    table, _ = read_archive(query, args.max_gap_minutes)
    return table
