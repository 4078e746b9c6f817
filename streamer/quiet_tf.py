"""TensorFlow imported without its C++ start-up notices on the user's terminal.

TensorFlow's native code writes a few notices straight to file descriptor 2 while it
loads (oneDNN numerics, CPU instructions it was not built for, absl's own preamble);
``TF_CPP_MIN_LOG_LEVEL`` no longer silences them. oneDNN's custom kernels are switched off
(they print as they run), the other notices are caught while the library loads and dropped,
and anything else written then is passed on, so a real error is still seen.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from types import ModuleType

NOTICES = (
    "oneDNN custom operations are on",
    "absl::InitializeLog()",
    "cpu_feature_guard",
    "To enable the following instructions",
)


def keras() -> ModuleType:
    """The ``keras`` module, TensorFlow loaded quietly on first use."""
    if "keras" not in sys.modules:
        # oneDNN's custom kernels round differently from the default ones and log as they
        # load and run; with one setting in every process that scores (trainer, streamer,
        # tests) the same window gets the same score. Measured: no loss of speed for these
        # small models.
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
        with _quiet_stderr():
            import keras  # noqa: F401, PLC0415
            import tensorflow  # noqa: F401, PLC0415
    return sys.modules["keras"]


def tensorflow() -> ModuleType:
    """The ``tensorflow`` module, loaded quietly on first use."""
    keras()
    return sys.modules["tensorflow"]


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    try:
        saved = os.dup(2)
    except OSError:  # no standard error to guard
        yield
        return
    with tempfile.TemporaryFile() as caught:
        sys.stderr.flush()
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            _pass_on(caught.read().decode("utf-8", "replace"))


def _pass_on(text: str) -> None:
    kept = [line for line in text.splitlines() if not any(n in line for n in NOTICES)]
    if kept:
        sys.stderr.write("\n".join(kept) + "\n")
