"""``python -m streamer archive`` in a child process, watched as a streamer process is."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fault_helpers import ROOT, StreamerProcess


@dataclass
class ArchiverProcess(StreamerProcess):
    """The archiver writing ``topic`` under ``registry`` (its output folder here)."""

    def __post_init__(self) -> None:
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in close()
            prefix=f"archiver-{self.instance}-", suffix=".log"
        )
        command = [
            sys.executable,
            "-m",
            "streamer",
            "archive",
            *("--bootstrap-servers", self.bootstrap),
            *("--out", str(self.registry)),
            *("--topic", self.topic),
            *("--group", self.group),
            *("--metrics-port", str(self.port)),
            *("--flush-seconds", "1"),
            *self.extra,
        ]
        self.process = subprocess.Popen(
            command, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, env=dict(os.environ)
        )

    def archived(self) -> int:
        """Parquet files written so far."""
        return sum(1 for _ in Path(self.registry).rglob("*.parquet"))
