"""Logging for every trainserve process: plain text (the ``make run`` default) or JSON lines
(``TRAINSERVE_LOG_FORMAT=json``, as the deployment ships), each line with the ids of what it is about.

The ids live in context variables: ``request_id`` (set by the API's telemetry middleware from
``X-Request-ID``), ``key_id`` (the API key's id, never the key, set when a request is authorized),
``job_id`` (set while a worker runs a job or an export), and ``trace_id`` (the current span's, when traced).
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar

from opentelemetry import trace

request_id: ContextVar[str | None] = ContextVar("trainserve_request_id", default=None)
key_id: ContextVar[str | None] = ContextVar("trainserve_key_id", default=None)
job_id: ContextVar[str | None] = ContextVar("trainserve_job_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"


class Ids(logging.Filter):
    """Adds request_id, key_id, job_id and trace_id to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id, record.key_id, record.job_id = request_id.get(), key_id.get(), job_id.get()
        context = trace.get_current_span().get_span_context()
        record.trace_id = format(context.trace_id, "032x") if context.is_valid else None
        return True


class ExpectedRejects(logging.Filter):
    """A stopping worker hands a job it received back to the queue (workers/tasks.py raises Celery's Reject):
    expected, and Celery's own line says so ("reject requeue=True: this worker is shutting down"). Its
    traceback, which Celery adds, is dropped; any other exception keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and type(exc).__name__ == "Reject" and type(exc).__module__.startswith("celery"):
            record.exc_info, record.exc_text = None, None
        return True


def formatter(fmt: str) -> logging.Formatter:
    if fmt == "json":
        from pythonjsonlogger.core import RESERVED_ATTRS
        from pythonjsonlogger.json import JsonFormatter

        return JsonFormatter(JSON_FIELDS, rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                             defaults={"request_id": None, "key_id": None, "job_id": None, "trace_id": None},
                             reserved_attrs=[*RESERVED_ATTRS, "color_message"])  # uvicorn's coloured copy
    return logging.Formatter(TEXT_FORMAT)


def configure(fmt: str = "text", level: int = logging.INFO, access_log: bool = True) -> None:
    """One handler on the root logger, on stderr, that every logger (uvicorn's and Celery's included)
    propagates to; ``access_log``: whether uvicorn's line per request is written. Idempotent: a second call
    replaces the first's handler."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "trainserve", False)]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.trainserve = True
    handler.setFormatter(formatter(fmt))
    handler.addFilter(Ids())
    handler.addFilter(ExpectedRejects())
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery"):
        logger = logging.getLogger(name)
        logger.handlers.clear()  # their own handlers would print each line a second time, unformatted
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = not access_log

