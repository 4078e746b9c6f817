"""Exit codes of ``python -m trainer``, so a scheduler can tell a refusal from a crash."""

from __future__ import annotations

from streamer.errors import BundleError, SheetBreakError

OK = 0
CRASH = 1  # Python's own code for an uncaught exception
BAD_INPUT = 2  # also argparse's code for a bad command line
REFUSED = 3
REGISTRY = 4

EPILOG = f"""exit codes (for schedulers):
  {OK}  done: bundle written (and made current if promoted), or registry command done
  {CRASH}  unexpected failure; the traceback is in the log
  {BAD_INPUT}  bad command line, settings or data (empty archive, filter selects nothing,
     too few rows): nothing was written, and retrying will not help
  {REFUSED}  --promote: the guard refused the candidate; it stays in the registry for review,
     CURRENT is unchanged and the decision is in decisions.jsonl
  {REGISTRY}  registry or bundle problem: unreadable bundle, unknown version, nothing to roll
     back to, a bundle that does not fit the data"""


def exit_code(exc: SheetBreakError) -> int:
    """The code for an error this project raised on purpose."""
    return REGISTRY if isinstance(exc, BundleError) else BAD_INPUT
