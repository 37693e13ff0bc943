"""The rollout gates as functions of live counts: each verdict, its bound and its reason, without a server
(the API-level tests keep the latency gate wide, since a busy test machine's p99 is noise)."""

from __future__ import annotations

import pytest

from service.rollouts.gates import checks
from service.rollouts.schemas import Gates
from service.serving.rollouts import Counts


def counts(n: int, seconds: float, errors: int = 0, compared: int = 0, agreed: int = 0) -> Counts:
    c = Counts(errors=errors, compared=compared, agreed=agreed)
    for _ in range(n):
        c.observe(seconds)
    return c


def verdict(results, gate: str):
    return next(r for r in results if r.gate == gate)


@pytest.mark.parametrize(("candidate_s", "passed"), [(0.010, True), (0.012, True), (0.100, False)])
def test_the_latency_gate_compares_the_candidates_p99_with_the_stable_versions(candidate_s, passed):
    gates = Gates(min_requests=50, max_latency_ratio=1.5, latency_slack_ms=2, min_agreement=None)  # buckets: 15 %
    stable = counts(100, 0.010)
    results = checks(gates, "classification", stable, counts(100, candidate_s), stable)
    latency = verdict(results, "p99_latency_ms")
    assert latency.passed is passed, latency.reason
    assert latency.stable == pytest.approx(10, rel=0.3) and latency.bound == pytest.approx(1.5 * latency.stable)
    assert ("above" in latency.reason) is not passed


def test_the_slack_lets_a_fast_stable_versions_candidate_be_a_few_ms_slower():
    gates = Gates(min_requests=50, max_latency_ratio=1.5, latency_slack_ms=5, min_agreement=None)
    stable = counts(100, 0.001)
    assert verdict(checks(gates, "classification", stable, counts(100, 0.004), stable), "p99_latency_ms").passed
    assert not verdict(checks(gates, "classification", stable, counts(100, 0.020), stable), "p99_latency_ms").passed


def test_a_full_step_judges_latency_against_the_whole_rollouts_stable_p99_or_not_at_all():
    gates = Gates(min_requests=50, min_agreement=None)
    slow = counts(100, 0.200)
    full_step = checks(gates, "classification", Counts(), slow, counts(100, 0.010))
    assert verdict(full_step, "p99_latency_ms").passed is False
    never = verdict(checks(gates, "classification", Counts(), slow, counts(10, 0.010)), "p99_latency_ms")
    assert never.passed is True and "not judged" in never.reason


def test_nothing_is_judged_before_min_requests_and_errors_fail_after():
    gates = Gates(min_requests=50, max_error_rate=0.01, min_agreement=None)
    stable = counts(100, 0.010)
    early = checks(gates, "classification", stable, counts(49, 0.010, errors=49), stable)
    assert all(r.passed is None and "49 of 50" in r.reason for r in early)
    errors = verdict(checks(gates, "classification", stable, counts(100, 0.010, errors=2), stable), "error_rate")
    assert errors.passed is False and "2 of 100" in errors.reason


def test_agreement_and_live_accuracy_wait_for_their_own_counts():
    gates = Gates(min_requests=10, min_compared=50, min_agreement=0.9, max_accuracy_drop=0.05, min_labels=100)
    stable = counts(100, 0.010)
    waiting = checks(gates, "classification", stable, counts(100, 0.010, compared=40, agreed=10), stable,
                     {"stable": (200, 190), "candidate": (99, 0)})
    assert verdict(waiting, "agreement").passed is None and verdict(waiting, "live_accuracy").passed is None
    judged = checks(gates, "classification", stable, counts(100, 0.010, compared=60, agreed=50), stable,
                    {"stable": (200, 190), "candidate": (100, 90)})
    assert verdict(judged, "agreement").passed is False  # 50/60 < 0.9
    accuracy = verdict(judged, "live_accuracy")
    assert accuracy.passed is True and accuracy.bound == pytest.approx(0.90)  # 0.95 less 0.05; 0.90 holds it
