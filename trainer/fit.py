"""The fit job: read, prepare, split, train, choose the threshold, judge, write the bundle."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
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
from streamer.errors import ConfigError, DataError
from streamer.features import FeatureSpec, Scaler
from streamer.labels import Horizon
from streamer.scoring import Scorer
from streamer.windows import make_windows
from trainer.adaptive import AdaptiveChoice, choose_calibration
from trainer.card import CARD_FILE, load_evidence, model_card
from trainer.data import DataOptions, Table, read_table
from trainer.evaluate import Judgement, judge, row_thresholds
from trainer.fit_method import manifest_parts, plan, train_method
from trainer.guard import Judging, Verdict, check
from trainer.margins import horizon_of, lead_window
from trainer.models import ModelConfig, fit_model
from trainer.parts import TrainedParts
from trainer.prepare import Prepared, feature_spec, prepare, sampling_interval
from trainer.registry import record_promotion
from trainer.span import UNSUPERVISED, span_sets, span_threshold
from trainer.split import TEST, TRAIN, VALIDATION, chronological_split, random_split
from trainer.split_check import Parts, check_parts
from trainer.threshold import ThresholdChoice, choose_threshold
from trainer.variants import ScoreOptions

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
    horizon: Horizon | None = None  # None: HORIZON_ROWS sampling intervals, in minutes
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
    threshold_mode: str | None = None  # None: adaptive, or fixed in the unsupervised mode
    threshold_quantile: float = 0.99
    threshold_multiplier: float = 1.0
    target_rate: float | None = None
    calibration_minutes: float = 1440.0
    evidence: Path | None = None
    min_lead: float | None = None  # None: MIN_LEAD_ROWS sampling intervals
    max_lead: float | None = None  # None: MAX_LEAD_ROWS sampling intervals
    min_lead_rows: int | None = None
    max_lead_rows: int | None = None
    clear_rows: int = 3
    seed: int = 0
    seeds: int = 1
    promote: bool = False
    force: bool = False
    progress: bool = True
    min_train_windows: int = 100
    method: str | None = None  # a served method of the backtest (trainer/methods.py)
    alert_share: float = 1.0  # most validation rows a fixed threshold may put in alert

    def leads(self) -> tuple[float, float]:
        """The lead window in minutes, once ``resolve`` has filled it in from the data."""
        if self.min_lead is None or self.max_lead is None:
            raise ValueError("the lead window is not resolved; call resolve() first")
        return self.min_lead, self.max_lead

    def labelled_horizon(self) -> Horizon:
        """The labelling horizon, once ``resolve`` has filled it in from the data."""
        if self.horizon is None:
            raise ValueError("the horizon is not resolved; call resolve() first")
        return self.horizon

    @property
    def unsupervised(self) -> bool:
        """Training on a span without labels, threshold from the span's own scores."""
        return self.protocol == UNSUPERVISED

    def resolve(self, interval: float) -> FitSettings:
        """These settings with the horizon, lead window and threshold mode filled in."""
        leads = lead_window(
            self.min_lead, self.min_lead_rows, self.max_lead, self.max_lead_rows, interval
        )
        mode = self.threshold_mode or ("fixed" if self.unsupervised else "adaptive")
        if self.unsupervised and mode == "adaptive":
            raise ConfigError(
                "--threshold adaptive chooses its rate on labelled validation rows, which "
                "--split unsupervised does not use; give --threshold fixed or leave it out"
            )
        horizon = self.horizon or horizon_of(None, None, interval)
        return dataclasses.replace(
            self, horizon=horizon, min_lead=leads[0], max_lead=leads[1], threshold_mode=mode
        )


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
    parts: TrainedParts | None = None  # a composite method's parts, when one was trained


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
    settings = settings.resolve(sampling_interval(table.times_minutes(), table.machine_codes()))
    spec = feature_spec(table, settings.categorical, settings.categorical_mode)
    prepared = prepare(
        table,
        spec,
        settings.labelled_horizon(),
        settings.data_options.label_mode,
        settings.max_gap_minutes,
    )
    windows, ends, sets, split_info = _windows_and_sets(settings, table, prepared)
    chosen = _trained_on(settings, prepared, ends)
    scaler = Scaler.fit(prepared.rows[ends[(sets == TRAIN) & chosen]])
    windows = scaler.transform(windows)
    train = windows[(sets == TRAIN) & chosen]
    val = windows[(sets == VALIDATION) & chosen]
    _check_parts(
        settings, table, prepared, len(train), len(val), int(((sets == TRAIN) & ~chosen).sum())
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
        _run_seed(settings, prepared, windows, ends, sets, settings.seed + k, say, (table, spec))
        for k in range(settings.seeds)
    ]
    best = runs[0]
    seeds = _seed_summary(runs)
    version = _version_name(settings.model.kind)
    registry = Registry(settings.registry)
    evidence = load_evidence(settings.evidence)
    manifest = _manifest(settings, table, spec, scaler, prepared, best, split_info, version, seeds)
    verdicts: list[Verdict] = []

    if best.parts is not None:
        served = manifest_parts(best.parts)
        manifest["score"], manifest["scaler"] = served["score"], served["scaler"]
        manifest["model"]["score"] = served["summary"]

    def fill(folder: Path) -> None:
        if best.parts is not None:
            best.parts.save(folder)
        else:
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


def _trained_on(settings: FitSettings, prepared: Prepared, ends: np.ndarray) -> np.ndarray:
    """Windows the model may learn from: those with label 0, or all in the unsupervised mode."""
    if settings.unsupervised:
        return np.ones(len(ends), dtype=bool)
    return np.asarray(prepared.labels[ends] == 0)


def _check_parts(
    settings: FitSettings,
    table: Table,
    prepared: Prepared,
    train: int,
    val: int,
    labelled: int,
) -> None:
    parts = Parts(
        settings.protocol,
        train,
        val,
        labelled,
        settings.min_train_windows,
        settings.val_fraction,
        _margin_minutes(settings),
        prepared.interval_minutes,
    )
    if train < settings.min_train_windows or val == 0:
        parts = dataclasses.replace(parts, moved=_moved_boundary(settings, table, prepared))
    check_parts(parts)


def _margin_minutes(settings: FitSettings) -> float:
    """How far before a break a chronological boundary may not fall."""
    return max(settings.leads()[1], settings.labelled_horizon().minutes or 0.0)


def _moved_boundary(
    settings: FitSettings, table: Table, prepared: Prepared
) -> tuple[str, str, str] | None:
    """The first boundary the margin moved past a break: (planned, actual, onset) times."""
    if settings.protocol != "chronological":
        return None
    split = functools.partial(
        chronological_split,
        prepared.times,
        prepared.break_times,
        settings.test_fraction,
        settings.val_fraction,
        train_end=_train_end_minutes(settings.train_end, table),
    )
    _, planned = split(guard_minutes=0.0)
    _, actual = split(guard_minutes=_margin_minutes(settings))
    for before, after in zip(planned, actual, strict=True):
        if after != before:
            onset = float(prepared.break_times[prepared.break_times >= before].min())
            return _iso(before), _iso(after), _iso(onset)
    return None


def _guard(
    settings: FitSettings, registry: Registry, folder: Path, table: Table, split: dict[str, Any]
) -> Verdict:
    judging = Judging(settings.data_options.label_mode, *settings.leads(), settings.budget)
    log.info(
        "judging the candidate and the current bundle on the rows from %s", split.get("test_from")
    )
    return check(registry, folder, table, split.get("test_from"), judging)


def _windows_and_sets(
    settings: FitSettings, table: Table, prepared: Prepared
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    windows, ends = make_windows(prepared.rows, prepared.segments, settings.lookback)
    if settings.unsupervised:
        end = _train_end_minutes(settings.train_end, table)
        row_sets, (holdout, span_end) = span_sets(prepared.times, end, settings.val_fraction)
        info = {
            "protocol": UNSUPERVISED,
            "validation_from": _iso(holdout),
            "test_from": _iso(span_end),
            "labels_used_for_training": False,
        }
        return windows, ends, row_sets[ends], info
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
        guard_minutes=_margin_minutes(settings),
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
    source: tuple[Table, FeatureSpec],
) -> SeedRun:
    row_set = np.full(len(prepared), -1, dtype=np.int8)
    row_set[ends] = sets
    trained = None
    if settings.method is not None and plan(settings.method).composite:
        say(f"seed {seed}: fitting the parts of {settings.method}")
        options = ScoreOptions(settings.lookback, settings.model.epochs, seed=seed)
        trained, scores = train_method(
            plan(settings.method).method, *source, prepared, row_set, options
        )
        first = trained.first
        assert first is not None
        model, history = first.scorer.model, trained.history
    else:
        chosen = _trained_on(settings, prepared, ends)
        say(f"seed {seed}: fitting the {settings.model.kind} autoencoder")
        model, history = fit_model(
            settings.model,
            windows[(sets == TRAIN) & chosen],
            windows[(sets == VALIDATION) & chosen],
            seed,
            settings.progress,
        )
        scores = np.full(len(prepared), np.nan)
        scores[ends] = Scorer(model, settings.lookback).score(windows)[0]
    policy = EpisodePolicy(settings.clear_rows)
    # The unsupervised mode judges its threshold where it set it: on the whole span.
    chosen_on = (row_set == TRAIN) | (row_set == VALIDATION) if settings.unsupervised else None
    choice = _threshold(settings, prepared, scores, row_set, policy)
    val_limits: float | np.ndarray = choice.value
    test_limits: float | np.ndarray = choice.value
    adaptive = None
    if settings.threshold_mode == "adaptive":
        adaptive, val_limits, test_limits = _adapt(settings, prepared, scores, row_set, choice)
        say(f"seed {seed}: adaptive threshold at {adaptive.describe()}")
    leads = settings.leads()
    val_rows = row_set == VALIDATION if chosen_on is None else chosen_on
    validation = judge(prepared, scores, val_rows, val_limits, policy, *leads, intervals=False)
    test = judge(prepared, scores, row_set == TEST, test_limits, policy, *leads)
    say(f"seed {seed}: test {_headline(test.figures)}")
    return SeedRun(seed, model, history, choice, validation, test, adaptive, trained)


def _threshold(
    settings: FitSettings,
    prepared: Prepared,
    scores: np.ndarray,
    row_set: np.ndarray,
    policy: EpisodePolicy,
) -> ThresholdChoice:
    """The span's own quantile in the unsupervised mode, else the objective on validation."""
    if settings.unsupervised:
        span = (row_set == TRAIN) | (row_set == VALIDATION)
        return span_threshold(
            scores,
            span,
            settings.threshold_quantile,
            settings.threshold_multiplier,
            settings.target_rate,
        )
    return choose_threshold(
        settings.objective,
        prepared,
        scores,
        row_set == VALIDATION,
        policy,
        settings.budget,
        settings.target_fpr,
        *settings.leads(),
        alert_share=settings.alert_share,
    )


def _headline(figures: dict[str, Any]) -> str:
    if "intervals" in figures:
        return (
            f"row F1 {figures['f1']}, FPR {figures['fpr']}, intervals detected "
            f"{figures['intervals_detected']} of {figures['intervals']}"
        )
    return (
        f"ROC AUC {figures['roc_auc']}, event recall {figures['event_recall']}, "
        f"false alarms/day {figures['false_alarm_episodes_per_day']}"
    )


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
        settings.leads(),
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
    horizon = settings.labelled_horizon()
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
            "horizon_minutes": horizon.minutes
            if horizon.minutes is not None
            else (horizon.rows or 0) * prepared.interval_minutes,
            "horizon_rows": horizon.rows,
        },
        "scaler": {
            **scaler.to_dict(),
            "fitted_on": "training span rows, labels unused"
            if settings.unsupervised
            else "training rows with label 0",
        },
        "threshold": _threshold_section(run),
        "episodes": {"clear_rows": settings.clear_rows},
        "evaluation": {
            "min_lead_minutes": settings.leads()[0],
            "max_lead_minutes": settings.leads()[1],
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
