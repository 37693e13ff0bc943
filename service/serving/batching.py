"""Dynamic batching on the event loop: the /predict requests that are ready at about the same moment share
one forward pass per model.

Under load several requests' bodies arrive in each turn of the loop; each checks its input, queues its
rows and waits, and a callback run after the loop has polled its sockets once more (so the requests that
arrived meanwhile join too) makes one forward pass over all the rows and hands each request its own.
Nothing waits for a batch to fill: a lone request is answered two callbacks later. The products for a few
rows at once read the first layer's weights once instead of once per request (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import bisect
import time
import uuid
from collections.abc import Callable

import numpy as np
from opentelemetry import trace

from service.observability.tracing import record_span
from service.serving.models import LoadedModel, probabilities

Rows = list[list[float]]
PASS_SIZES = (1, 2, 4, 8, 16, 32, 64, float("inf"))
# A request's model, rows and future, and its span where the request is traced (else None).
Queued = tuple[LoadedModel, np.ndarray, "asyncio.Future[Rows]", "trace.Span | None"]


class Batcher:
    def __init__(self, max_rows: int = 256, run: Callable[[LoadedModel, np.ndarray], Rows] = probabilities):
        self.max_rows, self._run = max_rows, run
        self._queued: list[Queued] = []
        self.requests = self.passes = 0  # how many requests were answered in how many forward passes
        self.pass_sizes = [0] * len(PASS_SIZES)  # passes of at most 1, 2, 4, ... requests (for /metrics)

    def probabilities(self, model: LoadedModel, batch: np.ndarray) -> asyncio.Future[Rows]:
        """``probabilities(model, batch)``, computed together with the other requests queued by then."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._queued:  # the loop runs this callback, polls its sockets, then runs the flush
            loop.call_soon(loop.call_soon, self._flush)
        current = trace.get_current_span()
        self._queued.append((model, batch, future, current if current.is_recording() else None))
        return future

    def _flush(self) -> None:
        queued, self._queued = self._queued, []
        by_model: dict[uuid.UUID, list[Queued]] = {}
        for item in queued:
            by_model.setdefault(item[0].id, []).append(item)
        for items in by_model.values():
            start = 0
            while start < len(items):  # at most max_rows rows a pass; a request's rows stay together
                end, rows = start + 1, len(items[start][1])
                while end < len(items) and rows + len(items[end][1]) <= self.max_rows:
                    rows += len(items[end][1])
                    end += 1
                self._answer(items[start:end])
                start = end

    def _answer(self, items: list[Queued]) -> None:
        self.requests, self.passes = self.requests + len(items), self.passes + 1
        self.pass_sizes[bisect.bisect_left(PASS_SIZES, len(items))] += 1
        model, started = items[0][0], time.time_ns()
        try:
            rows = self._run(model, items[0][1] if len(items) == 1 else np.concatenate([i[1] for i in items]))
        except Exception as error:  # noqa: BLE001 - each request of the pass answers with the error
            for _, _, future, _ in items:
                if not future.done():
                    future.set_exception(error)
            return
        finally:
            traced = [item[3] for item in items if item[3] is not None]
            if traced:  # the pass, as a span in each traced request's trace
                ended = time.time_ns()
                for parent in traced:
                    record_span("forward pass", started, ended, parent, **{
                        "trainserve.pass_requests": len(items), "trainserve.pass_rows": sum(len(i[1]) for i in items),
                        "trainserve.model_id": str(model.id)})
        start = 0
        for _, batch, future, _ in items:
            if not future.done():  # a request given up on while it waited
                future.set_result(rows[start:start + len(batch)])
            start += len(batch)
