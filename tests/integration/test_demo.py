"""``python -m streamer demo`` end to end: a model trained on the spot, rows, a summary."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.smoke]

DURATION_S, RATE = 20, 40


def test_the_demo_trains_streams_and_summarises(kafka_broker: Any, tmp_path: Path) -> None:
    """On Tansu the demo starts its own broker, as a user's first run does; elsewhere it is
    pointed at the session's Kafka."""
    command = [sys.executable, "-m", "streamer", "demo", "--registry", str(tmp_path / "reg")]
    command += ["--duration", str(DURATION_S), "--rate", str(RATE), "--epochs", "2"]
    command += ["--metrics-port", "0"]
    if kafka_broker.source != "embedded tansu":
        command += ["--bootstrap-servers", kafka_broker.bootstrap_servers]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=900, check=False, cwd=tmp_path
    )
    output = done.stdout + done.stderr[-3000:]
    assert done.returncode == 0, output
    assert "no model in" in done.stdout, output  # it trained one
    produced = re.search(r"rows produced:\s+(\d+)", done.stdout)
    assert produced is not None, output
    assert int(produced.group(1)) >= RATE * DURATION_S // 2, output
    assert (tmp_path / "reg" / "CURRENT").is_file()
