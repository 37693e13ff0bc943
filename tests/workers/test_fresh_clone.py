"""What a newcomer does first: `make run` in a fresh copy of the repository, with nothing installed, then a
job on the labs' own MNIST digits. The copy holds the files git tracks (and new ones it does not ignore),
so it is the checkout a clone of this tree would give; `make run` makes its own virtual environment."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port
from tests.stack import Stack

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def fresh_copy(destination: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


@pytest.mark.timeout(600)
def test_make_run_in_a_fresh_clone_trains_on_mnist_5k(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    clone = fresh_copy(tmp_path / "trainserve")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINSERVE_", "VIRTUAL_ENV", "PYTHONPATH"))}
    env.update(TRAINSERVE_API_PORT=str(port), TRAINSERVE_GRPC_PORT=str(free_port()), TRAINSERVE_WORKER_METRICS_PORT="0",
               PYTHONUNBUFFERED="1")
    log = tmp_path / "make-run.log"
    make = subprocess.Popen(["make", "run"], cwd=clone, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)  # its own process group, stopped below as Ctrl-C would
    stack = Stack(f"http://127.0.0.1:{port}", httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30),
                  env=env, home=clone / "var", processes=[make], logs=[log])
    try:
        stack.wait_ready(timeout=420)  # the first `make run` installs the project into .venv
        venv_python = clone / ".venv" / "bin" / "python"
        absent = subprocess.run([str(venv_python), "-c", "import importlib.util as u; "
                                 "print([m for m in ('mlxtend', 'matplotlib') if u.find_spec(m)])"],
                                capture_output=True, text=True, check=True).stdout.strip()
        assert absent == "[]", "the one-command start needs no plotting stack"

        datasets = {d["name"]: d for d in stack.http.get("/v1/datasets").json()["items"]}
        assert datasets["mnist-5k"]["available"] is True and datasets["mnist-5k"]["stats"]["samples"] == 5000
        spec = {"dataset": "mnist-5k", "architecture": {"type": "logistic_regression"},
                "optimizer": {"type": "adam"}, "training": {"epochs": 5, "learning_rate": 0.001}}
        job = stack.wait_for(stack.http.post("/v1/jobs", json=spec).json()["id"])
        assert job["status"] == "succeeded", f"{job['error']}\n{stack.tail_logs()}"
        assert job["result"]["test_accuracy"] > 0.85, job["result"]["test_accuracy"]  # real digits, learned
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGINT)
            try:
                make.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(make.pid, signal.SIGKILL)
                make.wait()
        stack.http.close()
