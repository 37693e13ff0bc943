"""One /metrics for an API that runs in several processes on one socket (TRAINSERVE_API_WORKERS).

Each process counts in plain integers on its own event loop (metrics.py), so a scrape of the API's port
reaches one process and sees its numbers only. Where there are several, each serves its metrics on a
loopback port of its own and writes that port into a folder they share; the supervising process serves
TRAINSERVE_API_METRICS_PORT and, on each scrape, reads every process's metrics and answers them together,
each sample labelled with the process it came from (``process``, its pid). prometheus-client's own
multiprocess mode would write every increment to a memory-mapped file on the inference path; this costs
nothing until a scrape.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.request import urlopen

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)


def announce(folder: str, registry: CollectorRegistry) -> None:
    """Serve this process's ``registry`` on a loopback port and leave the port in ``folder`` under this pid."""
    server, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
    entry = Path(folder) / str(os.getpid())
    entry.with_suffix(".new").write_text(str(server.server_port))
    entry.with_suffix(".new").replace(entry)  # whole, or not there


class Gathered(Collector):
    """Every live process's metrics from ``folder``, each sample labelled with its process."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for entry in sorted(self.folder.iterdir()):
            if not entry.name.isdigit():
                continue
            try:
                with urlopen(f"http://127.0.0.1:{int(entry.read_text())}/metrics", timeout=5) as answer:
                    text = answer.read().decode()
            except (OSError, ValueError):
                if not _alive(int(entry.name)):
                    entry.unlink(missing_ok=True)  # a process that is gone; its replacement has its own entry
                continue
            for family in text_string_to_metric_families(text):
                merged = families.setdefault(family.name, Metric(family.name, family.documentation, family.type,
                                                                 family.unit))
                merged.samples += [s._replace(labels={**s.labels, "process": entry.name}) for s in family.samples]
        yield from families.values()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


@contextlib.contextmanager
def gathered(port: int) -> Iterator[str]:
    """The shared folder for the processes' entries, and, where ``port`` is set, the pod's /metrics on it."""
    folder = tempfile.mkdtemp(prefix="trainserve-api-metrics-")
    server = None
    try:
        if port:
            registry = CollectorRegistry()
            registry.register(Gathered(folder))
            server, _ = start_http_server(port, registry=registry)
            log.info("every API process's metrics at http://0.0.0.0:%d/metrics (TRAINSERVE_API_METRICS_PORT)", port)
        yield folder
    finally:
        if server is not None:
            server.shutdown()
        shutil.rmtree(folder, ignore_errors=True)
