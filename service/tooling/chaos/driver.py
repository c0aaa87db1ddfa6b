"""The traffic of the chaos soak: WhatsApp users sending bursts of fragments.

Each simulated user (one chat) sends bursts of a few text messages a few
tens of milliseconds apart, pauses, and starts again. Every message is one
Meta-format webhook POST, signed with the app secret, sent alternately to
each service process. A 200 means acknowledged; anything else (503, a
connection error, a timeout) is retried later with the same wamid, as Meta
does, and the user sends nothing else until it is taken, so that the order
in which messages were acknowledged is the order in which they were sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from service.tooling.samples import text_webhook

PHONE_ID = "100000000000777"


@dataclass(slots=True)
class Sent:
    """One message and what became of its POSTs (times: ``time.monotonic()``)."""

    wamid: str
    chat_id: str
    index: int  # position in its chat's sent order
    first_sent: float
    acked: float | None = None
    posts: int = 0


@dataclass(frozen=True)
class Traffic:
    chats: int = 200
    burst: tuple[int, int] = (3, 5)  # fragments per burst
    gap_s: tuple[float, float] = (0.02, 0.2)  # between fragments
    pause_s: tuple[float, float] = (1.0, 3.5)  # between bursts
    retry_s: tuple[float, float] = (0.3, 1.0)  # before re-sending a refused message
    timeout_s: float = 6.0  # a POST without an answer by then is not acknowledged


def whatsapp_body(sender: str, wamid: str, ts: int, text: str) -> bytes:
    """A Cloud API ``messages`` webhook carrying one text message."""
    doc = text_webhook(
        [(sender, wamid, text)], phone_number_id=PHONE_ID, timestamp=ts, contact_name="Chaos"
    )
    return json.dumps(doc).encode()


class Driver:
    def __init__(
        self, urls: Sequence[str], app_secret: bytes, seed: int, traffic: Traffic = Traffic()
    ) -> None:
        self.urls = [u.rstrip("/") + "/webhooks/whatsapp" for u in urls]
        self.secret = app_secret
        self.traffic = traffic
        self.seed = seed
        self.sent: list[Sent] = []
        self.outcomes: Counter[str] = Counter()  # per POST: "200", "503", "ReadTimeout", ...
        self.traffic_until = self.give_up_at = 0.0  # set by run(), moved by extend()
        self._turn = 0

    async def run(self, traffic_until: float, give_up_at: float) -> None:
        """Send bursts until ``traffic_until``; retry refused messages until taken
        or ``give_up_at``. ``extend`` moves both later while this runs."""
        self.traffic_until, self.give_up_at = traffic_until, give_up_at
        t = self.traffic
        limits = httpx.Limits(max_connections=t.chats + 16, max_keepalive_connections=t.chats)
        async with httpx.AsyncClient(timeout=t.timeout_s, limits=limits) as client:
            await asyncio.gather(*(self._user(client, k) for k in range(t.chats)))

    def extend(self, traffic_until: float) -> None:
        """Keep the traffic going until ``traffic_until`` (never shortens it)."""
        if traffic_until > self.traffic_until:
            self.give_up_at += traffic_until - self.traffic_until
            self.traffic_until = traffic_until

    def unacked(self) -> list[Sent]:
        return [s for s in self.sent if s.acked is None]

    async def _user(self, client: httpx.AsyncClient, k: int) -> None:
        t = self.traffic
        rng = random.Random(self.seed * 1_000_003 + k)
        sender = f"1555{self.seed % 1000:03d}{k:06d}"
        chat_id = f"wa:{PHONE_ID}:{sender}"
        index = 0
        await asyncio.sleep(rng.uniform(0, t.pause_s[1]))  # users do not start in step
        while time.monotonic() < self.traffic_until:
            for _ in range(rng.randint(*t.burst)):
                msg = Sent(f"wamid.CHAOS.{self.seed}.{sender}.{index:06d}", chat_id, index, 0.0)
                index += 1
                self.sent.append(msg)
                await self._deliver(client, rng, sender, msg, self.give_up_at)
                if msg.acked is None:
                    return  # gave up: sending more would break this chat's order
                await asyncio.sleep(rng.uniform(*t.gap_s))
            await asyncio.sleep(rng.uniform(*t.pause_s))

    async def _deliver(
        self,
        client: httpx.AsyncClient,
        rng: random.Random,
        sender: str,
        msg: Sent,
        give_up_at: float,
    ) -> None:
        msg.first_sent = time.monotonic()
        body = whatsapp_body(sender, msg.wamid, int(time.time()), f"part {msg.index} of {sender}")
        headers = {
            "Content-Type": "application/json",
            "X-Hub-Signature-256": "sha256="
            + hmac.new(self.secret, body, hashlib.sha256).hexdigest(),
        }
        while True:
            self._turn += 1
            url = self.urls[self._turn % len(self.urls)]
            msg.posts += 1
            try:
                r = await client.post(url, content=body, headers=headers)
                outcome = str(r.status_code)
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            self.outcomes[outcome] += 1
            if outcome == "200":
                msg.acked = time.monotonic()
                return
            if time.monotonic() >= give_up_at:
                return
            await asyncio.sleep(rng.uniform(*self.traffic.retry_s))
