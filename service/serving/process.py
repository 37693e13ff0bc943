"""Garbage-collector settings for the API process, whose hot path is /predict.

Under load Python's default young-generation threshold (700 net container allocations) ran a collection
every few requests, each walking the objects of every request in flight and promoting them, so that full
collections came every second or so and walked the whole heap: about 300,000 objects (PyTorch, SQLAlchemy,
FastAPI), 130-150 ms with the event loop stopped. Freezing what is alive after start-up takes those objects
out of every later collection, and a higher threshold lets requests finish before a collection looks at
their objects (docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

import torch
from threadpoolctl import threadpool_limits

THRESHOLDS = (50_000, 20, 10)


def settle_heap() -> None:
    """Collects once, moves every object alive now out of the collector's sight and raises its thresholds.
    Call once, when start-up is done: what is frozen is never collected."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)


@contextlib.contextmanager
def api_process_settings(threads: int) -> Iterator[None]:
    """What the API process runs with, for as long as the app runs: ``threads`` PyTorch and BLAS threads
    (inference on small models wants few; the worker beside it needs the other cores) and a settled heap.
    Everything is put back when the app stops, so an app started inside another program (a test, a notebook)
    leaves that program as it found it."""
    torch_threads, thresholds = torch.get_num_threads(), gc.get_threshold()
    torch.set_num_threads(threads)
    with threadpool_limits(threads, user_api="blas"):  # NumPy's BLAS, for the dense fast path
        settle_heap()
        try:
            yield
        finally:
            gc.unfreeze()
            gc.set_threshold(*thresholds)
            torch.set_num_threads(torch_threads)
