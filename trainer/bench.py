"""``trainer bench``: one model per file, trained and judged alike, with the counts pooled.

The convention of per-file benchmarks (train on each file's first rows, set the threshold
from their scores, judge the rest) is ``--split unsupervised --train-end N``, the default
split here; every file is fitted by the same code as ``trainer fit``.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from trainer.data import expand_paths, read_table
from trainer.fit import FitSettings, fit
from trainer.metrics import rates

log = logging.getLogger(__name__)

COUNTS = ("tp", "fp", "fn", "tn", "rows", "unscored_rows", "intervals", "intervals_detected")
SUMMED_LISTS = ("delay_minutes", "delay_rows")


def bench(
    folder: Path, settings: FitSettings, registry: Path | None = None, progress: bool = True
) -> dict[str, Any]:
    """Fit and judge every CSV or Parquet file under ``folder``; per-file and pooled figures.

    Each file's bundle goes to ``registry``, or to a temporary one removed afterwards.
    """
    files = expand_paths([folder])
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        root = Path(scratch) if registry is None else registry
        per_file = [
            _one(path, settings, root)
            for path in tqdm(files, desc="files", unit="file", disable=not progress)
        ]
    return {"files": per_file, "pooled": pool([f["figures"] for f in per_file])}


def _one(path: Path, settings: FitSettings, registry: Path) -> dict[str, Any]:
    started = time.perf_counter()
    table = read_table([path], settings.data_options)
    one = dataclasses.replace(settings, data=(str(path),), registry=registry, progress=False)
    result = fit(one, table=table, on_stage=log.debug)
    seconds = time.perf_counter() - started
    return {"file": str(path), "seconds": round(seconds, 2), "figures": result.figures}


def pool(figures: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the confusion matrices and interval counts of several files; pool the delays."""
    out: dict[str, Any] = {k: sum(int(f.get(k) or 0) for f in figures) for k in COUNTS}
    out |= rates(out["tp"], out["fp"], out["fn"], out["tn"])
    out["files"] = len(figures)
    delays = {k: [x for f in figures for x in f.get(k) or []] for k in SUMMED_LISTS}
    out["median_delay_minutes"] = _median(delays["delay_minutes"])
    out["median_delay_rows"] = _median(delays["delay_rows"])
    out["interval_recall"] = (
        out["intervals_detected"] / out["intervals"] if out["intervals"] else None
    )
    out["false_alarm_rows_before_onset"] = sum(
        int(f.get("false_alarm_rows_before_onset") or 0) for f in figures
    )
    if any("breaks" in f for f in figures):
        out["breaks"] = sum(int(f.get("breaks") or 0) for f in figures)
        out["breaks_warned"] = sum(int(f.get("breaks_warned") or 0) for f in figures)
    return out


def _median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def bench_text(result: dict[str, Any]) -> str:
    """A line per file and the pooled figures, for the terminal."""
    lines = [
        f"{'file':<32} {'rows':>6} {'F1':>6} {'FPR':>6} {'missed':>6} {'found':>6} "
        f"{'delay':>7} {'s':>6}"
    ]
    for f in result["files"]:
        g = f["figures"]
        found = f"{g.get('intervals_detected', '-')}/{g.get('intervals', '-')}"
        lines.append(
            f"{Path(f['file']).name[-32:]:<32} {g.get('rows')!s:>6} {_num(g.get('f1'))} "
            f"{_num(g.get('fpr'))} {_num(g.get('missed_rate'))} {found:>6} "
            f"{_num(g.get('median_delay_rows'), 7, 0)} {f['seconds']:>6.1f}"
        )
    p = result["pooled"]
    seconds = [f["seconds"] for f in result["files"]]
    lines += [
        f"pooled over {p['files']} files, {p['rows']} judged rows ({p['unscored_rows']} unscored):",
        f"  row F1 {_num(p['f1'], 0)}, false-positive rate {_num(p['fpr'], 0)}, "
        f"missed rate {_num(p['missed_rate'], 0)}",
        f"  intervals detected {p['intervals_detected']} of {p['intervals']}; median delay "
        f"from onset to first alert {_num(p['median_delay_rows'], 0, 0)} rows "
        f"({_num(p['median_delay_minutes'], 0)} min); false-alarm rows before the onsets "
        f"{p['false_alarm_rows_before_onset']}",
        f"  time per file: median {statistics.median(seconds):.1f} s, total {sum(seconds):.1f} s",
    ]
    return "\n".join(lines)


def _num(value: Any, width: int = 6, digits: int = 3) -> str:
    text = "-" if value is None else f"{float(value):.{digits}f}"
    return f"{text:>{width}}"
