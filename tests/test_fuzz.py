"""Schemathesis against a live API on PostgreSQL and Redis, with every check: no 5xx, no status the schema
does not document, no response that breaks its schema, and no schema-valid request refused except where
tests/schemathesis.toml lists the business reason. In both modes: keys required (the schema declares the
bearer key, and a request without one must be refused), and open, as `make run` serves on loopback (the
schema declares no key, and a request without one must be answered)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REDIS_URL, new_postgres_database, unique
from tests.stack import CLI, Stack

pytestmark = [pytest.mark.slow, pytest.mark.realstack]
CONFIG = Path(__file__).with_name("schemathesis.toml")


# The open mode differs from the keyed one only in what the schema declares about keys and what a request
# without one gets: there, the same checks on fewer examples per operation, in the phases that send
# generated requests to every operation (the coverage phase's boundary cases and the stateful phase's
# links are the same in both modes, and run in the keyed one).
MODES = {"keys-required": ({"TRAINSERVE_AUTH": "required"}, 25, "examples,coverage,fuzzing,stateful"),
         "open": ({"TRAINSERVE_AUTH": "auto"}, 8, "examples,fuzzing")}


@pytest.mark.timeout(900)  # Schemathesis's own run has up to 900 s (below); pytest's default 300 s is for tests
def test_the_api_keeps_its_published_contract_with_keys_required(tmp_path):
    fuzz(tmp_path, "keys-required")


def fuzz(tmp_path, mode: str) -> None:
    """Schemathesis against a live API in ``mode`` (one of MODES). The open mode's test is a file of its own,
    tests/test_fuzz_open.py, so that `make test` runs the two at once."""
    binary = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert binary, "schemathesis comes with the dev extra; run `make test`"
    auth, examples, phases = MODES[mode]
    with contextlib.ExitStack() as resources:
        env = {"TRAINSERVE_HOME": str(tmp_path), "TRAINSERVE_DATABASE_URL": resources.enter_context(new_postgres_database()),
               "TRAINSERVE_BROKER_URL": REDIS_URL, "TRAINSERVE_QUEUE": unique("trainserve-fuzz"), **auth,
               "TRAINSERVE_ACCESS_LOG": "false", "TRAINSERVE_RATE_LIMIT_INFERENCE": "", "TRAINSERVE_RATE_LIMIT_JOBS": ""}
        stack = resources.enter_context(Stack.start(env, workers=0))
        schema = stack.http.get("/openapi.json").json()
        secured = [op for item in schema["paths"].values() for op in item.values() if op.get("security")]
        headers = []
        if mode == "open":
            assert not secured and "securitySchemes" not in schema.get("components", {}), "open: no key declared"
        else:
            assert secured, "keys required: the schema says so"
            key = subprocess.run([*CLI, "keys", "create", "--name", "fuzz", "--scopes", "admin"], env=stack.env,
                                 capture_output=True, text=True, check=True).stdout.strip()
            headers = ["--header", f"Authorization: Bearer {key}"]
        out = subprocess.run([binary, "--config-file", str(CONFIG), "run", f"{stack.base_url}/openapi.json", *headers,
                              "--max-examples", str(examples), "--phases", phases, "--seed", "20261129",
                              "--generation-with-security-parameters", "false",
                              "--generation-deterministic", "--request-timeout", "30"],
                             capture_output=True, text=True, timeout=900, cwd=tmp_path)
        assert out.returncode == 0, out.stdout[-12000:] + out.stderr[-2000:] + stack.tail_logs()
        assert " passed" in out.stdout and "generated" in out.stdout
