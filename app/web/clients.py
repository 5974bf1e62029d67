"""Who is asking: the client's address, and a per-address rate limit for sign-ups.

The address is the TCP peer's, unless the peer is one of the trusted reverse proxies
(`Settings.trusted_proxies`, also read from `FORWARDED_ALLOW_IPS`): then it is the right-most
address in `X-Forwarded-For` that is not itself a trusted proxy (uvicorn's `ProxyHeadersMiddleware`,
installed by `create_app` only when proxies are configured). Nobody else can choose their address
by sending a header. When the setting is wrong: with no proxy configured behind a proxy, every
visitor has the proxy's address (they share one sign-up budget and one login-failure count); with
an untrusted peer configured as a proxy, visitors can pick their address with a header (and so
dodge the per-address limits, but never the global login brake).

`SignupLimiter`: a token bucket per address, in process memory (no query on the participant
path; with several worker processes each keeps its own, so the limit is per worker).
"""

from __future__ import annotations

import math
import threading
import time

from fastapi import Request


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


class SignupLimiter:
    """At most `burst` sign-ups at once from one address, then `per_minute` a minute. `per_minute`
    0 switches the limit off."""

    MAX_ADDRESSES = 100_000  # beyond this, addresses with a full bucket are forgotten

    def __init__(self, per_minute: float, burst: int, clock=time.monotonic):
        self.rate = per_minute / 60.0
        self.burst = float(max(1, burst))
        self.clock = clock
        self.lock = threading.Lock()
        self.buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)

    def take(self, address: str) -> int:
        """0 when a sign-up from `address` may go ahead (and is counted), else seconds to wait."""
        if self.rate <= 0:
            return 0
        now = self.clock()
        with self.lock:
            tokens, at = self.buckets.get(address, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens >= 1:
                self.buckets[address] = (tokens - 1, now)
                if len(self.buckets) > self.MAX_ADDRESSES:
                    self._prune(now)
                return 0
            self.buckets[address] = (tokens, now)
            return max(1, math.ceil((1 - tokens) / self.rate))

    def _prune(self, now: float) -> None:
        full = [a for a, (t, at) in self.buckets.items() if t + (now - at) * self.rate >= self.burst]
        for a in full:
            del self.buckets[a]
