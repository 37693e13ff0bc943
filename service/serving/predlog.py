"""Prediction logs: a sample of each model's inference requests, kept off the request's path.

A request picked by its model's share (TRAINSERVE_PREDICTION_LOG_SHARE, or the share set for the model name
over the API) is put in this process's buffer: its request id (the ``X-Request-ID`` the answer carries), the
model version and its role in a rollout, the inputs, the outputs and the caller's key id (never the key).
Every TRAINSERVE_ROLLOUT_SECONDS the background pass writes the buffer out:

- to the artifact store as Parquet, one file per model and hour for each write, in Hive-style partitions
  (``prediction-logs/model=<name>/date=<YYYY-MM-DD>/hour=<HH>/<replica>-<n>.parquet``), one row per instance,
  so that pandas, DuckDB or Spark read a folder of them as one table with ``model``, ``date`` and ``hour``
  columns;
- to the database, one small row per request (``predictions``): what feedback labels and live quality is
  counted from.

A full buffer (TRAINSERVE_PREDICTION_LOG_BUFFER requests) drops what comes next, counted, rather than wait;
a process that is killed loses what its buffer held (at most one interval's requests); one that stops
cleanly writes it first. Nothing here touches storage on the request's path: a sampled request costs a
random draw and an append.
"""

from __future__ import annotations

import io
import logging
import os
import random
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from models import drift
from service.observability import logs
from service.platform.runtime import Runtime
from service.platform.tables import DriftCount, MonitoringSettings, Prediction
from service.serving.models import LoadedModel

log = logging.getLogger(__name__)
PREFIX = "prediction-logs"

SCHEMA = pa.schema([
    ("request_id", pa.string()), ("time", pa.timestamp("us", tz="UTC")), ("version", pa.int32()),
    ("model_id", pa.string()), ("role", pa.string()), ("key_id", pa.string()), ("instance", pa.int32()),
    ("inputs", pa.list_(pa.float32())), ("label", pa.int32()), ("probabilities", pa.list_(pa.float32())),
    ("forecast", pa.list_(pa.float32())), ("lower", pa.list_(pa.float32())), ("upper", pa.list_(pa.float32())),
])


def partition(name: str, at: datetime) -> str:
    """The folder of a model's requests in one hour."""
    return f"{PREFIX}/model={quote(name, safe='')}/date={at:%Y-%m-%d}/hour={at:%H}"


class PredictionLog:
    """One per API process."""

    def __init__(self, default_share: float, buffer_limit: int) -> None:
        self.default_share, self.buffer_limit = default_share, buffer_limit
        self.shares: dict[str, float] = {}  # by model name, where set over the API (read each pass)
        self._buffer: list[tuple] = []
        self._lock = threading.Lock()
        self.replica = f"{socket.gethostname()}-{os.getpid()}"
        self._files = 0
        self.logged = self.dropped = self.written = 0  # requests buffered, dropped, written out (for /metrics)

    def picks(self, model: LoadedModel) -> bool:
        share = self.shares.get(model.name, self.default_share)
        return share >= 1 or (share > 0 and random.random() < share)

    def record(self, model: LoadedModel, role: str, inputs: np.ndarray, outputs) -> None:
        """Buffer one request: ``outputs`` are a classifier's probability rows, or a forecaster's
        ``{"values", "lower", "upper"}`` rows (one list per instance each)."""
        entry = (logs.request_id.get(), datetime.now(timezone.utc), model, role, logs.key_id.get(), inputs, outputs)
        with self._lock:
            if len(self._buffer) >= self.buffer_limit:
                self.dropped += 1
                return
            self._buffer.append(entry)
            self.logged += 1

    def refresh(self, runtime: Runtime) -> None:
        """The shares set per model name over the API."""
        with runtime.session() as session:
            self.shares = {name: share for name, share in session.execute(
                select(MonitoringSettings.name, MonitoringSettings.log_share)
                .where(MonitoringSettings.log_share.is_not(None)))}

    def flush(self, runtime: Runtime) -> int:
        """Write the buffer out: Parquet to the artifact store, then the requests' rows to the database (a
        request id sent twice, a client's retry, keeps its first). Returns the requests written. Built
        column by column, so that a busy process's write costs milliseconds, not a share of its requests."""
        with self._lock:
            entries, self._buffer = self._buffer, []
        entries = [e for e in entries if e[0] is not None]  # no request id: nothing could refer to it
        if not entries:
            return 0
        groups: dict[tuple[str, uuid.UUID], list[tuple]] = {}
        for entry in entries:
            groups.setdefault((partition(entry[2].name, entry[1]), entry[2].id), []).append(entry)
        rows, binned = [], []
        for (folder, _), group in groups.items():
            data, predicted, arrays = _columns(group)
            self._files += 1
            runtime.store.put(f"{folder}/{self.replica}-{time.time_ns()}-{self._files}.parquet", data)
            rows += [_row(entry, labels) for entry, labels in zip(group, predicted)]
            if arrays is not None and group[0][2].profile is not None:
                binned.append(_drift_count(group, *arrays))
        with runtime.session() as session:
            dialect = session.get_bind().dialect.name
            insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
            session.execute(insert(Prediction).on_conflict_do_nothing(index_elements=["request_id"]), rows)
            session.add_all(binned)
        self.written += len(entries)
        return len(entries)


def _drift_count(group: list[tuple], x: np.ndarray, probabilities: np.ndarray) -> DriftCount:
    """One classifier version's logged instances of this write (``x``, and its answers ``probabilities``),
    counted in its reference profile's bins."""
    model = group[0][2]
    values, labels = drift.summaries(x, probabilities, model.input_shape, model.value_range)
    return DriftCount(model_id=model.id, name=model.name, created_at=max(e[1] for e in group),
                      counts=drift.count(model.profile, values, labels))


def _row(entry: tuple, predicted: list) -> dict:
    request_id, at, model, role, key_id, _, _ = entry
    return {"request_id": request_id, "model_id": model.id, "name": model.name, "version": model.version,
            "role": role, "task": "forecast" if model.forecast is not None else "classification", "created_at": at,
            "instances": len(predicted), "predicted": predicted,
            "key_id": None if key_id in (None, "anonymous") else uuid.UUID(key_id)}  # actual: SQL NULL, not JSON null


def _list_array(rows: list[np.ndarray]) -> pa.Array:
    """A list<float32> column from per-instance arrays: one buffer and its offsets when they are all the same
    length (the common case), else row by row."""
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        return pa.array([np.asarray(r, dtype=np.float32) for r in rows], type=pa.list_(pa.float32()))
    width = widths.pop()
    values = np.asarray(rows, dtype=np.float32).ravel()
    return pa.ListArray.from_arrays(pa.array(np.arange(0, len(values) + 1, width, dtype=np.int32) if width else
                                             np.zeros(len(rows) + 1, dtype=np.int32)), pa.array(values))


def _columns(group: list[tuple]) -> tuple[bytes, list[list], tuple[np.ndarray, np.ndarray] | None]:
    """One model version's entries as a Parquet file (one row per instance), each request's predictions (a
    classifier's labels, a forecaster's forecasts) for its database row, and a classifier's instances and
    probabilities as two arrays (for its drift counts; None for a forecaster)."""
    model = group[0][2]
    inputs = [np.asarray(e[5], dtype=np.float32).reshape(len(e[5]), -1) for e in group]
    counts = np.array([len(x) for x in inputs])
    total = int(counts.sum())

    def each(values) -> list:
        return np.repeat(np.array(values, dtype=object), counts).tolist()

    columns = {"request_id": each([e[0] for e in group]), "time": each([e[1] for e in group]),
               "version": pa.array(np.full(total, model.version, dtype=np.int32)),
               "model_id": [str(model.id)] * total, "role": each([e[3] for e in group]),
               "key_id": each([e[4] for e in group]),
               "instance": pa.array(np.concatenate([np.arange(n, dtype=np.int32) for n in counts])),
               "inputs": _list_array([row for x in inputs for row in x])}
    empty = pa.nulls(total, pa.list_(pa.float32()))
    if model.forecast is None:
        probabilities = np.concatenate([np.asarray(e[6], dtype=np.float32) for e in group])
        labels = probabilities.argmax(axis=1).astype(np.int32)
        columns.update(label=pa.array(labels), probabilities=_list_array(list(probabilities)), forecast=empty,
                       lower=empty, upper=empty)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        predicted = [labels[a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:])]
        arrays = np.concatenate(inputs), probabilities
    else:
        columns.update(label=pa.nulls(total, pa.int32()), probabilities=empty)
        for name, key in (("forecast", "values"), ("lower", "lower"), ("upper", "upper")):
            columns[name] = _list_array([np.asarray(row, dtype=np.float32) for e in group for row in e[6][key]])
        predicted = [[[float(v) for v in row] for row in e[6]["values"]] for e in group]
        arrays = None
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns, schema=SCHEMA), buffer, compression="zstd", compression_level=1)
    return buffer.getvalue(), predicted, arrays
