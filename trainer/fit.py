"""The fit job: read, prepare, split, train, choose the threshold, judge, write the bundle."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import platform
import statistics
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamer.bundle import FORMAT_VERSION, MANIFEST_FILE, MODEL_FILE, REPORT_DIR, Registry
from streamer.calibrate import reference_prior
from streamer.episodes import EpisodePolicy
from streamer.errors import DataError
from streamer.features import FeatureSpec, Scaler
from streamer.labels import Horizon
from streamer.scoring import Scorer
from streamer.windows import make_windows
from trainer.adaptive import AdaptiveChoice, choose_calibration
from trainer.card import CARD_FILE, load_evidence, model_card
from trainer.data import DataOptions, Table, read_table
from trainer.evaluate import Judgement, judge, row_thresholds
from trainer.guard import Judging, Verdict, check
from trainer.models import ModelConfig, fit_model
from trainer.prepare import Prepared, feature_spec, prepare
from trainer.registry import record_promotion
from trainer.split import TEST, TRAIN, VALIDATION, chronological_split, random_split
from trainer.threshold import ThresholdChoice, choose_threshold

log = logging.getLogger(__name__)

ADAPTIVE_RULE = (
    "each machine's threshold is the score its own rows exceeded at the target rate, read "
    "from a histogram of its scores that forgets with the time constant 'minutes'; a "
    "machine starts from 'prior' (the validation scores); the rate is the highest that kept "
    "the validation days within the false-alarm budget"
)
SUMMARY_KEYS = (
    "roc_auc",
    "pr_auc",
    "event_recall",
    "median_lead_minutes",
    "false_alarm_episodes_per_day",
    "recall",
    "fpr",
)


@dataclass(frozen=True)
class FitSettings:
    """Everything ``trainer fit`` needs, built once by the CLI."""

    data: tuple[str, ...]
    registry: Path
    data_options: DataOptions = field(default_factory=DataOptions)
    model: ModelConfig = field(default_factory=ModelConfig)
    lookback: int = 5
    horizon: Horizon = field(default_factory=Horizon)
    categorical: str | tuple[str, ...] = "auto"
    categorical_mode: str = "drop"
    max_gap_minutes: float | None = None
    protocol: str = "chronological"
    test_fraction: float = 0.2
    val_fraction: float = 0.2
    split_seed: int = 123
    train_end: str | None = None
    objective: str = "events"
    budget: float = 2.0
    target_fpr: float = 0.05
    threshold_mode: str = "adaptive"
    calibration_minutes: float = 1440.0
    evidence: Path | None = None
    min_lead: float = 2.0
    max_lead: float = 20.0
    clear_rows: int = 3
    seed: int = 0
    seeds: int = 1
    promote: bool = False
    force: bool = False
    progress: bool = True
    min_train_windows: int = 100


@dataclass
class SeedRun:
    """One trained model with its threshold and test judgement."""

    seed: int
    model: Any
    history: dict[str, list[float]]
    threshold: ThresholdChoice
    validation: Judgement
    test: Judgement
    adaptive: AdaptiveChoice | None = None


@dataclass
class FitResult:
    """What ``fit`` produced: the bundle folder, its figures and the spread over seeds."""

    bundle: Path
    version: str
    promoted: bool
    figures: dict[str, Any]
    seeds: dict[str, Any]
    decision: dict[str, Any] | None = None


def fit(
    settings: FitSettings, table: Table | None = None, on_stage: Callable[[str], None] | None = None
) -> FitResult:
    """Run the whole job; ``table`` may be given instead of files (the built-in sample)."""
    say = on_stage or log.info
    table = table if table is not None else read_table(settings.data, settings.data_options)
    say(f"read {table.summary()}")
    spec = feature_spec(table, settings.categorical, settings.categorical_mode)
    prepared = prepare(
        table, spec, settings.horizon, settings.data_options.label_mode, settings.max_gap_minutes
    )
    windows, ends, sets, split_info = _windows_and_sets(settings, table, prepared)
    scaler = Scaler.fit(prepared.rows[ends[(sets == TRAIN) & (prepared.labels[ends] == 0)]])
    windows = scaler.transform(windows)
    train = windows[(sets == TRAIN) & (prepared.labels[ends] == 0)]
    val = windows[(sets == VALIDATION) & (prepared.labels[ends] == 0)]
    if len(train) < settings.min_train_windows or len(val) == 0:
        raise DataError(
            f"too few normal rows to train: {len(train)} training and {len(val)} validation "
            f"windows (need at least {settings.min_train_windows} and 1); give more data"
        )
    say(
        f"{len(spec.feature_names)} features, lookback {settings.lookback}; "
        f"{len(train):,} training and {len(val):,} validation normal windows; "
        f"split {settings.protocol}"
    )
    if settings.protocol == "random":
        say(
            "random split: windows of the same minutes fall on both sides, and a break's "
            "rows are scattered over the sets; row-level figures are optimistic and the "
            "event-level ones do not describe a plant"
        )
    runs = [
        _run_seed(settings, prepared, windows, ends, sets, settings.seed + k, say)
        for k in range(settings.seeds)
    ]
    best = runs[0]
    seeds = _seed_summary(runs)
    version = _version_name(settings.model.kind)
    registry = Registry(settings.registry)
    evidence = load_evidence(settings.evidence)
    manifest = _manifest(settings, table, spec, scaler, prepared, best, split_info, version, seeds)
    verdicts: list[Verdict] = []

    def fill(folder: Path) -> None:
        best.model.save(folder / MODEL_FILE)
        (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        if settings.promote:
            # Judged from the written bundle, so the candidate meets exactly the current's code.
            verdicts.append(_guard(settings, registry, folder, table, split_info))
            manifest["promotion_check"] = verdicts[0].to_dict()
            (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        from trainer.report import write_report  # noqa: PLC0415  (matplotlib only here)

        write_report(folder / REPORT_DIR, manifest, best.history, best.validation, best.test)
        (folder / CARD_FILE).write_text(model_card(manifest, evidence), encoding="utf-8")

    folder = registry.write(version, fill)
    verdict = verdicts[0].to_dict() if verdicts else None
    decision = record_promotion(registry, version, verdict, settings.force)
    promoted = decision is not None and decision["current"] == version
    return FitResult(folder, version, promoted, best.test.figures, seeds, decision)


def _guard(
    settings: FitSettings, registry: Registry, folder: Path, table: Table, split: dict[str, Any]
) -> Verdict:
    judging = Judging(
        settings.data_options.label_mode, settings.min_lead, settings.max_lead, settings.budget
    )
    log.info(
        "judging the candidate and the current bundle on the rows from %s", split.get("test_from")
    )
    return check(registry, folder, table, split.get("test_from"), judging)


def _windows_and_sets(
    settings: FitSettings, table: Table, prepared: Prepared
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    windows, ends = make_windows(prepared.rows, prepared.segments, settings.lookback)
    if settings.protocol == "random":
        sets = random_split(
            len(ends), settings.test_fraction, settings.val_fraction, settings.split_seed
        )
        return windows, ends, sets, {"protocol": "random", "seed": settings.split_seed}
    if settings.protocol != "chronological":
        raise DataError(f"unknown split protocol {settings.protocol!r}")
    row_sets, (val_start, test_start) = chronological_split(
        prepared.times,
        prepared.break_times,
        settings.test_fraction,
        settings.val_fraction,
        guard_minutes=max(settings.max_lead, settings.horizon.minutes or 0.0),
        train_end=_train_end_minutes(settings.train_end, table),
    )
    info = {
        "protocol": "chronological",
        "validation_from": _iso(val_start),
        "test_from": _iso(test_start),
    }
    return windows, ends, row_sets[ends], info


def _train_end_minutes(train_end: str | None, table: Table) -> float | None:
    """``--train-end`` as minutes: a row count (digits) or a timestamp."""
    if train_end is None:
        return None
    times = np.sort(table.times_minutes())
    if train_end.isdigit():
        n = int(train_end)
        if not 0 < n < len(times):
            raise DataError(f"--train-end {n} rows: the data has {len(times)} rows")
        return float(times[n])
    import pandas as pd  # noqa: PLC0415

    try:
        stamp = pd.Timestamp(train_end)
    except ValueError as exc:
        raise DataError(f"--train-end {train_end!r} is neither a row count nor a time") from exc
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.value / 6e10


def _iso(minutes: float) -> str:
    return dt.datetime.fromtimestamp(minutes * 60, tz=dt.UTC).isoformat()


def _run_seed(
    settings: FitSettings,
    prepared: Prepared,
    windows: np.ndarray,
    ends: np.ndarray,
    sets: np.ndarray,
    seed: int,
    say: Callable[[str], None],
) -> SeedRun:
    normal = prepared.labels[ends] == 0
    say(f"seed {seed}: fitting the {settings.model.kind} autoencoder")
    model, history = fit_model(
        settings.model,
        windows[(sets == TRAIN) & normal],
        windows[(sets == VALIDATION) & normal],
        seed,
        settings.progress,
    )
    scores = np.full(len(prepared), np.nan)
    scores[ends] = Scorer(model, settings.lookback).score(windows)[0]
    row_set = np.full(len(prepared), -1, dtype=np.int8)
    row_set[ends] = sets
    policy = EpisodePolicy(settings.clear_rows)
    choice = choose_threshold(
        settings.objective,
        prepared,
        scores,
        row_set == VALIDATION,
        policy,
        settings.budget,
        settings.target_fpr,
        settings.min_lead,
        settings.max_lead,
    )
    val_limits: float | np.ndarray = choice.value
    test_limits: float | np.ndarray = choice.value
    adaptive = None
    if settings.threshold_mode == "adaptive":
        adaptive, val_limits, test_limits = _adapt(settings, prepared, scores, row_set, choice)
        say(f"seed {seed}: adaptive threshold at {adaptive.describe()}")
    leads = (settings.min_lead, settings.max_lead)
    validation = judge(
        prepared, scores, row_set == VALIDATION, val_limits, policy, *leads, intervals=False
    )
    test = judge(prepared, scores, row_set == TEST, test_limits, policy, *leads)
    figures = test.figures
    say(
        f"seed {seed}: test ROC AUC {figures['roc_auc']}, event recall "
        f"{figures['event_recall']}, false alarms/day {figures['false_alarm_episodes_per_day']}"
    )
    return SeedRun(seed, model, history, choice, validation, test, adaptive)


def _adapt(
    settings: FitSettings,
    prepared: Prepared,
    scores: np.ndarray,
    row_set: np.ndarray,
    choice: ThresholdChoice,
) -> tuple[AdaptiveChoice, np.ndarray, np.ndarray]:
    """The adaptive threshold: its target rate chosen on validation (the threshold running
    through the validation days into the test days, as in the backtest), and a prior so a
    streamer has it from a machine's first row; test rows are judged as such a streamer
    would meet them, from the prior on. Returns the choice and per-row thresholds."""
    val, test = row_set == VALIDATION, row_set == TEST
    found = choose_calibration(
        prepared,
        scores,
        val,
        val | test,
        EpisodePolicy(settings.clear_rows),
        settings.budget,
        choice.value,
        settings.calibration_minutes,
        "rate",
        (settings.min_lead, settings.max_lead),
    )
    # A machine's history holds about this many rows' weight once it is full.
    weight = settings.calibration_minutes / prepared.interval_minutes
    calibration = dataclasses.replace(
        found.calibration,
        prior=reference_prior(found.calibration.edges, scores[val & np.isfinite(scores)], weight),
    )
    adaptive = dataclasses.replace(found, calibration=calibration)
    val_limits = scores - found.margins
    test_limits = row_thresholds(calibration, choice.value, prepared, scores, test)
    return adaptive, val_limits, np.asarray(test_limits)


def _seed_summary(runs: list[SeedRun]) -> dict[str, Any]:
    out: dict[str, Any] = {"seeds": [r.seed for r in runs]}
    for key in SUMMARY_KEYS:
        values = [r.test.figures[key] for r in runs if r.test.figures.get(key) is not None]
        out[key] = {
            "values": values,
            "mean": statistics.fmean(values) if values else None,
            "sd": statistics.stdev(values) if len(values) > 1 else None,
        }
    return out


def _version_name(kind: str) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{kind}-{uuid.uuid4().hex[:6]}"


def _library_versions() -> dict[str, str]:
    import importlib.metadata as md  # noqa: PLC0415

    out = {"python": platform.python_version()}
    for name in ("tensorflow-cpu", "tensorflow", "keras", "numpy", "pandas", "scikit-learn"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


def _threshold_section(run: SeedRun) -> dict[str, Any]:
    section = run.threshold.to_dict()
    if run.adaptive is not None:
        section["value_role"] = "fallback while a machine has too few scores"
        section["adaptive"] = {
            **run.adaptive.calibration.to_dict(),
            "chosen": run.adaptive.describe(),
            "met_budget_on_validation": run.adaptive.met_budget,
            "rule": ADAPTIVE_RULE,
        }
    return section


def _manifest(
    settings: FitSettings,
    table: Table,
    spec: FeatureSpec,
    scaler: Scaler,
    prepared: Prepared,
    run: SeedRun,
    split: dict[str, Any],
    version: str,
    seeds: dict[str, Any],
) -> dict[str, Any]:
    frame = table.frame
    model = settings.model.resolved()
    return {
        "format_version": FORMAT_VERSION,
        "version": version,
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "model": {
            "file": MODEL_FILE,
            "kind": model.kind,
            "units": list(model.units or ()),
            "parameters": int(run.model.count_params()),
            "epochs_run": len(run.history.get("loss", [])),
            "learning_rate": model.learning_rate,
            "batch_size": model.batch_size,
            "seed": run.seed,
            "score": "mean squared reconstruction error of the window's last step, scaled units",
        },
        "features": spec.to_dict(),
        "preprocessing": {
            "lookback": settings.lookback,
            "max_gap_minutes": prepared.max_gap_minutes,
            "interval_minutes": prepared.interval_minutes,
            "missing_values": "carried forward within a machine",
        },
        "labels": {
            "mode": settings.data_options.label_mode,
            "horizon_minutes": settings.horizon.minutes
            if settings.horizon.minutes is not None
            else (settings.horizon.rows or 0) * prepared.interval_minutes,
            "horizon_rows": settings.horizon.rows,
        },
        "scaler": {**scaler.to_dict(), "fitted_on": "training rows with label 0"},
        "threshold": _threshold_section(run),
        "episodes": {"clear_rows": settings.clear_rows},
        "evaluation": {
            "min_lead_minutes": settings.min_lead,
            "max_lead_minutes": settings.max_lead,
        },
        "metrics": {
            "validation": run.validation.figures,
            "test": run.test.figures,
            "over_seeds": seeds,
        },
        "data": {
            "sources": list(table.sources),
            "rows": len(frame),
            "machines": int(frame["machine_id"].nunique()),
            "from": frame["time"].min().isoformat(),
            "to": frame["time"].max().isoformat(),
            "breaks": len(prepared.break_times),
            "split": split,
        },
        "libraries": _library_versions(),
    }
