"""Time series: readings at increasing wall-clock timestamps, read from a CSV file, and their statistics
(the step between readings, gaps, per-column ranges)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.dataformats import DataFormatError, numeric_columns, read_csv

TIMESTAMP_NAMES = ("time", "timestamp", "datetime", "date", "ds")


@dataclass(frozen=True)
class TimeSeries:
    """Readings at increasing wall-clock ``timestamps`` (datetime64[ns], no time zone); ``values`` is
    (N, len(columns)) float64."""

    timestamps: np.ndarray
    values: np.ndarray
    columns: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.timestamps)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.values, index=pd.DatetimeIndex(self.timestamps), columns=list(self.columns))


def wall_clock(timestamps: pd.Series) -> pd.Series:
    """ISO 8601 text as wall-clock time, NaT where it does not parse. An offset is dropped, not applied, so
    a reading at 07:00-07:00 and one at 07:00 in winter are both at 07:00 and a day is the day the readings
    were taken (as the solar data needs)."""
    text = timestamps.astype(str).str.strip().str.replace(r"(?:Z|[+-]\d{2}:?\d{2})$", "", regex=True)
    return pd.to_datetime(text, errors="coerce", format="ISO8601")


def parse_timeseries_csv(data: bytes, name: str, *, timestamp_column: str | None = None) -> TimeSeries:
    """A timestamp column and one or more numeric columns, timestamps strictly increasing, read as
    wall-clock time (see below)."""
    frame = read_csv(data, name)
    frame.columns = [str(c) for c in frame.columns]
    columns = list(frame.columns)
    ts_col = timestamp_column or next((c for c in columns if c.lower() in TIMESTAMP_NAMES), None)
    if ts_col is None or ts_col not in columns:
        raise DataFormatError(f"{name}: no timestamp column; name it one of {', '.join(TIMESTAMP_NAMES)} (or pass "
                              f"timestamp_column); columns are {', '.join(columns)}")
    value_columns = [c for c in columns if c != ts_col]
    if not value_columns:
        raise DataFormatError(f"{name}: a time series needs at least one numeric column beside {ts_col!r}")
    stamps = wall_clock(frame[ts_col])
    if stamps.isna().any():
        row = int(np.argmax(stamps.isna().to_numpy()))
        raise DataFormatError(f"{name}: row {row + 1} (line {row + 2}): timestamp {frame[ts_col].iloc[row]!r} "
                              "does not parse; use ISO 8601, e.g. 2016-06-01 12:30:00 or 2016-06-01T12:30:00-07:00")
    values = numeric_columns(frame, value_columns, name)
    stamps_ns = stamps.to_numpy(dtype="datetime64[ns]")
    steps = np.diff(stamps_ns)
    if (steps <= np.timedelta64(0, "ns")).any():
        row = int(np.argmax(steps <= np.timedelta64(0, "ns"))) + 1
        raise DataFormatError(f"{name}: row {row + 1} (line {row + 2}): timestamp {frame[ts_col].iloc[row]!r} is "
                              f"not after the one before it ({frame[ts_col].iloc[row - 1]!r}); timestamps must "
                              "be strictly increasing")
    return TimeSeries(stamps_ns, values, tuple(value_columns))


def infer_frequency(timestamps: np.ndarray) -> pd.Timedelta | None:
    """The most common step between readings (robust to gaps and to readings only in daylight)."""
    if len(timestamps) < 2:
        return None
    steps, counts = np.unique(np.diff(timestamps), return_counts=True)
    return pd.Timedelta(steps[int(np.argmax(counts))])


def frequency_text(step: pd.Timedelta) -> str:
    """``7D``, ``1h``, ``30min``, ``10s``: the largest unit that divides the step."""
    seconds = step.total_seconds()
    for unit, size in (("D", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def timeseries_stats(series: TimeSeries) -> dict:
    freq = infer_frequency(series.timestamps)
    gaps, missing = 0, 0
    if freq is not None:
        steps = np.diff(series.timestamps)
        longer = steps > freq.to_timedelta64()
        gaps = int(longer.sum())
        missing = int((steps[longer] // freq.to_timedelta64() - 1).sum())
    first, last = (pd.Timestamp(series.timestamps[i]).isoformat() for i in (0, -1))
    return {"kind": "timeseries", "samples": len(series), "first_timestamp": first, "last_timestamp": last,
            "frequency": frequency_text(freq) if freq is not None else None,
            "frequency_seconds": freq.total_seconds() if freq is not None else None,
            "gaps": gaps, "missing_steps": missing,
            "columns": {c: {"min": float(series.values[:, i].min()), "max": float(series.values[:, i].max()),
                            "mean": float(series.values[:, i].mean())} for i, c in enumerate(series.columns)}}
