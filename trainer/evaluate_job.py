"""The evaluate job: a bundle, labelled rows, and the plant-level figures."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from streamer.bundle import Bundle, Registry, load_bundle
from streamer.errors import BundleError, DataError
from streamer.labels import Horizon
from trainer.data import MACHINE, TIME, DataOptions, Table, read_table
from trainer.evaluate import Judgement, judge, row_thresholds
from trainer.margins import lead_window
from trainer.parts import bundle_scores
from trainer.prepare import Prepared, prepare, sampling_interval

log = logging.getLogger(__name__)


def evaluate(
    bundle_dir: Path | None,
    registry: Path | None,
    data: tuple[str, ...],
    options: DataOptions,
    from_time: str | None = None,
    min_lead: float | None = None,
    max_lead: float | None = None,
    scores_out: Path | None = None,
    lead_rows: tuple[int | None, int | None] = (None, None),
) -> dict[str, Any]:
    """Score ``data`` with the bundle (or the registry's current one) and judge the scores.

    An unset lead window is counted in the data's sampling intervals (see trainer.margins).
    """
    folder = bundle_dir if bundle_dir is not None else Registry(registry or ".").current_path()
    bundle = load_bundle(folder)
    table = read_table(data, options)
    interval = sampling_interval(table.times_minutes(), table.machine_codes())
    min_lead, max_lead = lead_window(min_lead, lead_rows[0], max_lead, lead_rows[1], interval)
    start = _minutes(from_time) if from_time is not None else None
    judged, prepared, scores, mask = judge_table(
        bundle, table, options.label_mode, start, min_lead, max_lead
    )
    if scores_out is not None:
        limits = row_thresholds(bundle.calibration, bundle.threshold, prepared, scores, mask)
        write_scores(scores_out, table, prepared, scores, mask, limits)
    return {**judged.figures, "bundle": str(folder), "model_version": bundle.version}


def judge_table(
    bundle: Bundle,
    table: Table,
    label_mode: str,
    from_minutes: float | None,
    min_lead: float,
    max_lead: float,
    intervals: bool = True,
) -> tuple[Judgement, Prepared, np.ndarray, np.ndarray]:
    """Score ``table`` with ``bundle`` as the streamer would, and judge rows from a time on.

    An adaptive threshold starts from the bundle's prior at ``from_minutes`` (the first row
    if None), as in a streamer that took the bundle then; earlier rows only fill windows.
    """
    check_sensors(bundle, table)
    prepared = prepare(
        table,
        bundle.spec,
        Horizon(minutes=bundle.horizon_minutes),
        label_mode,
        bundle.max_gap_minutes,
    )
    scores = bundle_scores(bundle, prepared)
    mask = np.ones(len(prepared), dtype=bool)
    if from_minutes is not None:
        mask = prepared.times >= from_minutes
        if not mask.any():
            raise DataError(f"no rows at or after {_iso(from_minutes)} to judge")
    policy = bundle.episode_policy
    limits = row_thresholds(bundle.calibration, bundle.threshold, prepared, scores, mask)
    judged = judge(prepared, scores, mask, limits, policy, min_lead, max_lead, intervals)
    return judged, prepared, scores, mask


def check_sensors(bundle: Bundle, table: Table) -> None:
    """Refuse data that lacks sensors the bundle was trained on."""
    missing = [s for s in bundle.spec.sensors if s not in table.sensors]
    if missing:
        raise BundleError(
            f"bundle {bundle.version} expects {len(bundle.spec.sensors)} sensors; the data lacks "
            f"{len(missing)} of them ({', '.join(missing[:5])}): it is from another feature set"
        )


def write_scores(
    path: Path,
    table: Table,
    prepared: Prepared,
    scores: np.ndarray,
    mask: np.ndarray,
    threshold: float | np.ndarray,
) -> None:
    """One CSV row per judged row: time, machine, score, threshold, alert flag and label.

    Only rows with a score are written: rows still filling their first window after a start
    or a gap are left out here as in the figures, so the file and the figures count alike.
    """
    rows = table.frame.iloc[prepared.source_index]
    frame = pd.DataFrame(
        {
            "time": rows[TIME].to_numpy(),
            "machine_id": rows[MACHINE].to_numpy(),
            "score": scores,
            "threshold": threshold,
            "alert": (np.nan_to_num(scores, nan=-np.inf) >= threshold).astype(int),
            "label": prepared.labels,
        }
    )[mask & np.isfinite(scores)]
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    log.info("wrote %d scored rows to %s", len(frame), path)


def _minutes(text: str) -> float:
    try:
        stamp = pd.Timestamp(text)
    except ValueError as exc:
        raise DataError(f"--from {text!r} is not a time") from exc
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.value / 6e10


def _iso(minutes: float) -> str:
    return pd.Timestamp(round(minutes * 6e10), tz="UTC").isoformat()
