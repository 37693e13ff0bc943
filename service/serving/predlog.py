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
from datetime import datetime, timezone
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import select

from service.observability import logs
from service.platform.runtime import Runtime
from service.platform.tables import MonitoringSettings, Prediction
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
        """Write the buffer out: Parquet to the artifact store, then the requests' rows to the database.
        Returns the requests written."""
        with self._lock:
            entries, self._buffer = self._buffer, []
        entries = [e for e in entries if e[0] is not None]  # no request id: nothing could refer to it
        if not entries:
            return 0
        groups: dict[str, list[tuple]] = {}
        for entry in entries:
            groups.setdefault(partition(entry[2].name, entry[1]), []).append(entry)
        for folder, group in groups.items():
            self._files += 1
            runtime.store.put(f"{folder}/{self.replica}-{time.time_ns()}-{self._files}.parquet", _parquet(group))
        rows = [_row(e) for e in entries]
        with runtime.session() as session:
            known = set(session.scalars(select(Prediction.request_id)
                                        .where(Prediction.request_id.in_([r.request_id for r in rows]))))
            fresh: dict[str, Prediction] = {}
            for row in rows:  # a request id sent twice (a client's retry) keeps its first request
                if row.request_id not in known and row.request_id not in fresh:
                    fresh[row.request_id] = row
            session.add_all(fresh.values())
        self.written += len(entries)
        return len(entries)


def _row(entry: tuple) -> Prediction:
    request_id, at, model, role, key_id, inputs, outputs = entry
    if model.forecast is None:
        predicted = [int(np.argmax(row)) for row in outputs]
    else:
        predicted = [list(map(float, row)) for row in outputs["values"]]
    return Prediction(request_id=request_id, model_id=model.id, name=model.name, version=model.version, role=role,
                      task="forecast" if model.forecast is not None else "classification", created_at=at,
                      instances=len(predicted), predicted=predicted,
                      key_id=None if key_id in (None, "anonymous") else key_id)


def _parquet(group: list[tuple]) -> bytes:
    columns: dict[str, list] = {field.name: [] for field in SCHEMA}
    for request_id, at, model, role, key_id, inputs, outputs in group:
        flat = np.asarray(inputs, dtype=np.float32).reshape(len(inputs), -1)
        for i in range(len(flat)):
            columns["request_id"].append(request_id)
            columns["time"].append(at)
            columns["version"].append(model.version)
            columns["model_id"].append(str(model.id))
            columns["role"].append(role)
            columns["key_id"].append(key_id)
            columns["instance"].append(i)
            columns["inputs"].append(flat[i])
            if model.forecast is None:
                row = np.asarray(outputs[i], dtype=np.float32)
                columns["label"].append(int(row.argmax()))
                columns["probabilities"].append(row)
                for name in ("forecast", "lower", "upper"):
                    columns[name].append(None)
            else:
                columns["label"].append(None)
                columns["probabilities"].append(None)
                for name, key in (("forecast", "values"), ("lower", "lower"), ("upper", "upper")):
                    columns[name].append(np.asarray(outputs[key][i], dtype=np.float32))
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns, schema=SCHEMA), buffer, compression="zstd")
    return buffer.getvalue()
