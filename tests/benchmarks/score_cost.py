"""What a bundle's score costs the streamer's core: rows per second through ``process``.

Two bundles trained on the same simulated history (the reference LSTM on raw rows, and a
method of the walk-forward table, by default ``trainer fit``'s) score the same encoded rows
of many machines in batches, in one process, alternating, so the ratio of their speeds is
measured under the same load. No broker: this isolates decoding, windows, the score and
the thresholds from Kafka.

    .venv/bin/python tests/benchmarks/score_cost.py [--method NAME] [--rows N] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from throughput import BenchMessage, RowSource

from streamer.machines import DataQuality, MachineWindows
from streamer.pipeline import Model, process
from streamer.settings import StreamerSettings
from streamer.simulate import PlantParams, simulate_history
from trainer.fit_defaults import DEFAULT_METHOD


def build(registry: Path, method: str | None) -> Path:
    """A one-epoch bundle of ``method`` (None: the reference LSTM) on simulated history."""
    from trainer.data import LABEL, MACHINE, TIME, Table  # noqa: PLC0415
    from trainer.fit import FitSettings, fit  # noqa: PLC0415
    from trainer.fit_method import plan  # noqa: PLC0415
    from trainer.models import ModelConfig  # noqa: PLC0415

    history = simulate_history(PlantParams.load(), machines=2, days=3, seed=5)
    frame = history.rename(columns={"ts": TIME, "break": LABEL, "machine_id": MACHINE})
    sensors = tuple(c for c in frame.columns if c not in (TIME, LABEL, MACHINE))
    table = Table(frame=frame, sensors=sensors, sources=("simulated",))
    chosen = plan(method) if method else None
    settings = FitSettings(
        data=(),
        registry=registry,
        model=ModelConfig(kind="lstm", epochs=1),
        progress=False,
        method=method if chosen and chosen.composite else None,
        threshold_mode=chosen.threshold_mode if chosen else None,
        alert_share=chosen.alert_share if chosen else 1.0,
    )
    return fit(settings, table=table).bundle


def windows_for(model: Model) -> MachineWindows:
    """Empty windows shaped for the bundle, with the streamer's default data-quality rule
    (idle machines judged, as ``streamer run`` does)."""
    bundle, fields = model.bundle, StreamerSettings.__dataclass_fields__
    gap = int(bundle.max_gap_minutes * 60_000)
    idle = int(fields["idle_minutes"].default * 60_000)
    quality = DataQuality(gap, gap, fields["min_sensor_share"].default, idle)
    return MachineWindows(bundle.spec, bundle.lookback, quality, bundle.history)


def run(model: Model, windows: MachineWindows, batches: list[list[BenchMessage]]) -> float:
    """Seconds to process the batches."""
    started = time.perf_counter()
    for batch in batches:
        process(model, windows, batch, 1 << 20, 0)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default=DEFAULT_METHOD, help="the method to compare")
    parser.add_argument("--rows", type=int, default=200_000, help="rows per timed round")
    parser.add_argument("--machines", type=int, default=1000, help="simulated machines")
    parser.add_argument("--batch", type=int, default=2000, help="rows per process() call")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed rounds")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="score-cost-") as tmp:
        print("training the two bundles on simulated history ...", flush=True)
        models = {
            "reference lstm": Model.load(build(Path(tmp) / "a", None)),
            args.method: Model.load(build(Path(tmp) / "b", args.method)),
        }
    source = RowSource(args.machines, seed=5)
    warm = source.take(args.machines * 40)  # every machine's history filled before timing
    rows = source.take(args.rows * args.rounds)
    state = {name: windows_for(m) for name, m in models.items()}
    for name, model in models.items():
        run(model, state[name], _batches(warm, 0, args.batch))
    seconds: dict[str, float] = dict.fromkeys(models, 0.0)
    for k in range(args.rounds):
        part = rows[k * args.rows : (k + 1) * args.rows]
        for name, model in models.items():
            seconds[name] += run(model, state[name], _batches(part, len(warm), args.batch))
    total = args.rows * args.rounds
    result: dict[str, Any] = {n: round(total / s) for n, s in seconds.items()}
    result["ratio"] = round(seconds["reference lstm"] / seconds[args.method], 3)
    for name in models:
        print(f"{name:>30}: {result[name]:,} rows/s")
    print(f"{'speed of ' + args.method + ' / reference':>30}: {result['ratio']}")
    if args.json:
        print(json.dumps(result))
    return 0


def _batches(rows: list[tuple[bytes, bytes]], first: int, size: int) -> list[list[BenchMessage]]:
    messages = [BenchMessage(k, v, first + i) for i, (k, v) in enumerate(rows)]
    return [messages[i : i + size] for i in range(0, len(messages), size)]


if __name__ == "__main__":
    sys.exit(main())
