"""A rollout's gates against one step's live counts: each gate's numbers, its bound and its verdict.

A gate is a function of the step's summed counts (stable and candidate) that gives a :class:`GateResult`,
so a gate on another live number (live accuracy, once labels come back) is one more function in
:func:`checks`.
"""

from __future__ import annotations

from service.rollouts.schemas import ArmStats, GateResult, Gates
from service.serving.rollouts import Counts, percentile


def arm_stats(c: Counts) -> ArmStats:
    p50, p99 = percentile(c.latency, 0.5), percentile(c.latency, 0.99)
    return ArmStats(requests=c.requests, errors=c.errors, error_rate=c.errors / c.requests if c.requests else None,
                    p50_ms=None if p50 is None else round(p50 * 1000, 3),
                    p99_ms=None if p99 is None else round(p99 * 1000, 3), compared=c.compared)


def _error_rate(gates: Gates, stable: Counts, candidate: Counts) -> GateResult:
    rate = candidate.errors / candidate.requests if candidate.requests else None
    theirs = stable.errors / stable.requests if stable.requests else None
    if rate is None:
        return GateResult(gate="error_rate", value=None, bound=gates.max_error_rate, stable=theirs, passed=None,
                          reason="no candidate requests yet")
    passed = rate <= gates.max_error_rate
    return GateResult(gate="error_rate", value=rate, bound=gates.max_error_rate, stable=theirs, passed=passed,
                      reason=f"error rate {rate:.4f} ({candidate.errors} of {candidate.requests}) is "
                             f"{'within' if passed else 'above'} the bound {gates.max_error_rate:g}; the stable "
                             f"version's is {'-' if theirs is None else f'{theirs:.4f}'}")


def _latency(gates: Gates, stable: Counts, candidate: Counts) -> GateResult:
    """Against the stable version's p99 in the step, or in the whole rollout where the step gave it too few
    requests (a 100 % step gives it none); not judged where the rollout never gave it enough."""
    ours, theirs = percentile(candidate.latency, 0.99), percentile(stable.latency, 0.99)
    if ours is None:
        return GateResult(gate="p99_latency_ms", value=None, bound=None, passed=None, reason="no candidate requests yet")
    if theirs is None or stable.requests < gates.min_requests:
        return GateResult(gate="p99_latency_ms", value=ours * 1000, bound=None,
                          stable=None if theirs is None else theirs * 1000, passed=True,
                          reason=f"not judged: the stable version served {stable.requests} requests in this rollout, "
                                 f"fewer than min_requests ({gates.min_requests}), to compare with")
    bound = max(theirs * gates.max_latency_ratio, theirs + gates.latency_slack_ms / 1000)
    passed = ours <= bound
    return GateResult(gate="p99_latency_ms", value=ours * 1000, bound=bound * 1000, stable=theirs * 1000, passed=passed,
                      reason=f"p99 latency {ours * 1000:.2f} ms is {'within' if passed else 'above'} the bound "
                             f"{bound * 1000:.2f} ms ({gates.max_latency_ratio:g}x the stable version's "
                             f"{theirs * 1000:.2f} ms, or {gates.latency_slack_ms:g} ms more)")


def _agreement(gates: Gates, stable: Counts, candidate: Counts) -> GateResult | None:
    if gates.min_agreement is None:
        return None
    value = candidate.agreed / candidate.compared if candidate.compared else None
    if candidate.compared < gates.min_compared:
        return GateResult(gate="agreement", value=value, bound=gates.min_agreement, passed=None,
                          reason=f"{candidate.compared} of {gates.min_compared} instances compared so far")
    passed = value >= gates.min_agreement
    return GateResult(gate="agreement", value=value, bound=gates.min_agreement, passed=passed,
                      reason=f"agreement {value:.4f} (the same top-1 label on {candidate.agreed} of "
                             f"{candidate.compared} instances) is {'at or above' if passed else 'below'} the bar "
                             f"{gates.min_agreement:g}")


def _difference(gates: Gates, stable: Counts, candidate: Counts) -> GateResult | None:
    if gates.max_difference is None:
        return None
    value = candidate.difference / candidate.scale if candidate.scale else None
    if candidate.compared < gates.min_compared or value is None:
        return GateResult(gate="difference", value=value, bound=gates.max_difference, passed=None,
                          reason=f"{candidate.compared} of {gates.min_compared} forecasts compared so far")
    passed = value <= gates.max_difference
    return GateResult(gate="difference", value=value, bound=gates.max_difference, passed=passed,
                      reason=f"relative difference {value:.4f} of the candidate's forecasts from the stable "
                             f"version's is {'within' if passed else 'above'} the bound {gates.max_difference:g}")


Labelled = tuple[int, int]  # live instances labelled by feedback, and of those answered right


def _live_accuracy(gates: Gates, stable: Labelled, candidate: Labelled) -> GateResult | None:
    if gates.max_accuracy_drop is None:
        return None
    theirs = stable[1] / stable[0] if stable[0] else None
    ours = candidate[1] / candidate[0] if candidate[0] else None
    if min(stable[0], candidate[0]) < gates.min_labels:
        return GateResult(gate="live_accuracy", value=ours, bound=None, stable=theirs, passed=None,
                          reason=f"{candidate[0]} and {stable[0]} labelled instances (candidate, stable) of "
                                 f"{gates.min_labels} each so far")
    bound = theirs - gates.max_accuracy_drop
    passed = ours >= bound
    return GateResult(gate="live_accuracy", value=ours, bound=bound, stable=theirs, passed=passed,
                      reason=f"live accuracy {ours:.4f} on {candidate[0]} labelled instances is "
                             f"{'at or above' if passed else 'below'} {bound:.4f} (the stable version's {theirs:.4f} "
                             f"on {stable[0]}, less {gates.max_accuracy_drop:g})")


def checks(gates: Gates, task: str, stable: Counts, candidate: Counts, stable_before: Counts,
           labelled: dict[str, Labelled] | None = None) -> list[GateResult]:
    """Every gate for a model of ``task`` against the step's counts (``stable_before``: the stable version's
    in the whole rollout, for latency where the step has too few; ``labelled``: each version's labelled live
    instances in the step). Before ``gates.min_requests`` candidate requests nothing is judged (every
    ``passed`` None)."""
    latency_base = stable if stable.requests >= gates.min_requests else stable_before
    labelled = labelled or {}
    results = [_error_rate(gates, stable, candidate), _latency(gates, latency_base, candidate),
               _agreement(gates, stable, candidate) if task == "classification"
               else _difference(gates, stable, candidate),
               _live_accuracy(gates, labelled.get("stable", (0, 0)), labelled.get("candidate", (0, 0)))
               if task == "classification" else None]
    results = [r for r in results if r is not None]
    if candidate.requests < gates.min_requests:
        wait = f"{candidate.requests} of {gates.min_requests} candidate requests so far"
        return [r.model_copy(update={"passed": None, "reason": wait}) for r in results]
    return results
