"""``python -m streamer demo``: broker, model, simulated plant and streamer in one command."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from confluent_kafka import Producer

from streamer.alerts import describe
from streamer.bundle import Registry
from streamer.events import event_metrics
from streamer.produce import produce
from streamer.settings import StreamerSettings
from streamer.simulate import PlantParams, iter_rows

log = logging.getLogger(__name__)


@dataclass
class Tally:
    """What the demo saw: rows and breaks sent, alert episodes opened."""

    rows: int = 0
    breaks: list[tuple[str, int]] = field(default_factory=list)
    opens: list[tuple[str, int]] = field(default_factory=list)
    first_ts: int | None = None
    last_ts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sent(self, row: dict[str, Any]) -> None:
        """Count a produced row."""
        with self.lock:
            self.rows += 1
            self.first_ts = row["ts"] if self.first_ts is None else self.first_ts
            self.last_ts = row["ts"]
            if row.get("break"):
                self.breaks.append((row["machine_id"], row["ts"]))


def ensure_model(settings: StreamerSettings, epochs: int) -> None:
    """Train a small model on simulated history when the registry has none."""
    if Registry(settings.registry).current() is not None:
        return
    print(
        f"no model in {settings.registry}: training one on simulated plant history "
        "(about a minute)...",
        flush=True,
    )
    command = [
        sys.executable,
        "-m",
        "trainer",
        "fit",
        "--sample",
        "--sample-days",
        "4",
        "--registry",
        str(settings.registry),
        "--epochs",
        str(epochs),
    ]
    subprocess.run(command, check=True)


def summary(tally: Tally, min_lead: float = 2.0, max_lead: float = 20.0) -> str:
    """The closing report: rows, breaks, breaks warned with lead times, false alarms."""
    machines = sorted({m for m, _ in tally.breaks} | {m for m, _ in tally.opens})
    code = {m: i for i, m in enumerate(machines)}
    minutes = 60_000.0
    breaks_t = np.array([t / minutes for _, t in tally.breaks])
    breaks_g = np.array([code[m] for m, _ in tally.breaks])
    opens_t = np.array([t / minutes for _, t in tally.opens])
    opens_g = np.array([code[m] for m, _ in tally.opens])
    span = ((tally.last_ts - (tally.first_ts or 0)) / minutes / 1440.0) or 1e-9
    result = event_metrics(opens_t, opens_g, breaks_t, breaks_g, span, min_lead, max_lead)
    leads = ", ".join(f"{x:.0f}" for x in result.leads[result.warned])
    return "\n".join(
        [
            "--- summary ---",
            f"rows produced:          {tally.rows}",
            f"simulated time:         {span * 24:.1f} hours",
            f"breaks:                 {result.breaks}",
            f"breaks warned {min_lead:g}-{max_lead:g} min ahead: {int(result.warned.sum())}"
            f" (lead minutes: {leads or 'none'})",
            f"breaks missed:          {result.breaks - int(result.warned.sum())}",
            f"alert episodes:         {result.episodes}",
            f"false-alarm episodes:   {result.false_alarms} "
            f"({result.false_alarms_per_day:.1f} per simulated day)",
        ]
    )


@contextlib.contextmanager
def simulated_plant(
    bootstrap: str,
    topic: str,
    machines: int,
    rate: float,
    seed: int,
    tally: Tally,
    stop: threading.Event,
) -> Iterator[threading.Thread]:
    """Produce simulated rows in a background thread until ``stop``."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    start = time.strftime("%Y-%m-%dT%H:%M:00Z", time.gmtime())
    rows = iter_rows(PlantParams.load(), machines=machines, seed=seed, start=start)
    thread = threading.Thread(
        target=produce,
        name="simulator",
        daemon=True,
        args=(producer, topic, rows, rate),
        kwargs={"stop": stop, "on_row": tally.sent},
    )
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(30)


def run_demo(args: Any, kafka_settings: Any, stop: threading.Event, serve_metrics: Any) -> int:
    """Start what is missing, run plant and streamer for ``--duration``, print the summary."""
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from streamer.broker import EmbeddedBroker  # noqa: PLC0415
    from streamer.cli import TOPIC_PARTITIONS  # noqa: PLC0415
    from streamer.metrics import StreamerMetrics  # noqa: PLC0415
    from streamer.runner import Streamer  # noqa: PLC0415

    with contextlib.ExitStack() as stack:
        bootstrap = args.bootstrap_servers
        if not bootstrap:
            print("starting the embedded Kafka broker...", flush=True)
            broker = stack.enter_context(EmbeddedBroker())
            bootstrap = broker.bootstrap_servers
            broker.create_topics(TOPIC_PARTITIONS)
        kafka = kafka_settings(args, bootstrap)
        settings = StreamerSettings(
            kafka=kafka,
            registry=args.registry,
            instance_id="demo",
            group_id="sheetbreak-demo",
            metrics_host=args.metrics_host,
            metrics_port=args.metrics_port or None,
            reload_seconds=2.0,
        )
        ensure_model(settings, args.epochs)
        tally = Tally()

        def on_alert(alert: dict[str, Any]) -> None:
            print(describe(alert), flush=True)
            if alert["status"] == "open":
                ms = int(np.datetime64(alert["ts"].rstrip("Z"), "ms").astype(np.int64))
                tally.opens.append((alert["machine_id"], ms))

        registry = CollectorRegistry()
        streamer = Streamer(settings, StreamerMetrics(registry), stop, on_alert=on_alert)
        server = serve_metrics(settings.metrics_host, settings.metrics_port, registry)
        if server is not None:
            stack.callback(server.shutdown)
        loop = threading.Thread(target=streamer.run, name="streamer", daemon=True)
        loop.start()
        print(
            f"streaming {args.machines} simulated machines at {args.rate:g} rows/s on "
            f"{bootstrap}; alerts follow (Ctrl-C stops)",
            flush=True,
        )
        plant_stop = threading.Event()
        with simulated_plant(
            bootstrap, settings.topic, args.machines, args.rate, args.seed, tally, plant_stop
        ):
            stop.wait(args.duration if args.duration > 0 else None)
        # The plant has stopped; give the streamer a moment to finish what was produced.
        stop.wait(3.0)
        stop.set()
        loop.join(60)
        print(summary(tally), flush=True)
    return 0
