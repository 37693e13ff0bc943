"""The API's published contract in the open mode `make run` serves on loopback: the schema declares no key,
and Schemathesis checks every operation without one (tests/test_fuzz.py has the checks and the keyed mode)."""

from __future__ import annotations

import pytest

from tests.test_fuzz import fuzz

pytestmark = [pytest.mark.slow, pytest.mark.realstack]


@pytest.mark.timeout(900)
def test_the_api_keeps_its_published_contract_in_the_open_mode(tmp_path):
    fuzz(tmp_path, "open")
