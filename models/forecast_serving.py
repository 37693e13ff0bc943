"""Serving a forecaster: readings as a client sends them, checked, then the next values or an anomaly check.

The readings are prepared exactly as the job prepared its data, from the :class:`ForecastSetup` saved in
the model file.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch

from models.forecasting import ForecastSetup, day_window, feature_matrix, predict_scaled, relative_window
from models.timeseries import wall_clock


class ForecastInputError(ValueError):
    """Readings that a forecaster cannot use; the message says what to change."""


def readings_frame(setup: ForecastSetup, timestamps: list[str], values: dict[str, list[float]]) -> pd.DataFrame:
    """Readings sent to a forecaster, checked: parseable increasing timestamps at its frequency, a number for
    every column it needs."""
    missing = [c for c in setup.columns if c not in values]
    if missing:
        raise ForecastInputError(f"values needs the column(s) {', '.join(missing)}; this model reads "
                                 f"{', '.join(setup.columns)}")
    lengths = {c: len(values[c]) for c in setup.columns}
    if any(n != len(timestamps) for n in lengths.values()):
        raise ForecastInputError(f"{len(timestamps)} timestamps but values of length "
                                 f"{', '.join(f'{c}: {n}' for c, n in lengths.items())}; send one value a timestamp")
    stamps = wall_clock(pd.Series(timestamps, dtype=str))
    if stamps.isna().any():
        i = int(np.argmax(stamps.isna().to_numpy()))
        raise ForecastInputError(f"timestamps[{i}] = {timestamps[i]!r} does not parse; use ISO 8601")
    frame = pd.DataFrame(index=pd.DatetimeIndex(stamps))
    for c in setup.columns:
        column = pd.to_numeric(pd.Series(values[c], dtype=object), errors="coerce").astype(np.float64)
        bad = column.isna() | ~np.isfinite(column)
        if bad.any():
            i = int(np.argmax(bad.to_numpy()))
            raise ForecastInputError(f"values[{c!r}][{i}] = {values[c][i]!r} is not a number")
        frame[c] = column.to_numpy()
    steps = np.diff(frame.index.values)
    if (steps <= np.timedelta64(0, "ns")).any():
        i = int(np.argmax(steps <= np.timedelta64(0, "ns"))) + 1
        raise ForecastInputError(f"timestamps[{i}] is not after timestamps[{i - 1}]; timestamps must increase")
    if setup.framing == "next_steps":
        off = steps != setup.frequency.to_timedelta64()
        if off.any():
            i = int(np.argmax(off)) + 1
            raise ForecastInputError(f"timestamps[{i}] is {pd.Timedelta(steps[i - 1])} after the one before; this "
                                     f"model takes readings every {setup.frequency} without gaps")
    return frame


def forecast(model: torch.nn.Module, setup: ForecastSetup, frame: pd.DataFrame, horizon: int) -> dict[str, Any]:
    """The next ``horizon`` values after the readings in ``frame``, with their interval."""
    if horizon < 1 or horizon > setup.horizon:
        raise ForecastInputError(f"horizon {horizon}: this model forecasts 1 to {setup.horizon} steps ahead")
    if setup.framing == "day_total":
        x, base, day = _day_total_input(setup, frame)
        stamps = [day + pd.Timedelta(days=1)]
    else:
        if len(frame) < setup.lookback:
            raise ForecastInputError(f"{len(frame)} readings; this model needs the last {setup.lookback} "
                                     f"(one every {setup.frequency})")
        window, base = relative_window(setup, feature_matrix(setup, frame.iloc[-setup.lookback :]))
        x = window[None]
        stamps = [frame.index[-1] + setup.frequency * (k + 1) for k in range(horizon)]
    mean = setup.unscale_target(predict_scaled(model, x) + base)[0][:horizon]
    low = mean + np.array(setup.residual_low[:horizon])
    high = mean + np.array(setup.residual_high[:horizon])
    return {"timestamps": [t.isoformat() for t in stamps], "values": mean.tolist(), "lower": low.tolist(),
            "upper": high.tolist(), "interval": setup.interval}


def _day_total_input(setup: ForecastSetup, frame: pd.DataFrame) -> tuple[np.ndarray, float, pd.Timestamp]:
    """The readings of the day to forecast (the last day sent), and the day before's total where the model
    reads it (the largest of that day's readings)."""
    days = frame.index.normalize()
    day = days[-1]
    values = frame[setup.target].to_numpy(dtype=np.float64)[days == day]
    earlier = sorted(set(days[days != day]))
    if setup.previous_total:
        if len(earlier) != 1:
            raise ForecastInputError("send the day before's readings (at least its last one, the day's total), then "
                                     f"the day's own; this model starts from the day before's total. Got "
                                     f"{len(earlier) + 1} days")
        previous = float(frame[setup.target].to_numpy(dtype=np.float64)[days == earlier[0]].max())
    elif earlier:
        raise ForecastInputError("send readings from one day; this model predicts that day's final value")
    else:
        previous = math.nan
    if len(values) < 2:
        raise ForecastInputError(f"send at least 2 of the day's readings ({day.date()}); this model uses the first "
                                 f"{setup.lookback}")
    window, base = day_window(setup, values, day, previous)
    return window[None], base, day


def anomalies(model: torch.nn.Module, setup: ForecastSetup, frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Each reading after the first ``lookback``, with the one-step forecast made from the readings before
    it, and whether it falls outside that forecast's interval."""
    if setup.framing != "next_steps":
        raise ForecastInputError("anomaly detection needs a next_steps forecaster (one step ahead over a "
                                 "regular series); this model predicts a day's total")
    if len(frame) <= setup.lookback:
        raise ForecastInputError(f"{len(frame)} readings; send more than {setup.lookback} (the model's lookback) "
                                 "so that at least one can be checked")
    features = feature_matrix(setup, frame)
    pairs = [relative_window(setup, features[t - setup.lookback : t]) for t in range(setup.lookback, len(frame))]
    windows, bases = np.stack([w for w, _ in pairs]), np.array([b for _, b in pairs])
    predicted = setup.unscale_target(predict_scaled(model, windows)[:, 0] + bases)
    actual = frame[setup.target].to_numpy(dtype=np.float64)[setup.lookback :]
    low, high = predicted + setup.residual_low[0], predicted + setup.residual_high[0]
    return [{"timestamp": frame.index[setup.lookback + i].isoformat(), "value": float(actual[i]),
             "expected": float(predicted[i]), "lower": float(low[i]), "upper": float(high[i]),
             "anomaly": bool(actual[i] < low[i] or actual[i] > high[i])} for i in range(len(actual))]
