"""``python -m trainer``: fit a model into the registry, or evaluate a bundle on labelled rows."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamer.cliutil import EnvFlags, comma_ints, comma_names, start
from streamer.errors import ConfigError, SheetBreakError
from streamer.labels import Horizon
from trainer.data import DataOptions, Table
from trainer.exits import EPILOG, OK, REFUSED, exit_code
from trainer.fit_defaults import DEFAULT_METHOD
from trainer.models import MODEL_KINDS, ModelConfig
from trainer.registry_cli import add_registry_command, run_registry
from trainer.sources import add_archive_flags, archive_table, check_source
from trainer.span import UNSUPERVISED, training_defaults
from trainer.split import PROTOCOLS
from trainer.threshold import OBJECTIVES, THRESHOLD_MODES

if TYPE_CHECKING:
    from trainer.fit import FitSettings

log = logging.getLogger("trainer")

JSON_KEYS = (
    "roc_auc",
    "pr_auc",
    "event_recall",
    "median_lead_minutes",
    "false_alarm_episodes_per_day",
    "breaks",
    "rows",
)
ENV_PREFIX = "TRAINER_"


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """The CLI; every flag also reads ``TRAINER_<FLAG>`` from the environment."""
    parser = argparse.ArgumentParser(
        prog="python -m trainer",
        description="Train the sheet-break autoencoder on archived rows and judge it the way a "
        "plant would: breaks warned ahead, lead time, false-alarm episodes per day.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fit = commands.add_parser(
        "fit",
        help="train a model and write a bundle to the registry",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _data_flags(EnvFlags(fit, environ, ENV_PREFIX), sample=True)
    add_archive_flags(EnvFlags(fit, environ, ENV_PREFIX))
    _fit_flags(EnvFlags(fit, environ, ENV_PREFIX))
    _judge_flags(EnvFlags(fit, environ, ENV_PREFIX))
    back = commands.add_parser(
        "backtest",
        help="walk-forward comparison of methods on the same folds (train on earlier days only)",
    )
    flags = EnvFlags(back, environ, ENV_PREFIX)
    _data_flags(flags, sample=False)
    flags.add(
        "--methods",
        type=comma_names,
        default=("pca", "dense", "lstm"),
        help="comma-separated methods to compare: a model (pca, dense, lstm, gbm, lr) with "
        "options joined by '-' (rc re-centre, lbN lookback, norm/maha errors, smK smoothing, "
        "at adaptive threshold; see trainer/methods.py), parts joined by '+' form a rank "
        "ensemble, e.g. lstm-rc,gbm-rc,lstm-rc+gbm-rc-at",
    )
    flags.add("--folds", type=int, default=4, help="test blocks after the first training days")
    flags.add("--min-train-days", type=float, default=8.0, help="days before the first block")
    flags.add(
        "--val-days",
        type=float,
        default=2.0,
        help="days before each block that choose its threshold",
    )
    flags.add("--lookback", type=int, default=5, help="rows per window")
    flags.add("--epochs", type=int, default=200, help="most epochs per fit")
    flags.add("--budget", type=float, default=2.0, help="false-alarm episodes per day allowed")
    flags.add(
        "--recentre-minutes",
        type=float,
        default=60.0,
        help="time constant of the per-machine baseline of the rc option",
    )
    flags.add(
        "--calibration-minutes",
        type=float,
        default=1440.0,
        help="trailing period (time constant) of the adaptive threshold of the at option",
    )
    flags.add(
        "--widen-minutes",
        type=float,
        default=20.0,
        help="supervised heads learn the rows this many minutes before a break as positive",
    )
    flags.add("--seed", type=int, default=0, help="training seed")
    flags.add(
        "--cadence-days",
        type=float,
        default=0.0,
        help="retrain before every test block this many days long, as the closed loop's "
        "scheduled trainer does (replaces --folds); 0: --folds equal blocks",
    )
    flags.add(
        "--trailing-days",
        type=float,
        default=0.0,
        help="train each block's models on only this many days before its validation "
        "days, like a trainer reading the archive's last days (0: every earlier day)",
    )
    flags.add("--out", type=Path, default=Path("backtest"), help="folder for the table and plot")
    _judge_flags(flags, rows=False)
    ev = commands.add_parser("evaluate", help="score labelled rows with a bundle and judge it")
    flags = EnvFlags(ev, environ, ENV_PREFIX)
    where = ev.add_mutually_exclusive_group(required=False)
    EnvFlags(where, environ, ENV_PREFIX).add("--bundle", type=Path, help="bundle folder")
    flags.add("--registry", type=Path, help="registry folder: use its current bundle")
    _data_flags(flags, sample=False)
    _judge_flags(flags)
    flags.add(
        "--from",
        dest="from_time",
        help="judge only rows from this time on (earlier rows are context for windows)",
    )
    flags.add(
        "--scores-out",
        type=Path,
        help="write a CSV of time, machine, score, threshold, alert and label per row",
    )
    _bench_parser(commands, environ)
    add_registry_command(commands, environ, ENV_PREFIX)
    return parser


BENCH_HELP = """Fit one model per file and judge each file's later rows, with the counts pooled.

The convention of per-file anomaly benchmarks is the default here (--split unsupervised):
each file's model trains on its rows before --train-end (a row count such as 400, or a
time) without looking at their labels, early stopping watches the last --val-fraction of
them, the threshold is the --threshold-quantile of their scores times
--threshold-multiplier (or the score they exceed at --target-rate), and only the rows
after the span are judged. With --label-mode interval each file reports row F1,
false-positive and missed rates, intervals detected, the delay from an interval's onset to
its first alert and the false-alarm rows before it; the pooled figures sum the files'
confusion matrices and interval counts. Every fit is the code of 'trainer fit'; all fit
flags apply. Example:

  python -m trainer bench --folder files/ --label-mode interval --train-end 400"""


def _bench_parser(commands: Any, environ: Mapping[str, str]) -> None:
    bench = commands.add_parser(
        "bench",
        help="fit and judge one model per file of a folder; pooled row and interval figures",
        description=BENCH_HELP,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    flags = EnvFlags(bench, environ, ENV_PREFIX)
    flags.add("--folder", type=Path, required=True, help="folder of CSV or Parquet files")
    _data_flags(flags, sample=False, files=False)
    _fit_flags(flags, split=UNSUPERVISED, registry=None)
    _judge_flags(flags)


def _data_flags(flags: EnvFlags, sample: bool, files: bool = True) -> None:
    if files:
        flags.add("--data", nargs="+", default=[], help="CSV or Parquet files, folders or globs")
    if sample:
        flags.add(
            "--sample",
            action="store_true",
            help="train on simulated plant history instead of files (no data needed)",
        )
        flags.add("--sample-machines", type=int, default=3, help="machines in the sample")
        flags.add("--sample-days", type=float, default=6.0, help="days of sample history")
    flags.add("--time-column", help="time column (default: time, ts or timestamp)")
    flags.add(
        "--time-format",
        help="strptime format of the time column, e.g. %%m/%%d/%%y "
        "%%H:%%M (default: detect; numbers are epoch milliseconds)",
    )
    flags.add("--label-column", help="label column (default: y, break or label)")
    flags.add(
        "--label-mode",
        default="event",
        choices=("event", "interval"),
        help="event: 1 marks the row a break happened; interval: 1 marks anomalous rows",
    )
    flags.add("--machine-column", help="machine id column (default: machine_id if present)")
    flags.add("--drop", type=comma_names, default=(), help="comma-separated columns to ignore")
    flags.add("--separator", default=",", help="CSV field separator")


def _fit_flags(
    flags: EnvFlags, split: str = "chronological", registry: Path | None = Path("registry")
) -> None:
    flags.add(
        "--registry",
        type=Path,
        default=registry,
        help="registry folder" + ("" if registry else " (default: a temporary one)"),
    )
    flags.add(
        "--model",
        choices=MODEL_KINDS,
        help="train this reference autoencoder on the raw rows instead of --method's default "
        "(lstm: the articles' LSTM autoencoder)",
    )
    flags.add("--units", type=comma_ints, help="layer sizes (default: lstm 5,16,1; dense 32,16,16)")
    flags.add(
        "--lookback",
        type=int,
        default=5,
        help="rows per window (dense and pca score each window's last row)",
    )
    flags.add(
        "--horizon-minutes",
        type=float,
        help="label the rows this many minutes before a break positive (default: 2 sampling "
        "intervals, 4 minutes on the dev data)",
    )
    flags.add("--horizon-rows", type=int, help="label this many rows before a break instead")
    flags.add(
        "--categorical",
        default="auto",
        help="auto (integer sensors with few levels), none, or comma-separated names",
    )
    flags.add(
        "--categorical-mode",
        default="drop",
        choices=("drop", "onehot"),
        help="drop categoricals (the articles) or one-hot encode them",
    )
    flags.add(
        "--max-gap-minutes",
        type=float,
        help="a longer gap restarts the window (default: 5 sampling intervals)",
    )
    flags.add(
        "--split",
        default=split,
        choices=(*PROTOCOLS, UNSUPERVISED),
        help="chronological: later days validate and test; random: the articles' split; "
        "unsupervised: train on the rows before --train-end with no labels, threshold from "
        "their own scores, judge the rest",
    )
    flags.add("--test-fraction", type=float, default=0.2, help="share of rows for test")
    flags.add(
        "--val-fraction",
        type=float,
        default=0.2,
        help="share of the rest for validation (unsupervised: the tail of the training span "
        "that early stopping watches)",
    )
    flags.add("--split-seed", type=int, default=123, help="seed of the random split")
    flags.add(
        "--train-end",
        help="training part ends here: a time or a number of rows (unsupervised: the span)",
    )
    flags.add(
        "--objective",
        default="events",
        choices=tuple(OBJECTIVES),
        help="how the threshold is chosen on validation: "
        + "; ".join(f"{k}: {v}" for k, v in OBJECTIVES.items()),
    )
    flags.add(
        "--budget",
        type=float,
        default=2.0,
        help="false-alarm episodes per day allowed (objective events)",
    )
    flags.add(
        "--target-fpr", type=float, default=0.05, help="row false-positive rate (objective fpr)"
    )
    flags.add(
        "--method",
        default=None,
        help=f"the method of the walk-forward table to train and serve (default "
        f"{DEFAULT_METHOD}, chosen by the rule in README 'Detection quality'; --model alone "
        "trains that autoencoder on raw rows instead): "
        "autoencoders (lstm, dense, pca, optionally on ld30 local deviations) and gbm-ft, "
        "joined by '+' into a rank ensemble, ending in -at (adaptive threshold) or -cN (one "
        "threshold putting at most N%% of validation rows in alert), e.g. "
        "lstm-ld30+gbm-ft-at",
    )
    flags.add(
        "--threshold",
        dest="threshold_mode",
        choices=THRESHOLD_MODES,
        help="adaptive (the default, best in the walk-forward backtest): each machine's "
        "threshold follows its own recent scores at a target alert rate chosen on validation "
        "for the budget; fixed: one value chosen on validation by --objective (the only "
        "mode of --split unsupervised)",
    )
    flags.add(
        "--threshold-quantile",
        type=float,
        default=0.99,
        help="unsupervised: the threshold is this quantile of the training span's scores ...",
    )
    flags.add("--threshold-multiplier", type=float, default=1.0, help="... times this multiplier")
    flags.add(
        "--target-rate",
        type=float,
        help="unsupervised: instead, the threshold the span's rows exceed at this rate",
    )
    flags.add(
        "--calibration-minutes",
        type=float,
        default=1440.0,
        help="trailing period (time constant) of the adaptive threshold's score history",
    )
    flags.add(
        "--evidence",
        type=Path,
        help="backtest.json of a 'trainer backtest' run to put in the model card (default: "
        "the walk-forward table of the dev data that chose the default method)",
    )
    flags.add("--epochs", type=int, default=200, help="most epochs (early stopping ends sooner)")
    flags.add(
        "--patience",
        type=int,
        help="epochs without improvement before stop (default 10)",
    )
    flags.add(
        "--min-epochs",
        type=int,
        help="early stopping may not stop before this epoch (default 0; unsupervised 20)",
    )
    flags.add(
        "--plateau-patience",
        type=int,
        help="halve the learning rate after this many epochs without improvement, 0 never "
        "(default 0; unsupervised 5)",
    )
    flags.add(
        "--min-delta",
        type=float,
        default=1e-4,
        help="smallest validation loss drop that counts as an improvement",
    )
    flags.add(
        "--batch-size",
        type=int,
        help="training batch (default: lstm 64, dense 128; unsupervised 32)",
    )
    flags.add(
        "--learning-rate",
        type=float,
        help="Adam step (default: lstm 1e-4, dense 1e-3; unsupervised 1e-2)",
    )
    flags.add("--pca-variance", type=float, default=0.9, help="variance kept by the PCA model")
    flags.add(
        "--clear-rows", type=int, default=3, help="rows below threshold that close an alert episode"
    )
    flags.add("--seed", type=int, default=0, help="first training seed")
    flags.add(
        "--seeds",
        type=int,
        default=1,
        help="train this many seeds; report mean and spread (the bundle keeps the first)",
    )
    flags.add(
        "--promote",
        action="store_true",
        help="make the new bundle current if it warns at least as well as the current one on "
        "the same held-out newest days (an empty registry always takes it)",
    )
    flags.add(
        "--force",
        action="store_true",
        default=False,
        help="with --promote: make it current even if the guard refuses (recorded as forced)",
    )
    flags.add("--no-progress", action="store_true", help="no progress bar")


def _judge_flags(flags: EnvFlags, rows: bool = True) -> None:
    if not rows:  # the backtest keeps its fixed lead window in minutes
        flags.add("--min-lead", type=float, default=2.0, help="warn at least these minutes ahead")
        flags.add("--max-lead", type=float, default=20.0, help="and at most this many minutes")
        flags.add("--json", action="store_true", help="end the output with one JSON line")
        return
    flags.add(
        "--min-lead",
        type=float,
        help="a warning must come at least this many minutes before the break (default: 1 "
        "sampling interval, 2 minutes on the dev data)",
    )
    flags.add("--min-lead-rows", type=int, help="... or at least this many rows")
    flags.add(
        "--max-lead",
        type=float,
        help="and at most this many minutes (default: 10 sampling intervals, 20 minutes on "
        "the dev data); also the margin a chronological split keeps before a break",
    )
    flags.add("--max-lead-rows", type=int, help="... or at most this many rows")
    flags.add("--json", action="store_true", help="end the output with one JSON line")


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = start(build_parser, argv, environ)
    try:
        if args.command == "backtest":
            return _backtest(args)
        if args.command == "registry":
            return run_registry(args)
        if args.command == "bench":
            return _bench(args)
        figures = _fit(args) if args.command == "fit" else _evaluate(args)
    except SheetBreakError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exit_code(exc)
    _print_figures(figures)
    if args.json:
        print(json.dumps(figures, separators=(",", ":")))
    refused = (figures.get("promotion") or {}).get("outcome") == "refused"
    return REFUSED if refused else OK


def _data_options(args: argparse.Namespace, label_mode: str | None = None) -> DataOptions:
    return DataOptions(
        time_column=args.time_column,
        time_format=args.time_format,
        label_column=args.label_column,
        label_mode=label_mode or args.label_mode,
        machine_column=args.machine_column,
        drop_columns=tuple(args.drop),
        separator=args.separator,
    )


def _sample_table(machines: int, days: float, seed: int) -> Table:
    from streamer.simulate import PlantParams, simulate_history  # noqa: PLC0415
    from trainer.data import LABEL, MACHINE, TIME  # noqa: PLC0415

    frame = simulate_history(PlantParams.load(), machines=machines, days=days, seed=seed)
    frame = frame.rename(columns={"ts": TIME, "break": LABEL, "machine_id": MACHINE})
    sensors = tuple(c for c in frame.columns if c not in (TIME, LABEL, MACHINE))
    return Table(frame=frame, sensors=sensors, sources=(f"simulated:{machines}x{days}d",))


def fit_settings(args: argparse.Namespace) -> FitSettings:
    """``FitSettings`` from the fit flags; unset training flags take the mode's defaults."""
    from trainer.fit import FitSettings  # noqa: PLC0415

    given: str = args.categorical
    categorical = given if given in ("auto", "none") else comma_names(given)
    if args.horizon_rows is not None and args.horizon_minutes is not None:
        raise ConfigError("give --horizon-minutes or --horizon-rows, not both")
    horizon = (
        Horizon(minutes=None, rows=args.horizon_rows)
        if args.horizon_rows is not None
        else (None if args.horizon_minutes is None else Horizon(minutes=args.horizon_minutes))
    )
    defaults = training_defaults(args.split)
    from trainer.fit_method import plan  # noqa: PLC0415

    unlabelled = args.split == UNSUPERVISED
    name = args.method or (None if args.model or unlabelled else DEFAULT_METHOD)
    method = plan(name) if name else None
    if method is not None and method.composite and unlabelled:
        raise ConfigError(
            f"--method {name} learns from labelled breaks, which --split unsupervised does not "
            "use; leave --method out (the reference LSTM) or give --model"
        )
    return FitSettings(
        data=tuple(getattr(args, "data", ())),
        registry=args.registry,
        data_options=_data_options(args),
        model=ModelConfig(
            kind=args.model or "lstm",
            units=args.units,
            epochs=args.epochs,
            batch_size=_given(args.batch_size, defaults["batch_size"]),
            learning_rate=_given(args.learning_rate, defaults["learning_rate"]),
            patience=int(_given(args.patience, defaults["patience"])),
            min_delta=args.min_delta,
            pca_variance=args.pca_variance,
            min_epochs=int(_given(args.min_epochs, defaults["min_epochs"])),
            plateau_patience=int(_given(args.plateau_patience, defaults["plateau_patience"])),
        ),
        lookback=args.lookback,
        horizon=horizon,
        categorical=categorical,
        categorical_mode=args.categorical_mode,
        max_gap_minutes=args.max_gap_minutes,
        protocol=args.split,
        test_fraction=args.test_fraction,
        val_fraction=args.val_fraction,
        split_seed=args.split_seed,
        train_end=args.train_end,
        objective=args.objective,
        budget=args.budget,
        target_fpr=args.target_fpr,
        threshold_mode=args.threshold_mode or (method.threshold_mode if method else None),
        alert_share=method.alert_share if method else 1.0,
        method=name if method and method.composite else None,
        threshold_quantile=args.threshold_quantile,
        threshold_multiplier=args.threshold_multiplier,
        target_rate=args.target_rate,
        calibration_minutes=args.calibration_minutes,
        evidence=args.evidence,
        min_lead=args.min_lead,
        max_lead=args.max_lead,
        min_lead_rows=args.min_lead_rows,
        max_lead_rows=args.max_lead_rows,
        clear_rows=args.clear_rows,
        seed=args.seed,
        seeds=args.seeds,
        promote=args.promote,
        force=args.force,
        progress=not args.no_progress,
    )


def _given(value: Any, default: Any) -> Any:
    return default if value is None else value


def _fit(args: argparse.Namespace) -> dict[str, Any]:
    from trainer.fit import fit  # noqa: PLC0415

    check_source(args)
    if args.force and not args.promote:
        raise ConfigError("--force only makes sense with --promote")
    settings = fit_settings(args)
    table = (
        _sample_table(args.sample_machines, args.sample_days, args.seed)
        if args.sample
        else archive_table(args)
    )
    result = fit(settings, table=table)
    log.info("bundle %s written%s", result.bundle, " and made current" if result.promoted else "")
    return {
        **{k: result.figures.get(k) for k in JSON_KEYS},
        "bundle": str(result.bundle),
        "version": result.version,
        "promoted": result.promoted,
        "promotion": result.decision,
        "test": result.figures,
        "over_seeds": result.seeds,
    }


def _backtest(args: argparse.Namespace) -> int:
    from trainer.backtest import BacktestSettings, backtest, table_text  # noqa: PLC0415

    if not args.data:
        raise SheetBreakError("give --data PATH... to backtest on")
    settings = BacktestSettings(
        data=tuple(args.data),
        out=args.out,
        data_options=_data_options(args),
        methods=tuple(args.methods),
        folds=args.folds,
        min_train_days=args.min_train_days,
        val_days=args.val_days,
        lookback=args.lookback,
        epochs=args.epochs,
        budget=args.budget,
        min_lead=args.min_lead,
        max_lead=args.max_lead,
        recentre_minutes=args.recentre_minutes,
        calibration_minutes=args.calibration_minutes,
        widen_minutes=args.widen_minutes,
        seed=args.seed,
        cadence_days=args.cadence_days,
        trailing_days=args.trailing_days,
    )
    try:
        rows = backtest(settings)
    except ValueError as exc:
        raise SheetBreakError(str(exc)) from exc
    print(table_text(rows, settings))
    log.info("table, JSON, CSV and plot written to %s", args.out)
    if args.json:
        print(json.dumps(rows, separators=(",", ":")))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from trainer.bench import bench, bench_text  # noqa: PLC0415

    result = bench(args.folder, fit_settings(args), args.registry, not args.no_progress)
    print(bench_text(result))
    if args.json:
        print(json.dumps(result, separators=(",", ":")))
    return OK


def _evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from trainer.evaluate_job import evaluate  # noqa: PLC0415

    if not args.data:
        raise SheetBreakError("give --data PATH... to evaluate on")
    if args.bundle is None and args.registry is None:
        raise SheetBreakError("give --bundle DIR or --registry DIR")
    figures = evaluate(
        args.bundle,
        args.registry,
        tuple(args.data),
        _data_options(args),
        args.from_time,
        args.min_lead,
        args.max_lead,
        args.scores_out,
        (args.min_lead_rows, args.max_lead_rows),
    )
    return {**{k: figures.get(k) for k in JSON_KEYS}, "evaluation": figures}


def _print_events(figures: Mapping[str, Any]) -> None:
    low, high = figures.get("lead_window_minutes") or (None, None)
    print(
        f"breaks warned {low:g}-{high:g} min:     {figures.get('breaks_warned')} of "
        f"{figures.get('breaks')} (recall {figures.get('event_recall')}, CI "
        f"{figures.get('event_recall_ci')})"
    )
    print(f"median lead (minutes):      {figures.get('median_lead_minutes')}")
    print(f"false-alarm episodes/day:   {figures.get('false_alarm_episodes_per_day')}")


def _print_intervals(figures: Mapping[str, Any]) -> None:
    print(
        f"row F1 / FPR / missed:      {figures.get('f1')} / {figures.get('fpr')} / "
        f"{figures.get('missed_rate')}"
    )
    print(
        f"intervals detected:         {figures.get('intervals_detected')} of "
        f"{figures.get('intervals')}; median delay {figures.get('median_delay_rows')} rows "
        f"({figures.get('median_delay_minutes')} min) from onset to first alert"
    )
    print(f"false-alarm rows before the onsets: {figures.get('false_alarm_rows_before_onset')}")


def _threshold_text(threshold: Any) -> str:
    if isinstance(threshold, dict):
        return (
            f"per machine, adaptive: median {threshold.get('median')}, 5-95% "
            f"{threshold.get('p5')} to {threshold.get('p95')}"
        )
    return str(threshold)


def _print_figures(out: Mapping[str, Any]) -> None:
    figures = out.get("test") or out.get("evaluation") or {}
    unscored = figures.get("unscored_rows")
    print(f"rows judged:                {figures.get('rows')} ({unscored} without a full window)")
    print(
        f"ROC AUC / PR AUC:           {figures.get('roc_auc')} "
        f"(95% CI {figures.get('roc_auc_ci')}) / {figures.get('pr_auc')}"
    )
    if "intervals" in figures:
        _print_intervals(figures)
    else:
        _print_events(figures)
    print(
        f"row recall / FPR:           {figures.get('recall')} / {figures.get('fpr')} "
        f"at threshold {_threshold_text(figures.get('threshold'))}"
    )
    seeds = out.get("over_seeds")
    if seeds and len(seeds["seeds"]) > 1:
        auc = seeds["roc_auc"]
        print(
            f"over seeds {seeds['seeds']}: ROC AUC mean {auc['mean']:.4f} sd {auc['sd']:.4f} "
            f"values {[round(v, 4) for v in auc['values']]}"
        )
    if "bundle" in out:
        print(f"bundle:                     {out['bundle']}")
