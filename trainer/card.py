"""The model card in each bundle: what the model does, why this method, what to expect of it
and where it fails, written for the engineer who decides whether to trust its warnings."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from streamer.errors import DataError

CARD_FILE = "MODEL_CARD.md"
DEFAULT_EVIDENCE = "evidence/walkforward-dev.json"


def load_evidence(path: Path | None = None) -> dict[str, Any]:
    """A walk-forward table: the given ``backtest.json`` of ``trainer backtest`` (a list of
    rows, or an object with ``rows``), or the one on the dev data that chose the default."""
    if path is None:
        text = resources.files("trainer").joinpath(DEFAULT_EVIDENCE).read_text(encoding="utf-8")
        source = "the dev data's walk-forward backtest, shipped with the trainer"
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise DataError(f"--evidence {path}: cannot read it ({exc})") from exc
        source = str(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{source}: not a backtest.json ({exc})") from exc
    doc = {"rows": data} if isinstance(data, list) else data
    rows = doc.get("rows") if isinstance(doc, dict) else None
    needed = ("method", "breaks", "breaks_warned", "event_recall", "false_alarm_episodes_per_day")
    if not rows or not all(isinstance(r, dict) and all(k in r for k in needed) for r in rows):
        raise DataError(f"{source}: not a backtest.json (rows with {', '.join(needed)})")
    return {**doc, "source": source}


def method_of(manifest: Mapping[str, Any]) -> str:
    """The bundle's method in the backtest's naming: the one its score section names, else
    the model with ``-at`` if the threshold adapts."""
    named = (manifest.get("score") or {}).get("method")
    if named:
        return str(named)
    adaptive = manifest["threshold"].get("adaptive") is not None
    return f"{manifest['model']['kind']}{'-at' if adaptive else ''}"


def best_row(rows: Sequence[Mapping[str, Any]], budget: float) -> Mapping[str, Any] | None:
    """The most breaks warned within the false-alarm budget; fewer false alarms break ties."""
    within = [r for r in rows if r["false_alarm_episodes_per_day"] <= budget]
    if not within:
        return None
    return max(within, key=lambda r: (r["breaks_warned"], -r["false_alarm_episodes_per_day"]))


def model_card(manifest: Mapping[str, Any], evidence: Mapping[str, Any]) -> str:
    """The card as Markdown."""
    budget = float(evidence.get("settings", {}).get("budget", 2.0))
    rows = evidence["rows"]
    mine = method_of(manifest)
    best = best_row(rows, budget)
    lines = [
        f"# Model card: {manifest['version']}",
        "",
        *_what(manifest),
        *_why(mine, best, rows, evidence, budget),
        *_expect(manifest, mine, rows, evidence),
        *_failures(manifest),
        *_data(manifest),
        *_test_table(manifest),
        *_promotion_lines(manifest.get("promotion_check")),
    ]
    return "\n".join(lines) + "\n"


def _what(manifest: Mapping[str, Any]) -> list[str]:
    thr = manifest["threshold"]
    width = len(manifest["features"]["feature_names"])
    adaptive = thr.get("adaptive")
    if adaptive is not None:
        threshold = (
            f"adaptive, per machine: the score the machine's own rows exceeded at a rate of "
            f"{adaptive['rate']:g} per row, from a history of its scores that forgets with a "
            f"time constant of {adaptive['minutes']:g} minutes. A machine starts from the "
            "validation scores' histogram, so it has a threshold from its first row and makes "
            f"it its own within about a day. Rate chosen on validation: {adaptive['chosen']}, "
            + (
                "the highest that kept the validation days within the budget."
                if adaptive.get("met_budget_on_validation", True)
                else "the quietest tried, since none kept the validation days within the budget."
            )
        )
    else:
        threshold = (
            f"fixed at {thr['value']:.5g}, chosen on validation by '{thr['objective']}': "
            f"{thr['rule']}."
        )
    return [
        "## What it does",
        "",
        _score_line(manifest, width),
        f"- Threshold: {threshold}",
        f"- Alerts: an episode opens when a row's score reaches its threshold and closes after "
        f"{manifest['episodes']['clear_rows']} rows below it; the streamer publishes one "
        "message when it opens, one when it gets more severe, one when it ends.",
        "",
    ]


def _score_line(manifest: Mapping[str, Any], width: int) -> str:
    model, lookback = manifest["model"], manifest["preprocessing"]["lookback"]
    autoencoder = (
        f"the {model['kind']} autoencoder (units {model['units']}, {model['parameters']:,} "
        f"parameters) over windows of {lookback} rows of {width} features"
    )
    section = manifest.get("score")
    if not section:
        return f"- Score: {autoencoder}; the score is the {model['score']}."
    parts = []
    for part in section["parts"]:
        if part["kind"] == "trees":
            recipe = part["recipe"]
            parts.append(
                f"gradient-boosted trees trained on the labelled breaks (the 20 minutes before "
                f"each as positive) over each sensor's standard deviation in the last "
                f"{recipe['volatility']} rows, its changes over {recipe['lags']} rows and its "
                f"z-score against the {recipe['back']} rows before, plus the rows since the "
                "last restart"
            )
        elif part.get("deviation_rows"):
            parts.append(
                f"{autoencoder}, each row taken as its deviation from the mean of the "
                f"machine's previous {part['deviation_rows']} rows (drift in the levels "
                "cancels out), scored by the reconstruction error of the last row"
            )
        else:
            parts.append(f"{autoencoder}, scored by the reconstruction error of the last row")
    if len(parts) == 1:
        return f"- Score: {parts[0]}."
    listed = "; ".join(f"({i + 1}) {text}" for i, text in enumerate(parts))
    return (
        f"- Score: the mean of the percentiles of {len(parts)} scores, each among its own "
        f"scores on the validation rows: {listed}."
    )


def _why(
    mine: str,
    best: Mapping[str, Any] | None,
    rows: Sequence[Mapping[str, Any]],
    evidence: Mapping[str, Any],
    budget: float,
) -> list[str]:
    settings = evidence.get("settings", {})
    lines = [
        "## Why this method",
        "",
        f"Every candidate was judged on the same walk-forward folds ({evidence['source']}"
        + (f"; {evidence['data']}" if evidence.get("data") else "")
        + "): "
        + (
            f"{settings['folds']} test blocks, each model trained only on the days before its "
            f"block and its threshold chosen on the {settings['val_days']:g} days just before. "
            if settings
            else ""
        )
        + (
            f"The default was chosen by a rule fixed before the comparison ran: {evidence['rule']}"
            if evidence.get("rule")
            else f"The default is the row that warns the most breaks 2 to 20 minutes ahead "
            f"within {budget:g} false-alarm episodes a day, fewer false alarms breaking ties."
        ),
        "",
    ]
    if evidence.get("choice"):
        lines += [str(evidence["choice"]), ""]
        lines += _seed_table(evidence.get("seeds") or {}, mine)
    elif best is not None:
        verdict = (
            f"This bundle's method, `{mine}`, is that row."
            if best["method"] == mine
            else f"The best row is `{best['method']}`; this bundle's method is `{mine}`, "
            "chosen by its trainer's flags."
        )
        lines += [verdict, ""]
    if evidence.get("command"):
        lines += ["The table came from:", "", "```", str(evidence["command"]), "```", ""]
    lines += [
        "| method | breaks warned | recall (95% CI) | false alarms / day | by fold "
        "| median lead (min) | ROC AUC |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        low, high = r.get("event_recall_ci") or (None, None)
        name = f"**{r['method']}**" if r["method"] == mine else r["method"]
        over = " (over budget)" if r["false_alarm_episodes_per_day"] > budget else ""
        folds = " / ".join(f"{x:.1f}" for x in r.get("false_alarms_per_day_by_fold", []))
        lines.append(
            f"| {name} | {r['breaks_warned']} of {r['breaks']} | {_fmt(r['event_recall'])} "
            f"({_fmt(low)}-{_fmt(high)}) | {_fmt(r['false_alarm_episodes_per_day'], 2)}{over} "
            f"| {folds} | {_fmt(r.get('median_lead_minutes'), 1)} "
            f"| {_fmt(r.get('roc_auc_mean_over_folds'))} |"
        )
    return [*lines, ""]


def _seed_table(seeds: Mapping[str, Any], mine: str) -> list[str]:
    if not seeds:
        return []
    lines = [
        "| candidate | seed | breaks warned | false alarms / day | by block | PR AUC |",
        "|---|---|---|---|---|---|",
    ]
    for method, runs in seeds.items():
        name = f"**{method}**" if method == mine else method
        for seed, r in runs.items():
            folds = " / ".join(f"{x:.1f}" for x in r.get("false_alarms_per_day_by_fold", []))
            lines.append(
                f"| {name} | {seed} | {r['breaks_warned']} of {r['breaks']} | "
                f"{_fmt(r['false_alarm_episodes_per_day'], 2)} | {folds or 'n/a'} | "
                f"{_fmt(r.get('pr_auc_pooled'), 4)} |"
            )
    return [*lines, ""]


def _expect(
    manifest: Mapping[str, Any],
    mine: str,
    rows: Sequence[Mapping[str, Any]],
    evidence: Mapping[str, Any],
) -> list[str]:
    test = manifest["metrics"]["test"]
    lines = ["## What to expect", ""]
    row = next((r for r in rows if r["method"] == mine), None)
    if row is not None:
        by_fold = row.get("false_alarms_per_day_by_fold") or [row["false_alarm_episodes_per_day"]]
        low, high = row.get("event_recall_ci") or (None, None)
        lines.append(
            f"- Walk-forward, on days the models never saw: {row['breaks_warned']} of "
            f"{row['breaks']} breaks warned 2 to 20 minutes ahead (recall "
            f"{_fmt(row['event_recall'])}, 95% CI {_fmt(low)} to {_fmt(high)}), "
            f"{_fmt(row['false_alarm_episodes_per_day'], 2)} false-alarm episodes a day "
            f"({_fmt(min(by_fold), 1)} to {_fmt(max(by_fold), 1)} across blocks), median lead "
            f"{_fmt(row.get('median_lead_minutes'), 1)} minutes."
        )
        for seed, figures in (evidence.get("other_seeds", {}).get(mine) or {}).items():
            lines.append(
                f"  With training seed {seed}: {figures['breaks_warned']} of {row['breaks']} at "
                f"{_fmt(figures['false_alarm_episodes_per_day'], 2)} a day."
            )
    split = manifest["data"]["split"]
    where = f"from {split['test_from']}" if split.get("test_from") else "(a random split)"
    lines += [
        f"- This bundle on its own held-out rows {where}: {_held_out_text(test)}",
        "- Read an alert as a prompt to look at the machine (its message names the sensors "
        "that explain the score), not as a forecast: most breaks still come without one.",
        "",
    ]
    return lines


def _failures(manifest: Mapping[str, Any]) -> list[str]:
    adaptive = manifest["threshold"].get("adaptive")
    lines = [
        "## Known failure modes",
        "",
        "- Most breaks are missed. On the dev data no method warned more than about one "
        "break in six within the budget; many breaks show nothing unusual in the sensors "
        "minutes before, or only in the last 2 minutes, too late to count.",
        "- Drift and grade changes: the process moves over days (some sensors sit 15 to 20 "
        "training standard deviations away on later days), so far from the training data "
        "does not mean a break is near. Retrain on recent archive rows (the scheduled fit) "
        "and let the promotion guard judge the new model on the newest days.",
    ]
    if adaptive is not None:
        lines += [
            "- The adaptive threshold holds the alert rate, not the truth: a machine that "
            "stays abnormal for a whole day raises its own threshold and stops warning, and a "
            "machine that is quiet for days alerts at its usual rate on small excursions.",
            "- When a new model goes live, every machine's threshold starts again from the "
            "validation scores, so its first hours are judged against the training plant, "
            "not its own history (restarts and rebalances resume it from the state topic).",
        ]
    parts = (manifest.get("score") or {}).get("parts") or []
    if any(p["kind"] == "trees" for p in parts):
        lines += [
            "- The trees learned from the breaks of their training days: a kind of break those "
            "days did not hold gets only the autoencoder's share of the score, and a plant "
            "whose archive carries no `break` signal cannot retrain them. Their score "
            "follows short-term restlessness (a few sensors' standard deviation over the last "
            "10 minutes leads it), so a grade change or a deliberate adjustment that moves "
            "many sensors at once alerts like a precursor.",
        ]
    if any(p.get("deviation_rows") for p in parts):
        lines += [
            "- Deviations from the last hour or so cancel slow drift, and with it slow "
            "precursors: a break announced by a level creeping over hours is not seen; each "
            "restart needs 5 rows before the first score and about an hour before the local "
            "mean settles.",
        ]
    lines += [
        f"- Sensors: it needs the {len(manifest['features']['sensors'])} sensors it was "
        "trained on. Rows naming fewer than half of them are refused; a sensor missing for "
        "longer than the carry-forward limit stops the machine's scoring (degraded) until "
        "it returns. Another sensor set needs another model.",
        "- Warnings come late: leads are mostly a few minutes, so a warning leaves little "
        "time to act; the lead-time metric on the dashboard shows what the plant gets.",
        "",
    ]
    return lines


def _data(manifest: Mapping[str, Any]) -> list[str]:
    data, thr = manifest["data"], manifest["threshold"]
    return [
        "## Data and training",
        "",
        f"- {data['rows']:,} rows, {data['machines']} machine(s), {data['from']} to "
        f"{data['to']}, {data['breaks']} breaks; split: "
        + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in data["split"].items())
        + ".",
        f"- {manifest['model']['epochs_run']} epochs, seed {manifest['model']['seed']}; "
        f"horizon {manifest['labels']['horizon_minutes']} minutes.",
        f"- Fixed threshold {thr['value']:.5g} (objective '{thr['objective']}', achieved on "
        f"validation {thr['achieved_on_validation']})"
        + ("; with the adaptive threshold it is only the fallback." if thr.get("adaptive") else ".")
        + "",
        "",
    ]


def _held_out_text(test: Mapping[str, Any]) -> str:
    """The held-out figures in a sentence: per interval for interval labels, else per break."""
    if "intervals" in test:
        return (
            f"{test['intervals_detected']} of {test['intervals']} anomalous intervals detected, "
            f"median delay {_fmt(test['median_delay_rows'], 0)} rows from onset to first alert; "
            f"row F1 {_fmt(test['f1'])}, false-positive rate {_fmt(test['fpr'])}, missed rate "
            f"{_fmt(test['missed_rate'])}."
        )
    return (
        f"{test['breaks_warned']} of "
        f"{test['breaks']} breaks warned (recall {_fmt(test['event_recall'])}, 95% CI "
        f"{_fmt(test.get('event_recall_ci'))}), {_fmt(test['false_alarm_episodes_per_day'], 2)} "
        f"false-alarm episodes a day over {test['days']} days, median lead "
        f"{_fmt(test['median_lead_minutes'], 1)} minutes (CI "
        f"{_fmt(test.get('median_lead_ci'), 1)}). Few breaks make these intervals wide."
    )


def _judged_rows(test: Mapping[str, Any]) -> list[str]:
    """Table rows of the held-out figures that the kind of labels gives meaning to."""
    if "intervals" in test:
        return [
            f"| row F1 / missed rate | {_fmt(test['f1'])} / {_fmt(test['missed_rate'])} | |",
            f"| intervals detected | {test['intervals_detected']} of {test['intervals']} | |",
            f"| median delay, onset to first alert (rows) | "
            f"{_fmt(test['median_delay_rows'], 0)} | |",
            f"| false-alarm rows before the onsets | {test['false_alarm_rows_before_onset']} | |",
        ]
    return [
        f"| breaks warned 2-20 min ahead | {test['breaks_warned']} of {test['breaks']} "
        f"({_fmt(test['event_recall'])}) | {_fmt(test.get('event_recall_ci'))} |",
        f"| median lead (minutes) | {_fmt(test['median_lead_minutes'], 1)} | "
        f"{_fmt(test.get('median_lead_ci'), 1)} |",
        f"| false-alarm episodes per day | {_fmt(test['false_alarm_episodes_per_day'], 2)} "
        f"({test['false_alarm_episodes']} in {test['days']} days) | |",
    ]


def _test_table(manifest: Mapping[str, Any]) -> list[str]:
    test, seeds = manifest["metrics"]["test"], manifest["metrics"]["over_seeds"]
    return [
        "## Held-out figures",
        "",
        "| figure | value | 95% interval |",
        "|---|---|---|",
        f"| ROC AUC | {_fmt(test['roc_auc'])} | {_fmt(test.get('roc_auc_ci'))} |",
        f"| PR AUC | {_fmt(test['pr_auc'])} | |",
        *_judged_rows(test),
        f"| row recall / FPR at threshold | {_fmt(test['recall'])} / {_fmt(test['fpr'])} | |",
        f"| confusion (tn, fp, fn, tp) | {test['tn']}, {test['fp']}, {test['fn']}, "
        f"{test['tp']} | |",
        "",
        f"Over seeds {seeds['seeds']}: ROC AUC mean {_fmt(seeds['roc_auc']['mean'])}, "
        f"sd {_fmt(seeds['roc_auc']['sd'])}; event recall mean "
        f"{_fmt(seeds['event_recall']['mean'])}.",
        "",
        "Plots in report/: loss, threshold, errors, roc_pr, confusion, timeline.",
        "",
    ]


def _promotion_lines(check: Mapping[str, Any] | None) -> list[str]:
    """The guard's comparison with the bundle that was current when this one was trained."""
    if not check:
        return []
    figures = check["figures"]
    lines = [
        "## Promotion check",
        "",
        f"{'Accepted' if check['accepted'] else 'Refused'}: {check['reason']}.",
        f"Rule: {check['rule']}.",
    ]
    if figures:
        held = check["held_out"]
        lines += [
            "",
            f"Held-out rows from {held['from']} to {held['to']}:",
            "",
            f"| figure | this bundle | current ({check['compared_with']}) |",
            "|---|---|---|",
        ]
        current = figures.get("current") or {}
        for key, value in figures["candidate"].items():
            lines.append(f"| {key.replace('_', ' ')} | {_fmt(value)} | {_fmt(current.get(key))} |")
    return [*lines, ""]


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, list | tuple) and len(value) == 2:
        return f"[{_fmt(value[0], digits)}, {_fmt(value[1], digits)}]"
    if isinstance(value, dict) and "median" in value:
        return f"{_fmt(value['median'], digits)} (median, adaptive)"
    return str(value)
