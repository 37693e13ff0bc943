"""The forecasting library: grids and gaps, time-ordered splits, training-only scaling, baselines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.forecasting import ForecastSetup, error_metrics, predict_windows, prepare, regular_grid
from models.timeseries import TimeSeries


def series(n: int = 200, drop: tuple[int, ...] = (), trend: float = 0.0) -> TimeSeries:
    stamps = pd.date_range("2024-01-01", periods=n, freq="h")
    values = 10 + np.sin(np.arange(n) * 2 * np.pi / 24) + trend * np.arange(n)
    keep = np.array([i not in drop for i in range(n)])
    return TimeSeries(stamps.to_numpy()[keep], values[keep].reshape(-1, 1), ("v",))


def test_short_gaps_are_interpolated_and_long_ones_left_out():
    setup = ForecastSetup(target="v", frequency_seconds=3600, gaps="interpolate", max_gap_steps=2)
    grid, report = regular_grid(series(drop=(10, 11, 50, 51, 52, 53)), setup)
    assert report == {"grid_points": 200, "missing_points": 6, "interpolated_points": 2, "left_out_points": 4}
    assert grid["v"].iloc[10] == pytest.approx((grid["v"].iloc[9] * 2 + grid["v"].iloc[12]) / 3)
    assert grid["v"].iloc[50:54].isna().all()
    _, dropped = regular_grid(series(drop=(10, 11)), ForecastSetup(target="v", frequency_seconds=3600, gaps="drop"))
    assert dropped["left_out_points"] == 2 and dropped["interpolated_points"] == 0


def test_splits_are_in_time_order_and_no_window_crosses_a_left_out_gap():
    setup = ForecastSetup(target="v", lookback=6, horizon=3, gaps="drop")
    prepared = prepare(series(drop=(100,)), setup, validation_split=0.1, test_split=0.2)
    train, val, test = prepared.train, prepared.validation, prepared.test
    assert train.ends.max() < val.ends.min() and val.ends.max() < test.ends.min()
    assert len(train) + len(val) + len(test) < 200 - 6 - 3 + 1  # windows over the gap are gone
    gap = np.datetime64("2024-01-05T04:00")  # reading 100
    for windows in (train, val, test):
        starts = windows.ends - np.timedelta64(6, "h")
        ends = windows.ends + np.timedelta64(2, "h")
        assert not ((starts <= gap) & (gap <= ends)).any()


def test_scaling_is_fitted_on_the_training_part_only():
    setup = ForecastSetup(target="v", lookback=4, horizon=1)
    data = series(trend=0.5)
    prepare(data, setup, validation_split=0.1, test_split=0.2)
    assert setup.means["v"] == pytest.approx(data.values[:140, 0].mean())  # the first 70 % of 200 hours


def test_baselines_and_metrics():
    setup = ForecastSetup(target="v", lookback=4, horizon=2, season_steps=24)
    prepared = prepare(series(), setup, validation_split=0.1, test_split=0.2)
    test = prepared.test
    assert np.allclose(test.seasonal, test.actual)  # a pure daily sine: a day ago is exact
    assert np.allclose(test.persistence[:, 0], test.persistence[:, 1])  # the last value, for every step
    m = error_metrics(np.array([[1.0, 3.0]]), np.array([[2.0, 0.0]]))
    assert m == {"mae": 2.0, "rmse": pytest.approx(np.sqrt(5)), "mape": 50.0}  # the zero actual is left out


def test_day_total_keeps_whole_days_and_predicts_their_final_value():
    stamps = pd.date_range("2024-01-01 07:00", periods=12, freq="30min")
    days = [stamps + pd.Timedelta(days=d) for d in range(20)]
    values = [np.cumsum(np.full(12 if d != 5 else 4, 1.0 + d)) for d in range(20)]  # day 5 has 4 readings
    ts = TimeSeries(np.concatenate([s.to_numpy()[: len(v)] for s, v in zip(days, values)]),
                    np.concatenate(values).reshape(-1, 1), ("total",))
    setup = ForecastSetup(target="total", framing="day_total", lookback=14, scale="fixed", scale_factor=10,
                          min_readings_per_day=8)
    prepared = prepare(ts, setup, validation_split=0.1, test_split=0.1)
    assert prepared.report["days_dropped"] == 1 and prepared.report["test_days"] == 1
    test = prepared.test
    assert len(test) == 11 and np.all(test.actual == 12 * 20.0)  # the last day: 11 prefixes of 2..12 readings
    assert test.seasonal[0, 0] == 12 * 19.0  # yesterday's final value
    assert test.x.shape == (11, 14, 1) and test.x[0, :12, 0].sum() == 0  # left-padded


def test_day_total_with_the_previous_total_forecasts_the_change_from_it():
    stamps = pd.date_range("2024-01-01 07:00", periods=12, freq="30min")
    values = [np.cumsum(np.full(12, 1.0 + d)) for d in range(20)]
    ts = TimeSeries(np.concatenate([(stamps + pd.Timedelta(days=d)).to_numpy() for d in range(20)]),
                    np.concatenate(values).reshape(-1, 1), ("total",))
    setup = ForecastSetup(target="total", framing="day_total", lookback=14, scale="fixed", scale_factor=10,
                          previous_total=True, calendar=["day_of_year"])
    prepared = prepare(ts, setup, validation_split=0.1, test_split=0.1)
    assert len(prepared.train) == 15 * 11  # the first day has no day before: its windows are left out
    test = prepared.test
    assert setup.n_features == 4 and test.x.shape == (22, 14, 4)  # two test days of 11 prefixes
    last = slice(11, 22)  # 2024-01-20, the day before's total 12 * 19
    assert np.allclose(test.x[last, :, 1], 12 * 19.0 / 10)  # the day before's total, scaled, on every step
    day = (pd.Timestamp("2024-01-20").day_of_year - 1) / 365.25 * 2 * np.pi
    assert np.allclose(test.x[last, :, 2:], [np.sin(day), np.cos(day)])
    assert np.allclose(test.base[last], 12 * 19.0 / 10) and np.allclose(test.y[last, 0], (12 * 20.0 - 12 * 19.0) / 10)
    assert np.allclose(predict_windows(None, setup, test, "seasonal_naive")[last], 12 * 19.0)
