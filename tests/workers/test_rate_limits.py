"""The inference rate limit holds across two API processes that share Redis."""

from __future__ import annotations

import contextlib
import subprocess

import pytest

from tests.helpers import REDIS_URL, away_from_a_window_edge, new_postgres_database, unique
from tests.stack import CLI, Stack

pytestmark = [pytest.mark.slow, pytest.mark.realstack]


def test_two_api_processes_share_one_key_s_budget(tmp_path):
    with contextlib.ExitStack() as resources:
        env = {"TRAINSERVE_HOME": str(tmp_path), "TRAINSERVE_DATABASE_URL": resources.enter_context(new_postgres_database()),
               "TRAINSERVE_BROKER_URL": REDIS_URL, "TRAINSERVE_QUEUE": unique("trainserve-limits"),
               "TRAINSERVE_AUTH": "required", "TRAINSERVE_RATE_LIMIT_INFERENCE": "9/hour"}
        stack = resources.enter_context(Stack.start(env, workers=0))
        token = subprocess.run([*CLI, "keys", "create", "--name", "app", "--scopes", "predict"], env=stack.env,
                               capture_output=True, text=True, check=True).stdout.strip()
        other = stack.another_api()
        headers = {"Authorization": f"Bearer {token}"}
        away_from_a_window_edge()
        statuses = []
        for _ in range(7):
            for client in (stack.http, other):
                statuses.append(client.post("/predict", json={"instances": [[0.0] * 64]}, headers=headers).status_code)
        assert statuses.count(429) == 14 - 9, statuses
        assert 429 not in statuses[:9], "the first nine pass, whichever process they reach"
