"""Method names of ``trainer backtest``: a model, its inputs, its score and its threshold.

A name is one or more parts joined by ``+`` (a rank ensemble of their scores); a part is a
model followed by options, joined by ``-``:

- models: ``pca``, ``dense``, ``lstm`` (autoencoders, scored by reconstruction error);
  ``gbm`` (gradient boosting) and ``lr`` (logistic regression), supervised on windowed
  features with the label widened to the minutes before each break;
- inputs: ``rc`` / ``rcM`` re-centre each row on the machine's exponentially weighted
  past (time constant M minutes, default ``--recentre-minutes``); ``rmM`` on the plain
  mean of the previous M minutes instead; ``sr`` restarts the baseline at each restart
  of the process, ``gr`` at each grade change; ``ldN`` takes each row's local deviation
  from the plain mean of the N rows before it since the last restart (default 30, the
  form the streamer serves); ``oh`` one-hot categoricals; ``d`` appends
  first differences; ``ck`` appends the log of the minutes since the machine's last
  restart (breaks cluster just after restarts); ``lbN`` windows of N rows;
- supervised features: ``ft`` replaces the window summary by the short-history recipe of
  :class:`streamer.history.ShortFeatures` (volatility, lagged changes, z-scores, rows
  since the restart) with its number of boosting rounds chosen by contiguous folds of
  the training days;
- errors: ``norm`` divides each sensor's squared error by its mean on validation;
  ``maha`` is the Mahalanobis distance of the error vector under its validation
  covariance;
- whole score: ``smK`` averages the last K scores; ``at`` adapts the threshold online to
  a target alert rate per machine; ``ats`` too, but extrapolating from the 5% quantile;
  ``cN`` lets a fixed threshold put at most N% of the validation rows in alert;
  ``z`` (ensembles) averages robust z-scores of the log scores instead of percentiles.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

AUTOENCODERS = ("pca", "dense", "lstm")
SUPERVISED = ("gbm", "lr")
_NUMBERED = re.compile(r"^(rc|rm|ld|lb|sm|c)(\d+(?:\.\d+)?)?$")
DEVIATION_ROWS = 30


@dataclass(frozen=True)
class Inputs:
    """How the model's input rows are built from the prepared rows."""

    recentre: float | None = None
    rolling: float | None = None
    deviation: int | None = None
    segment_resets: bool = False
    grade_resets: bool = False
    onehot: bool = False
    diffs: bool = False
    clock: bool = False


@dataclass(frozen=True)
class Part:
    """One score: a model on some inputs, its reconstruction errors combined one way."""

    model: str
    inputs: Inputs = Inputs()
    lookback: int | None = None
    errors: str = "mean"
    recipe: bool = False


@dataclass(frozen=True)
class Method:
    """A row of the table: one or more scores, how they combine, and how alerts are decided."""

    name: str
    parts: tuple[Part, ...]
    smooth: int = 1
    adaptive: str = ""
    combine: str = "rank"
    alert_share: float = 1.0


def parse_method(name: str, recentre_minutes: float) -> Method:
    """Read a method name; raises ValueError naming the part it could not read."""
    parts: list[Part] = []
    flags: dict[str, float | str] = {}
    known = AUTOENCODERS + SUPERVISED
    for text in name.split("+"):
        model, *options = text.split("-")
        if model not in known:
            raise ValueError(f"method {name!r}: {model!r} is not one of {', '.join(known)}")
        part = Part(model)
        for option in options:
            numbered = _NUMBERED.match(option)
            if numbered:
                part = _numbered(
                    part, numbered.group(1), numbered.group(2), flags, recentre_minutes
                )
            else:
                part = _switch(part, option, flags, name)
        parts.append(part)
    return Method(
        name,
        tuple(parts),
        smooth=int(flags.get("smooth", 1)),
        adaptive=str(flags.get("adaptive", "")),
        combine=str(flags.get("combine", "rank")),
        alert_share=float(flags.get("alert_share", 100.0)) / 100.0,
    )


def _numbered(
    part: Part, key: str, number: str | None, flags: dict[str, float | str], recentre: float
) -> Part:
    value = float(number) if number else None
    if key == "rc":
        return replace(part, inputs=replace(part.inputs, recentre=value or recentre))
    if key == "ld":
        return replace(part, inputs=replace(part.inputs, deviation=int(value or DEVIATION_ROWS)))
    if value is None:
        raise ValueError(f"option {key!r} needs a number, as in {key}10")
    if key == "rm":
        return replace(part, inputs=replace(part.inputs, rolling=value))
    if key == "lb":
        return replace(part, lookback=int(value))
    if key == "c":
        flags["alert_share"] = value
        return part
    flags["smooth"] = int(value)
    return part


_SWITCHES = {
    "sr": "segment_resets",
    "gr": "grade_resets",
    "oh": "onehot",
    "d": "diffs",
    "ck": "clock",
}
_FLAGS: dict[str, tuple[str, str]] = {
    "at": ("adaptive", "rate"),
    "ats": ("adaptive", "stretch"),
    "z": ("combine", "z"),
}


def _switch(part: Part, option: str, flags: dict[str, float | str], name: str) -> Part:
    if option in _SWITCHES:
        return replace(part, inputs=replace(part.inputs, **{_SWITCHES[option]: True}))
    if option in ("norm", "maha"):
        return replace(part, errors=option)
    if option == "ft":
        if part.model not in SUPERVISED:
            raise ValueError(f"method {name!r}: 'ft' is an option of {', '.join(SUPERVISED)}")
        return replace(part, recipe=True)
    if option not in _FLAGS:
        raise ValueError(f"method {name!r}: unknown option {option!r}")
    key, value = _FLAGS[option]
    flags[key] = value
    return part
