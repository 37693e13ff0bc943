"""Starts real trainserve processes for end-to-end tests and talks to them over HTTP."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.helpers import listening_socket, wait_until

TERMINAL = {"succeeded", "failed", "cancelled", "pruned"}
CLI = [sys.executable, "-m", "service.cli"]


@dataclass
class Stack:
    base_url: str
    http: httpx.Client
    env: dict[str, str] = field(default_factory=dict)
    home: Path = Path(".")
    processes: list[subprocess.Popen] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def spawn(self, command: str, *args: str, pass_fds: tuple[int, ...] = (),
              env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start `trainserve <command> <args>` with this stack's settings (and ``env``), logging to its home."""
        log = self.home / f"{command}{len(self.processes)}.log"
        self.logs.append(log)
        process = subprocess.Popen([*CLI, command, *args], env={**self.env, **(env or {})}, stdout=log.open("wb"),
                                   stderr=subprocess.STDOUT, pass_fds=pass_fds)
        self.processes.append(process)
        self.commands.append(command)
        return process

    def worker(self) -> subprocess.Popen:
        """The first worker process still running."""
        return next(p for p, c in zip(self.processes, self.commands) if c == "worker" and p.poll() is None)

    @classmethod
    @contextlib.contextmanager
    def start(cls, env: dict[str, str], workers: int = 1, api_args: tuple[str, ...] = ()) -> Iterator["Stack"]:
        """Migrate, then start the API (``trainserve api --fd N *api_args``) and ``workers`` worker processes;
        stop them all on exit."""
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINSERVE_")}
        # One training thread: the suite runs several tests at once on two cores.
        full_env.update({"TRAINSERVE_WORKER_METRICS_PORT": "0", "TRAINSERVE_WORKER_TORCH_THREADS": "1", **env},
                        TRAINSERVE_CANCEL_CHECK_SECONDS="0.2",
                        TRAINSERVE_ENV_FILE="", PYTHONUNBUFFERED="1")
        subprocess.run([*CLI, "migrate"], env=full_env, check=True, timeout=120)
        sock = listening_socket()
        port = sock.getsockname()[1]
        stack = cls(f"http://127.0.0.1:{port}", httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30),
                    env=full_env, home=Path(env["TRAINSERVE_HOME"]))
        try:
            with sock:
                stack.spawn("api", "--fd", str(sock.fileno()), *api_args, pass_fds=(sock.fileno(),))
            for _ in range(workers):
                stack.spawn("worker")
            stack.wait_ready()
            yield stack
        finally:
            stack.stop()

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in self.processes:
                if p.poll() is not None:
                    raise RuntimeError(f"a trainserve process exited early:\n{self.tail_logs()}")
            with contextlib.suppress(httpx.HTTPError):
                if self.http.get("/readyz/jobs").status_code == 200:  # serving, and taking jobs
                    return
            time.sleep(0.3)
        raise TimeoutError(f"the API did not become ready:\n{self.tail_logs()}")

    def tail_logs(self, lines: int = 40) -> str:
        return "\n".join(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
                         for log in self.logs if log.exists())

    def stop(self) -> None:
        for p in self.processes:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.processes:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.http.close()

    def another_api(self, **env: str) -> httpx.Client:
        """A second API process on this stack's database, broker and artifacts (another replica), with
        ``env`` changing its settings; a client for it, once it answers."""
        sock = listening_socket()
        port = sock.getsockname()[1]
        with sock:
            process = self.spawn("api", "--fd", str(sock.fileno()), pass_fds=(sock.fileno(),), env=env)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)

        def answering() -> bool | None:
            if process.poll() is not None:
                raise RuntimeError(f"the second API exited:\n{self.tail_logs()}")
            with contextlib.suppress(httpx.HTTPError):
                return client.get("/healthz").status_code == 200 or None
            return None

        self.wait_until(answering, what="the second API")
        return client

    def wait_until(self, value, what: str, timeout: float = 120):
        """Poll ``value()`` until it returns something other than None, and return that."""
        return wait_until(value, what, timeout, self.tail_logs)

    def wait_for(self, job_id: str, statuses: set[str] = TERMINAL, timeout: float = 240,
                 predicate=None) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.http.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in statuses and (predicate is None or predicate(job)):
                return job
            time.sleep(0.2)
        raise TimeoutError(f"job {job_id} is still {job['status']}:\n{self.tail_logs()}")
