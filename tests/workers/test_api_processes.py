"""The API on every core: `trainserve api --workers N` runs N processes on one listening socket (uvicorn's
supervisor), the pod's metrics port answers for all of them, a process that dies is replaced, and SIGTERM
stops them all. And an inherited socket (`--fd`, socket activation) answers keep-alive requests without
Nagle's 40 ms wait."""

from __future__ import annotations

import os
import signal
import statistics
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import free_port
from tests.stack import Stack

pytestmark = pytest.mark.slow


def test_keep_alive_answers_over_an_inherited_socket_do_not_wait_for_a_delayed_ack(tmp_path):
    """Without TCP_NODELAY on the accepted connections, each answer's second write waited for the client's
    delayed ACK: every request took 40-44 ms. A busy machine may hold a few back; Nagle held every one."""
    with Stack.start({"TRAINSERVE_HOME": str(tmp_path)}, workers=0) as stack:
        with httpx.Client(base_url=stack.base_url) as client:  # one connection, kept alive
            client.get("/healthz").raise_for_status()
            seconds = []
            for _ in range(50):
                started = time.perf_counter()
                client.get("/healthz").raise_for_status()
                seconds.append(time.perf_counter() - started)
    slow = [round(s * 1000) for s in seconds if s >= 0.040]
    assert len(slow) <= 5 and statistics.median(seconds) < 0.020, f"ms: {[round(s * 1000) for s in seconds]}"


def served_by(metrics_url: str) -> dict[str, float]:
    """Requests each API process has answered, by its pid, from the pod's metrics port (0 for a process
    that has answered none yet)."""
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(metrics_url, timeout=10).text):
        for sample in family.samples:
            counts.setdefault(sample.labels["process"], 0)
            if family.name == "trainserve_http_requests" and sample.name.endswith("_total"):
                counts[sample.labels["process"]] += sample.value
    return counts


def api_processes(supervisor: int) -> set[int]:
    """The supervisor's API processes (spawned by multiprocessing; its resource tracker is not one)."""
    children = {int(p) for p in open(f"/proc/{supervisor}/task/{supervisor}/children").read().split()}
    return {pid for pid in children if _api_process(pid)}


def test_two_processes_share_the_socket_and_the_metrics_port_and_stop_together(tmp_path):
    metrics_port = free_port()
    env = {"TRAINSERVE_HOME": str(tmp_path), "TRAINSERVE_API_METRICS_PORT": str(metrics_port),
           "TRAINSERVE_GRPC_PORT": str(free_port())}
    metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    with Stack.start(env, workers=0, api_args=("--workers", "2")) as stack:
        supervisor = stack.processes[0]

        def both_answer() -> dict | None:
            with httpx.Client(base_url=stack.base_url) as fresh:  # a new connection: either process may take it
                fresh.get("/healthz").raise_for_status()
            counts = served_by(metrics)
            return counts if len(counts) == 2 and all(counts.values()) else None

        counts = stack.wait_until(both_answer, "both API processes answering", timeout=60)
        pids = {int(pid) for pid in counts}
        assert pids == api_processes(supervisor.pid)

        killed, kept = min(pids), max(pids)
        os.kill(killed, signal.SIGKILL)  # one dies: the supervisor starts another, the API keeps answering
        assert httpx.get(f"{stack.base_url}/healthz", timeout=10).status_code == 200  # a new connection

        def replaced() -> set[int] | None:
            now = api_processes(supervisor.pid)
            return now if len(now) == 2 and killed not in now else None

        now = stack.wait_until(replaced, "a process in place of the killed one", timeout=60)
        assert kept in now
        stack.wait_until(lambda: {int(p) for p in served_by(metrics)} == now or None, "the new one in the metrics")

        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=60) == 0, stack.tail_logs()
        for pid in now:
            assert not os.path.exists(f"/proc/{pid}") or _zombie(pid), f"process {pid} outlived the supervisor"


def _api_process(pid: int) -> bool:
    try:
        return "spawn_main" in open(f"/proc/{pid}/cmdline").read()
    except OSError:
        return False


def _zombie(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True
