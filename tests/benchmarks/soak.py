"""A long run of one ``streamer run`` process at a steady load: memory, open files, threads.

    .venv/bin/python tests/benchmarks/soak.py --minutes 30

What it does, all on loopback: trains the reference LSTM bundle for one epoch (as
``throughput.py`` does; ``--registry`` reuses a registry's current bundle instead), starts
the embedded broker (Tansu), a ``python -m streamer run`` process and a simulated plant
(``python -m streamer simulate --rate R``), and for ``--minutes`` samples the streamer's
resident memory (VmRSS), open files (/proc/PID/fd) and threads every ``--every`` seconds.
It prints one line per sample and a verdict on the samples after ``--warmup-minutes``:
the least-squares slope of RSS over their second half, and the growth of open files and
threads from their first quarter to their last. Exit code 1 when the verdict fails.

The broker keeps every row in memory: at the default 100 rows/s a 30-minute run adds
about 300 MB to the broker process, not to the streamer. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "integration")]

from fault_helpers import (  # noqa: E402
    Sample,
    StreamerProcess,
    simulator,
    trend,
    watch,
)

from streamer.broker import EmbeddedBroker  # noqa: E402

TOPIC, ALERTS, DLQ, GROUP = "soak-sensors", "soak-breaks", "soak-dlq", "soak-streamer"
RSS_SLOPE_MIB_PER_HOUR = 20.0


def say(text: str) -> None:
    print(text, flush=True)


def soak(args: argparse.Namespace, registry: Path) -> int:
    """Run the load, print the samples and the verdict; the exit code."""
    with EmbeddedBroker() as broker, tempfile.TemporaryFile() as plant_log:
        bootstrap = broker.bootstrap_servers
        broker.create_topics({TOPIC: 4, ALERTS: 1, DLQ: 1})
        streamer = StreamerProcess(bootstrap, registry, TOPIC, ALERTS, DLQ, GROUP, "soak")
        plant = simulator(bootstrap, TOPIC, args.machines, args.rate, plant_log)
        try:
            streamer.wait_serving(300)
            say(f"broker {bootstrap}, streamer pid {streamer.pid}, plant at {args.rate} rows/s")
            say(f"{'minutes':>8} {'RSS MiB':>8} {'fds':>5} {'threads':>7} {'rows':>10}")

            def report(sample: Sample, rows: float) -> None:
                say(
                    f"{sample.seconds / 60:8.1f} {sample.rss_kib / 1024:8.1f} {sample.fds:5d} "
                    f"{sample.threads:7d} {rows:10.0f}"
                )

            samples, consumed = watch(streamer, args.minutes * 60, args.every, report)
            assert plant.poll() is None, "the simulated plant stopped"
        finally:
            plant.terminate()
            plant.wait(30)
            code = streamer.terminate()
            streamer.close()
    warmup = args.warmup_minutes * 60
    found = trend(samples, warmup)
    steady = [(s.seconds, c) for s, c in zip(samples, consumed, strict=True) if s.seconds >= warmup]
    pace = (steady[-1][1] - steady[0][1]) / (steady[-1][0] - steady[0][0])
    flat = (
        found.rss_slope_mib_per_hour < RSS_SLOPE_MIB_PER_HOUR
        and found.fd_growth <= 0
        and found.thread_growth <= 0
        and code == 0
    )
    say(
        f"after {args.warmup_minutes:g} min of warm-up: RSS {found.rss_start_mib:.1f} -> "
        f"{found.rss_end_mib:.1f} MiB, slope over the second half "
        f"{found.rss_slope_mib_per_hour:+.1f} MiB/h; open files {found.fd_growth:+d}, "
        f"threads {found.thread_growth:+d}; {pace:.0f} rows/s consumed; exit code {code}"
    )
    say(f"verdict: {'flat' if flat else 'NOT flat'}")
    if args.json:
        print(json.dumps({**asdict(found), "rows_per_second": pace, "flat": flat}))
    return 0 if flat else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the load")
    parser.add_argument("--warmup-minutes", type=float, default=3.0, help="left out of the verdict")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--rate", type=float, default=100.0, help="rows per second")
    parser.add_argument("--machines", type=int, default=50, help="simulated machines")
    parser.add_argument("--registry", type=Path, help="use this registry's current bundle")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args()
    if args.minutes <= args.warmup_minutes:
        parser.error("--minutes must be longer than --warmup-minutes")
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        registry = args.registry
        if registry is None:
            from throughput import build_bundle  # noqa: PLC0415

            registry = Path(tmp) / "registry"
            say("training the reference bundle (one epoch)")
            started = time.monotonic()
            build_bundle(registry)
            say(f"  done in {time.monotonic() - started:.0f} s")
        return soak(args, registry)


if __name__ == "__main__":
    sys.exit(main())
