"""The periodic-evaluation lease: one replica at a time runs periodic and proactive evaluation
(DESIGN "Scale"), and another takes over within a bounded time when that one dies.

The lease is a Redis string holding its holder's token. A replica takes it with SET NX PX,
renews it well inside its TTL with a compare-and-renew script (lease_renew-1.lua) and gives
it up on stop with a compare-and-delete script (lease_release-1.lua), so a replica whose lease
ran out never extends or deletes its successor's.

The holder trusts the lease only until its own deadline: measured from the moment *before*
the request that took or renewed it, and shortened by a drift margin, so it stops acting as
the leader before Redis can hand the lease to another replica, whatever the network delays.

Takeover bound: the lease of a holder that dies expires at most `ttl_ms` after its last
renewal, which came before its death; another replica, trying once per renew interval, takes
it at most one renew interval after that. So the work resumes elsewhere within
`ttl_ms + renew_interval_ms` (`takeover_bound_s`) plus a round trip or two, and within one
renew interval after a graceful stop, which releases the lease.

The lease saves duplicated work; it is not what keeps firings unique. A holder paused past
its deadline (a long GC pause, a stalled host) may still finish a round it began while a
successor starts one: every state change is an atomic script and every firing has a
deterministic id sent as `Nats-Msg-Id`, so the overlap costs work, never a second firing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable

from redis.asyncio import Redis

from svc.state.scripts import Scripts

logger = logging.getLogger(__name__)

# Share of the TTL the holder does not trust, for clock-rate drift between this host and
# Redis (Redlock's drift factor), plus a fixed margin for timer granularity.
CLOCK_DRIFT_FACTOR = 0.01
CLOCK_DRIFT_MARGIN_MS = 2


class LeaseSettingsError(ValueError):
    """A TTL and renew interval under which the holder could lose the lease between renewals."""


class Lease:
    """One named lease in Redis, as seen by one replica (its token).

    `held` is this replica's local, conservative view: True only before its own deadline.
    `gained` is set whenever the lease is taken, for a loop that waits to become the leader.
    """

    def __init__(
        self,
        client: Redis,
        key: str,
        scripts: Scripts,
        *,
        ttl_ms: int,
        renew_interval_ms: int,
        token: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        if renew_interval_ms <= 0 or 2 * renew_interval_ms > ttl_ms:
            raise LeaseSettingsError(
                f"the lease renew interval ({renew_interval_ms} ms, "
                f"TRIGGERS_LEASE_RENEW_INTERVAL_MS) must be positive and at most half the "
                f"lease TTL ({ttl_ms} ms, TRIGGERS_LEASE_TTL_MS), so that one late renewal "
                "does not lose the lease; lower the interval or raise the TTL"
            )
        self.client = client
        self.key = key
        self.scripts = scripts
        self.ttl_ms = ttl_ms
        self.renew_interval_ms = renew_interval_ms
        self.token = token or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self.gained = asyncio.Event()
        self._monotonic = monotonic
        self._valid_until = 0.0  # monotonic seconds; 0: not held
        self._trusted_s = (ttl_ms * (1 - CLOCK_DRIFT_FACTOR) - CLOCK_DRIFT_MARGIN_MS) / 1000

    @property
    def held(self) -> bool:
        return self._monotonic() < self._valid_until

    @property
    def takeover_bound_s(self) -> float:
        """The longest another replica waits for this lease after its holder dies."""
        return (self.ttl_ms + self.renew_interval_ms) / 1000

    async def refresh(self) -> bool:
        """One round: renew the lease if this replica holds it in Redis, else try to take it.
        Returns whether it is held now. Redis errors propagate; the local deadline stays."""
        was_held = self.held
        sent = self._monotonic()
        renewed = await self.scripts.lease_renew(
            self.client, [self.key], [self.token, self.ttl_ms]
        )
        if renewed or await self.client.set(self.key, self.token, nx=True, px=self.ttl_ms):
            self._valid_until = sent + self._trusted_s
            if not was_held:
                logger.info("took the lease %s (token %s)", self.key, self.token)
                self.gained.set()
            return True
        if was_held or self._valid_until:
            logger.warning(
                "lost the lease %s: another replica holds it, or it expired before renewal",
                self.key,
            )
        self._lose()
        return False

    async def run(self, stopping: asyncio.Event) -> None:
        """Refresh every renew interval until `stopping` is set. A failed round (Redis
        unreachable) is logged; the lease is then trusted only up to its deadline."""
        interval_s = self.renew_interval_ms / 1000
        while not stopping.is_set():
            was_held = self.held
            try:
                # a round that outlives the interval is not worth finishing: the next one
                # starts from a fresh time
                await asyncio.wait_for(self.refresh(), timeout=interval_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if was_held and not self.held:
                    logger.warning("lease %s ran out while Redis was unreachable", self.key)
                else:
                    logger.warning("could not refresh the lease %s: %r", self.key, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=interval_s)

    async def release(self) -> None:
        """Give the lease up (compare-and-delete), so another replica takes over at once
        rather than after the TTL. A failure is logged: the lease then just expires."""
        if not self._valid_until:
            return
        self._lose()
        try:
            await self.scripts.lease_release(self.client, [self.key], [self.token])
        except Exception as exc:
            logger.warning("could not release the lease %s (it expires by itself): %r",
                           self.key, exc)

    def _lose(self) -> None:
        self._valid_until = 0.0
        self.gained.clear()
