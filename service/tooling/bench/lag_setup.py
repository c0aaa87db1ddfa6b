"""One lag run's parameters, shared by the service run (``lag.py``) and the
baselines (``naive.py``, ``polling.py``): the options, one run's settings, and
the server preparation every variant starts from."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from service.tooling.bench.common import server_config

VARIANTS = ("service", "events-only", "naive", "polling")
TEXT = "x" * 40
VOLATILE_TTL_S = 600


@dataclass(frozen=True)
class LagOptions:
    ns: tuple[int, ...] = (1_000, 10_000)
    variants: tuple[str, ...] = VARIANTS
    window_s: float | None = None  # None: default_window(n)
    idle_ms: int | None = None  # None: window + 2 s (all N open at once)
    wait_s: float = 30.0  # after the last deadline, for late events
    nudge_interval_ms: int = 2
    buckets: int = 16
    concurrency: int = 64
    hz: int | None = None  # CONFIG SET for the run (None: the server's)
    effort: int | None = None  # active-expire-effort, likewise
    volatile: int = 0  # unrelated keys with a 600 s TTL, present in every variant
    naive_ttl_ms: int | None = None  # None: default_naive_ttl(idle)
    cluster: bool = False  # also the service on a local 3-primary Redis Cluster


def default_window(n: int) -> float:
    """Deadlines spread over 10 s up to 10 000 batches, then over 30 s or
    more, so that at most ~3 333 fall due a second (1 000 000: 300 s): a
    larger N measures more open batches, not a higher flush rate."""
    if n <= 10_000:
        return 10.0
    return max(30.0, n * 3 / 10_000)


def default_naive_ttl(idle_ms: int) -> int:
    """The seed's 60 s data TTL with its 10 s idle: a 50 s margin. Longer idle
    times keep that margin, so the TTL never fires before the deadline."""
    return max(60_000, idle_ms + 50_000)


@dataclass(frozen=True)
class Run:
    """One variant's parameters for one N."""

    url: str
    n: int
    window_s: float
    idle_ms: int
    opts: LagOptions

    @property
    def wait_s(self) -> float:
        """From the end of the appends to the end of the run, at most."""
        return self.idle_ms / 1000 + self.opts.wait_s


async def prepare(client: Redis, run: Run) -> None:
    """Empty the database, apply the server knobs, add the volatile filler."""
    await client.flushdb()
    if run.opts.hz is not None:
        await client.config_set("hz", run.opts.hz)
    if run.opts.effort is not None:
        await client.config_set("active-expire-effort", run.opts.effort)
    for lo in range(0, run.opts.volatile, 10_000):
        pipe = client.pipeline(transaction=False)
        for i in range(lo, min(run.opts.volatile, lo + 10_000)):
            pipe.set(f"bench:volatile:{i}", b"v" * 40, ex=VOLATILE_TTL_S)
        await pipe.execute()


async def expiry_config(client: Redis) -> dict[str, str]:
    return await server_config(client, "hz", "active-expire-effort")
