"""The Celery app is built on first use: importing trainserve's modules writes nothing and connects nowhere;
the embedded broker makes its folders when a process first talks to it; the two tasks go to two queues."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # a fresh Python process per test


def run_python(code: str, home) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINSERVE_")}
    env.update(TRAINSERVE_HOME=str(home), TRAINSERVE_ENV_FILE="")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_every_module_creates_nothing_and_connects_nowhere(tmp_path):
    code = """
import json, os, sys
import service.main, service.platform.queue, service.jobs.runner, service.registry.exports, workers.tasks
from service.platform.runtime import Runtime
from service.platform.settings import load_settings
runtime = Runtime(load_settings())  # what an entry point builds: nothing is made or connected before first use
print(json.dumps({"home": os.path.exists(os.environ["TRAINSERVE_HOME"]) and os.listdir(os.environ["TRAINSERVE_HOME"]),
                  "built": sorted(runtime.__dict__.keys() - {"settings", "pid"})}))
"""
    home = tmp_path / "home"
    assert run_python(code, home) == {"home": False, "built": []}


def test_the_embedded_broker_makes_its_folders_when_first_used(tmp_path):
    code = """
import json, os
from service.platform.queue import broker_reachable
from service.platform.runtime import Runtime
from service.platform.settings import load_settings
app = Runtime(load_settings()).celery
built = sorted(os.listdir(os.environ["TRAINSERVE_HOME"])) if os.path.exists(os.environ["TRAINSERVE_HOME"]) else []
print(json.dumps({"after_build": built, "reachable": broker_reachable(app),
                  "after_use": sorted(os.listdir(os.path.join(os.environ["TRAINSERVE_HOME"], "broker")))}))
"""
    assert run_python(code, tmp_path / "home") == {"after_build": [], "reachable": True,
                                                   "after_use": ["control", "queue"]}


def test_jobs_and_exports_travel_on_queues_of_their_own(tmp_path):
    code = """
import json
from service.platform.queue import EXPORT_TASK, TRAIN_TASK, make_celery
from service.platform.settings import load_settings
routes = make_celery(load_settings()).conf.task_routes
print(json.dumps({"train": routes[TRAIN_TASK]["queue"], "export": routes[EXPORT_TASK]["queue"]}))
"""
    assert run_python(code, tmp_path) == {"train": "trainserve", "export": "trainserve-exports"}
