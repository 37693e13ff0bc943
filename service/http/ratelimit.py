"""Rate limits per API key: requests to the inference routes and job submissions, shared by every API
process through Redis (the broker's) on the real stack, in memory on the embedded one.

Fixed windows of the limit's unit (a second, a minute, an hour). Each process takes tokens from the shared count in leases (a 20th of the limit,
at least 1): a request spends a local token, and only a process that runs out asks Redis for another
lease. So /predict costs a dict look-up, not a Redis round trip, while the limit holds across processes
(a lease may go partly unused, which admits fewer requests, never more). Small limits lease one token at
a time and are exact. If Redis does not answer, requests are let through (and that is logged): a broker
outage must not stop predictions.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlparse

from fastapi import Depends, Request

from service.http.errors import AppError

log = logging.getLogger(__name__)


class RateLimited(AppError):
    status_code, code = 429, "rate_limited"


@dataclass(frozen=True)
class Limit:
    count: int
    seconds: int
    unit: str

    @classmethod
    def parse(cls, text: str) -> "Limit | None":
        """``600/minute``, ``10/second`` or ``1000/hour``; empty or ``0``: no limit."""
        text = text.strip()
        if text in ("", "0"):
            return None
        count, _, unit = text.partition("/")
        unit = unit.strip().removesuffix("s") or "minute"
        seconds = {"second": 1, "minute": 60, "hour": 3600}.get(unit)
        if not count.strip().isdigit() or int(count) < 1 or seconds is None:
            raise ValueError(f"{text!r}: write a rate as <count>/second, /minute or /hour, e.g. 600/minute")
        return cls(int(count), seconds, unit)


class _Memory:
    """One process's counts, for the embedded stack (one API process)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def take(self, key: str, amount: int, seconds: int) -> int:
        self.counts[key] = self.counts.get(key, 0) + amount
        if len(self.counts) > 10_000:  # old windows
            self.counts = {k: v for k, v in self.counts.items() if k.rsplit(":", 1)[1] == key.rsplit(":", 1)[1]}
        return self.counts[key]


class _Redis:
    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)

    def take(self, key: str, amount: int, seconds: int) -> int:
        with self.client.pipeline(transaction=True) as pipe:
            pipe.incrby(key, amount)
            pipe.expire(key, seconds * 2)
            total, _ = pipe.execute()
        return int(total)


class RateLimiter:
    def __init__(self, broker_url: str, prefix: str) -> None:
        scheme = urlparse(broker_url).scheme
        self.store = _Redis(broker_url) if scheme in ("redis", "rediss") else _Memory()
        self.prefix = prefix
        self.leases: dict[tuple[str, str], tuple[int, int]] = {}  # (what, owner) -> (window, tokens left)
        self.lock = threading.Lock()
        self.unavailable_since: float | None = None

    def hit(self, what: str, owner: str, limit: Limit | None) -> None:
        """Spend one request of ``owner``'s ``limit`` on ``what``; 429 with Retry-After when none is left."""
        if limit is None:
            return
        now = time.time()
        window = int(now // limit.seconds)
        with self.lock:
            lease_window, left = self.leases.get((what, owner), (window, 0))
            if lease_window == window and left > 0:
                self.leases[(what, owner)] = (window, left - 1)
                return
            granted = self._lease(what, owner, limit, window)
            if granted > 0:
                self.leases[(what, owner)] = (window, granted - 1)
                return
            self.leases[(what, owner)] = (window, 0)
        retry_after = max(1, math.ceil((window + 1) * limit.seconds - now))
        raise RateLimited(f"rate limit: {limit.count} {what} requests a {limit.unit} for this key; try again in "
                          f"{retry_after} s", headers={"Retry-After": str(retry_after)})

    def _lease(self, what: str, owner: str, limit: Limit, window: int) -> int:
        size = max(1, limit.count // 20)
        try:
            total = self.store.take(f"{self.prefix}:ratelimit:{what}:{owner}:{window}", size, limit.seconds)
        except Exception as exc:  # Redis down: let the request through
            if self.unavailable_since is None or time.monotonic() - self.unavailable_since > 60:
                log.warning("rate limits are not enforced: their store does not answer (%s)", exc)
                self.unavailable_since = time.monotonic()
            return 1
        self.unavailable_since = None
        return max(0, min(size, limit.count - (total - size)))


def spend(request: Request, what: str) -> None:
    """Count this request against its key's limit on ``what`` ("inference" or "jobs")."""
    from service.http.auth import principal_of

    principal, state = principal_of(request), request.app.state
    if principal.key_id is not None:  # limits are per key: where keys are not required (loopback), none apply
        state.limiter.hit(what, principal.owner, state.limits[what])


def limited(what: str):
    """A route dependency, after the key check: count the request against the caller's limit on ``what``."""
    def dependency(request: Request) -> None:
        spend(request, what)

    return Depends(dependency)
