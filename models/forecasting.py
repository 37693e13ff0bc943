"""Forecasting a sensor series: preparation, windows, baselines, metrics and prediction intervals.

Two framings:

- ``next_steps``: the series is put on a regular grid at its frequency, gaps are interpolated (up to a
  limit) or left out, and a window of ``lookback`` readings predicts the next ``horizon`` values of the
  target. Splits are by time: train, then validation, then test; a window belongs to the part that holds
  all of its targets.
- ``day_total`` (the CNTK 106B lab): readings are grouped by day, days with too few readings are dropped,
  and the first 2..``lookback`` readings of a day predict that day's final value (its maximum, for a
  running total). Splits are by day, in time order. With ``previous_total`` the day before's total is an
  input on every step and the network forecasts the change from it, so it starts from "same as yesterday"
  and learns what the morning's readings and the time of year say beyond it.

Everything that serving must repeat (columns, frequency, scaling fitted on the training part only,
calendar features, interval widths) is in :class:`ForecastSetup`, a plain dict when saved.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from models.dataformats import ArrayDataset
from models.errors import ConfigError
from models.timeseries import TimeSeries, infer_frequency

BASELINES = ("persistence", "seasonal_naive")


@dataclass
class ForecastSetup:
    target: str
    inputs: list[str] = field(default_factory=list)  # extra input columns beside the target's own history
    lookback: int = 24
    horizon: int = 1
    framing: str = "next_steps"
    frequency_seconds: float = 0.0  # 0: inferred from the data
    gaps: str = "interpolate"  # or "drop"
    max_gap_steps: int = 4  # longer gaps are left out even when interpolating
    calendar: list[str] = field(default_factory=list)
    season_steps: int = 0  # seasonal naive's season; 0: one day at the series' frequency (at least 1)
    scale: str = "standard"  # or "fixed": divide by scale_factor (the lab's 1/20000)
    scale_factor: float = 1.0
    min_readings_per_day: int = 8  # day_total
    interval: float = 0.9  # the prediction interval's coverage
    # next_steps: the target's history and forecast are taken relative to the last reading, so the network
    # learns changes and a level it never saw in training (a trend) does not throw it off.
    relative: bool = True
    # day_total: the previous day's total is an input and the forecast is a change from it. False in files
    # saved before it existed, whose models read the day's readings alone.
    previous_total: bool = False
    # Fitted on the training part:
    means: dict[str, float] = field(default_factory=dict)
    stds: dict[str, float] = field(default_factory=dict)
    residual_low: list[float] = field(default_factory=list)  # per horizon step, original units
    residual_high: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ForecastSetup":
        return cls(**d)

    @property
    def columns(self) -> list[str]:
        return [self.target, *self.inputs]

    @property
    def frequency(self) -> pd.Timedelta:
        return pd.Timedelta(seconds=self.frequency_seconds)

    @property
    def n_features(self) -> int:
        if self.framing == "next_steps":
            return len(self.columns) + 2 * len(self.calendar)
        return 1 + int(self.previous_total) + 2 * len(self.calendar)

    def scale_values(self, column: str, values: np.ndarray) -> np.ndarray:
        if self.scale == "fixed":
            return values / self.scale_factor
        return (values - self.means[column]) / self.stds[column]

    def unscale_target(self, values: np.ndarray) -> np.ndarray:
        if self.scale == "fixed":
            return values * self.scale_factor
        return values * self.stds[self.target] + self.means[self.target]


@dataclass
class Windows:
    x: np.ndarray  # (N, lookback, features), scaled
    y: np.ndarray  # (N, horizon), scaled
    actual: np.ndarray  # (N, horizon), original units
    persistence: np.ndarray  # (N, horizon), original units
    seasonal: np.ndarray  # (N, horizon), original units; NaN where a season ago was not observed
    ends: np.ndarray  # timestamp of each window's first target (day_total: the window's day), datetime64
    base: np.ndarray  # (N,) what the scaled forecast is relative to: the last scaled reading, or 0

    def __len__(self) -> int:
        return len(self.x)

    def dataset(self) -> ArrayDataset:
        return ArrayDataset(torch.from_numpy(self.x.astype(np.float32)), torch.from_numpy(self.y.astype(np.float32)),
                            num_classes=0, value_range=(0.0, 1.0))


@dataclass
class Prepared:
    setup: ForecastSetup
    train: Windows
    validation: Windows
    test: Windows
    report: dict[str, Any]  # what preparation did: grid size, points interpolated and left out, split sizes


# -- features -------------------------------------------------------------------------------------------------


def calendar_columns(timestamps: pd.DatetimeIndex, names: list[str]) -> np.ndarray:
    """sin/cos pairs, so 23:30 is next to 00:00 and Dec 31 next to Jan 1."""
    parts = []
    for name in names:
        if name == "time_of_day":
            phase = (timestamps.hour * 3600 + timestamps.minute * 60 + timestamps.second) / 86400
        else:
            phase = (timestamps.day_of_year - 1) / 365.25
        angle = 2 * np.pi * np.asarray(phase, dtype=np.float64)
        parts += [np.sin(angle), np.cos(angle)]
    return np.stack(parts, axis=1) if parts else np.zeros((len(timestamps), 0))


def relative_window(setup: ForecastSetup, window: np.ndarray) -> tuple[np.ndarray, float]:
    """The window as the network sees it, and the scaled value its forecast is relative to."""
    if not setup.relative or setup.framing != "next_steps":
        return window, 0.0
    base = float(window[-1, 0])
    window = window.copy()
    window[:, 0] -= base
    return window, base


def feature_matrix(setup: ForecastSetup, frame: pd.DataFrame) -> np.ndarray:
    """(T, features): the scaled target and inputs, then the calendar columns."""
    scaled = [setup.scale_values(c, frame[c].to_numpy(dtype=np.float64)) for c in setup.columns]
    return np.concatenate([np.stack(scaled, axis=1), calendar_columns(frame.index, setup.calendar)], axis=1)


# -- next_steps ---------------------------------------------------------------------------------------------------


def regular_grid(series: TimeSeries, setup: ForecastSetup) -> tuple[pd.DataFrame, dict[str, int]]:
    """The target and inputs on a regular grid at the setup's frequency; gaps filled or left as NaN."""
    frame = series.frame()[setup.columns]
    freq = setup.frequency
    grid = frame.resample(freq, origin="start").mean()
    missing = grid.isna().any(axis=1)
    report = {"grid_points": len(grid), "missing_points": int(missing.sum()), "interpolated_points": 0}
    if setup.gaps == "interpolate" and missing.any():
        filled = grid.interpolate(method="time", limit=setup.max_gap_steps, limit_area="inside")
        # A gap longer than the limit stays empty in full, not filled at its edges.
        run_id = (~missing).cumsum()
        run_length = missing.groupby(run_id).transform("sum")
        filled[missing & (run_length > setup.max_gap_steps)] = np.nan
        report["interpolated_points"] = int((missing & filled.notna().all(axis=1)).sum())
        grid = filled
    report["left_out_points"] = int(grid.isna().any(axis=1).sum())
    return grid, report


def _next_step_windows(setup: ForecastSetup, grid: pd.DataFrame, starts: np.ndarray) -> Windows:
    features = feature_matrix(setup, grid)
    target = grid[setup.target].to_numpy(dtype=np.float64)
    lookback, horizon, season = setup.lookback, setup.horizon, setup.season_steps
    xs, ys, actual, persist, seasonal, ends = [], [], [], [], [], []
    scaled_target = features[:, 0]
    bases = []
    for t in starts:
        window = features[t - lookback : t]
        future = target[t : t + horizon]
        if np.isnan(window).any() or np.isnan(future).any():
            continue
        window, base = relative_window(setup, window)
        xs.append(window)
        bases.append(base)
        ys.append(scaled_target[t : t + horizon] - base)
        actual.append(future)
        persist.append(np.repeat(target[t - 1], horizon))
        idx = np.arange(t, t + horizon) - season
        seasonal.append(np.where(idx >= 0, target[np.clip(idx, 0, None)], np.nan))
        ends.append(grid.index[t].to_datetime64())
    n_features = features.shape[1]
    return Windows(np.array(xs).reshape(-1, lookback, n_features), np.array(ys).reshape(-1, horizon),
                   np.array(actual).reshape(-1, horizon), np.array(persist).reshape(-1, horizon),
                   np.array(seasonal).reshape(-1, horizon), np.array(ends, dtype="datetime64[ns]"),
                   np.array(bases, dtype=np.float64))


def _fit_scaling(setup: ForecastSetup, rows: pd.DataFrame) -> None:
    for c in setup.columns:
        values = rows[c].dropna().to_numpy(dtype=np.float64)
        setup.means[c] = float(values.mean()) if len(values) else 0.0
        std = float(values.std()) if len(values) > 1 else 0.0
        setup.stds[c] = std if std > 1e-12 else 1.0


def prepare(series: TimeSeries, setup: ForecastSetup, *, validation_split: float, test_split: float) -> Prepared:
    """Windows for training, validation and test, and the setup that serving will repeat."""
    missing = [c for c in setup.columns if c not in series.columns]
    if missing:
        raise ConfigError(f"column(s) {', '.join(missing)} not in the dataset; it has {', '.join(series.columns)}")
    if not setup.frequency_seconds:
        freq = infer_frequency(series.timestamps)
        if freq is None:
            raise ConfigError("a time series needs at least two readings")
        setup.frequency_seconds = freq.total_seconds()
    if not setup.season_steps:
        setup.season_steps = max(1, round(86400 / setup.frequency_seconds))
    if setup.framing == "day_total":
        return _prepare_day_total(series, setup, validation_split=validation_split, test_split=test_split)
    grid, report = regular_grid(series, setup)
    n = len(grid)
    n_test, n_val = int(round(n * test_split)), int(round(n * validation_split))
    train_end, val_end = n - n_test - n_val, n - n_test
    if setup.scale == "standard":
        _fit_scaling(setup, grid.iloc[:train_end])
    horizon = setup.horizon

    def part(lo: int, hi: int) -> Windows:  # windows whose targets all lie in [lo, hi)
        return _next_step_windows(setup, grid, np.arange(max(lo, setup.lookback), hi - horizon + 1))

    prepared = Prepared(setup, part(0, train_end), part(train_end, val_end), part(val_end, n), report)
    _check_sizes(prepared)
    return prepared


def _check_sizes(prepared: Prepared) -> None:
    sizes = {"train": len(prepared.train), "validation": len(prepared.validation), "test": len(prepared.test)}
    prepared.report.update({f"{k}_windows": v for k, v in sizes.items()})
    if sizes["train"] < 1 or sizes["test"] < 1:
        raise ConfigError(f"the series makes {sizes['train']} training and {sizes['test']} test windows with "
                         f"lookback {prepared.setup.lookback} and horizon {prepared.setup.horizon}; use a "
                         "shorter lookback or horizon, interpolate gaps, or a longer series")


# -- day_total (CNTK 106B) ----------------------------------------------------------------------------------


def day_window(setup: ForecastSetup, values: np.ndarray, day: object, previous: float) -> tuple[np.ndarray, float]:
    """A day's first readings (at most ``lookback``), scaled and left-padded to ``lookback`` (the last step is
    the newest real reading), beside the day's own inputs on every step: the previous day's total and the
    calendar. Returns the window and the scaled value its forecast is relative to."""
    values = values[: setup.lookback]
    readings = np.concatenate([np.zeros(setup.lookback - len(values)), setup.scale_values(setup.target, values)])
    own, base = [], 0.0
    if setup.previous_total:
        base = float(setup.scale_values(setup.target, np.array([previous]))[0])
        own.append(base)
    own.extend(calendar_columns(pd.DatetimeIndex([pd.Timestamp(day)]), setup.calendar).reshape(-1))
    window = np.concatenate([readings[:, None], np.tile(np.array(own, dtype=np.float64), (setup.lookback, 1))], axis=1)
    return window, base


def _day_windows(setup: ForecastSetup, days: list[tuple[object, np.ndarray]], previous_final: list[float]) -> Windows:
    """One window per prefix of each day's readings; ``ends`` holds the window's day."""
    lookback = setup.lookback
    xs, ys, actual, persist, seasonal, ends, bases = [], [], [], [], [], [], []
    for (day, values), prev in zip(days, previous_final):
        if setup.previous_total and math.isnan(prev):  # the first day has no day before
            continue
        final = float(values.max())
        scaled_final = float(setup.scale_values(setup.target, np.array([final]))[0])
        for j in range(2, min(len(values), lookback) + 1):
            window, base = day_window(setup, values[:j], day, prev)
            xs.append(window)
            ys.append([scaled_final - base])
            bases.append(base)
            actual.append([final])
            persist.append([values[j - 1]])
            seasonal.append([prev])
            ends.append(np.datetime64(day))
    return Windows(np.array(xs).reshape(-1, lookback, setup.n_features), np.array(ys).reshape(-1, 1),
                   np.array(actual).reshape(-1, 1), np.array(persist).reshape(-1, 1), np.array(seasonal).reshape(-1, 1),
                   np.array(ends, dtype="datetime64[ns]"), np.array(bases, dtype=np.float64))


def _prepare_day_total(series: TimeSeries, setup: ForecastSetup, *, validation_split: float,
                       test_split: float) -> Prepared:
    if setup.horizon != 1 or setup.inputs or "time_of_day" in setup.calendar:
        raise ConfigError("day_total predicts one value a day from the target alone: horizon 1, no inputs, and "
                         "no time_of_day (a day's inputs are its own: day_of_year, the previous total)")
    frame = series.frame()[setup.target]
    groups = [(day, g.to_numpy(dtype=np.float64)) for day, g in frame.groupby(frame.index.date)]
    kept = [(day, v) for day, v in groups if len(v) >= setup.min_readings_per_day]
    finals = [float(v.max()) for _, v in kept]
    previous = [math.nan] + finals[:-1]  # seasonal naive: yesterday's final value
    n = len(kept)
    n_test, n_val = int(n * test_split), int(n * validation_split)
    train_end, val_end = n - n_test - n_val, n - n_test
    if setup.scale == "standard":
        _fit_scaling(setup, pd.DataFrame({setup.target: np.concatenate([v for _, v in kept[:train_end]])}))

    def part(lo: int, hi: int) -> Windows:
        return _day_windows(setup, kept[lo:hi], previous[lo:hi])

    report = {"days": len(groups), "days_kept": n, "days_dropped": len(groups) - n,
              "train_days": train_end, "validation_days": val_end - train_end, "test_days": n - val_end}
    prepared = Prepared(setup, part(0, train_end), part(train_end, val_end), part(val_end, n), report)
    _check_sizes(prepared)
    return prepared


# -- evaluation ---------------------------------------------------------------------------------------------


def error_metrics(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float | None]:
    """MAE, RMSE and MAPE (percent, over the actual values that are not zero) in the data's units."""
    error = predicted - actual
    nonzero = np.abs(actual) > 1e-12
    mape = float(np.mean(np.abs(error[nonzero] / actual[nonzero])) * 100) if nonzero.any() else None
    return {"mae": float(np.mean(np.abs(error))), "rmse": float(np.sqrt(np.mean(error ** 2))), "mape": mape}


@torch.no_grad()
def predict_scaled(model: torch.nn.Module, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    model.eval()
    device = next(model.parameters()).device
    out = [model(torch.from_numpy(x[i : i + batch_size].astype(np.float32)).to(device)).float().cpu().numpy()
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out).reshape(len(x), -1) if out else np.zeros((0, 1))


def predict_windows(model: torch.nn.Module | None, setup: ForecastSetup, windows: Windows,
                    baseline: str | None = None) -> np.ndarray:
    """Forecasts in original units: the model's, or a baseline's when ``model`` is None."""
    if model is None:
        return windows.persistence if baseline == "persistence" else windows.seasonal
    return setup.unscale_target(predict_scaled(model, windows.x) + windows.base[:, None])


def calibrate_interval(model: torch.nn.Module | None, setup: ForecastSetup, windows: Windows,
                       baseline: str | None = None) -> None:
    """Interval widths per horizon step from held-out residuals' quantiles."""
    residuals = windows.actual - predict_windows(model, setup, windows, baseline)
    residuals = residuals[~np.isnan(residuals).any(axis=1)]
    alpha = (1 - setup.interval) / 2
    if len(residuals):
        setup.residual_low = np.quantile(residuals, alpha, axis=0).tolist()
        setup.residual_high = np.quantile(residuals, 1 - alpha, axis=0).tolist()
    else:
        setup.residual_low = setup.residual_high = [0.0] * setup.horizon


def forecast_report(model: torch.nn.Module | None, prepared: Prepared, baseline: str | None = None) -> dict:
    """Model and both baselines side by side on the same test windows (those a season ago was observed
    for), plus the interval's coverage there."""
    test, setup = prepared.test, prepared.setup
    comparable = ~np.isnan(test.seasonal).any(axis=1)
    if not comparable.any():
        comparable = np.ones(len(test), dtype=bool)
    actual = test.actual[comparable]
    predicted = predict_windows(model, setup, test, baseline)[comparable]
    report: dict[str, Any] = {"test_windows": int(comparable.sum()),
                              "model": error_metrics(predicted, actual)}
    for name in BASELINES:
        forecast = predict_windows(None, setup, test, name)[comparable]
        report[name] = error_metrics(forecast, actual) if not np.isnan(forecast).any() else None
    if setup.residual_low:  # calibrated: how often the interval held the actual value on the test part
        low, high = predicted + np.array(setup.residual_low), predicted + np.array(setup.residual_high)
        report["interval"] = {"coverage_target": setup.interval,
                              "coverage": float(np.mean((actual >= low) & (actual <= high)))}
    if setup.framing == "day_total":  # the lab's own measure: each day's total from its first `lookback` readings
        last = np.r_[test.ends[1:] != test.ends[:-1], True] & comparable
        report["from_lookback"] = {"readings": setup.lookback, "days": int(last.sum()),
                                   "model": error_metrics(predict_windows(model, setup, test, baseline)[last],
                                                          test.actual[last]),
                                   **{name: error_metrics(predict_windows(None, setup, test, name)[last],
                                                          test.actual[last]) for name in BASELINES}}
    persistence = report["persistence"]
    report["beats_persistence"] = bool(persistence and report["model"]["rmse"] < persistence["rmse"])
    seasonal = report["seasonal_naive"]
    report["beats_seasonal_naive"] = bool(seasonal and report["model"]["rmse"] < seasonal["rmse"])
    report["preparation"] = prepared.report
    # What a client must send to /forecast, readable from the job's result and the model's metrics.
    report["setup"] = {k: getattr(setup, k) for k in ("target", "inputs", "lookback", "horizon", "framing",
                                                      "frequency_seconds", "calendar", "interval")}
    return report
