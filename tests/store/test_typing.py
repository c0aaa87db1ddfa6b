"""The typing script: a typing event re-arms an open batch's timer, within bounds.

Read straight from Redis (the ``due`` index and the timer's PTTL), with idle
150 ms, typing 1 s, max wait 3 s: typing holds an open batch for the typing
window, never beyond the max wait and never shorter than it already runs; a
pause brings a typing hold back to the idle timer; nothing else changes.
"""

from __future__ import annotations

from redis.asyncio import Redis

from service.engine.batcher import Batcher
from service.store.chats import Chats
from tests.helpers import fast_settings

CHAT = "typing:c1"


def batcher_for(client: Redis, url: str, **overrides: int) -> Batcher:
    return Batcher(client, fast_settings(url, typing_ms=1_000, **overrides))


async def deadline_of(b: Batcher, chat: str = CHAT) -> int:
    score = await b.redis.zscore(b.keys.chat(chat).bucket.due, chat)
    return int(score or 0)


async def test_typing_alone_never_opens_a_batch(redis_client: Redis, redis_url: str) -> None:
    b = batcher_for(redis_client, redis_url)
    r = await b.typing(CHAT)
    assert (r.outcome, r.deadline_ms, r.flush_in_ms) == ("no_batch", 0, 0)
    ck = b.keys.chat(CHAT)
    assert await redis_client.exists(ck.buf, ck.timer, ck.meta) == 0
    assert await deadline_of(b) == 0


async def test_typing_holds_the_open_batch_for_the_typing_window(
    redis_client: Redis, redis_url: str
) -> None:
    b = batcher_for(redis_client, redis_url)
    added = await b.add(CHAT, "hello")
    assert added.flush_in_ms <= 150
    r = await b.typing(CHAT)
    assert r.outcome == "held"
    assert 900 <= r.flush_in_ms <= 1_000
    assert r.deadline_ms == await deadline_of(b)
    assert 900 <= await redis_client.pttl(b.keys.chat(CHAT).timer) <= 1_000
    # A second event within the window moves it again (unless in the same
    # millisecond), never earlier.
    again = await b.typing(CHAT)
    assert again.deadline_ms >= r.deadline_ms
    assert again.outcome == ("held" if again.deadline_ms > r.deadline_ms else "unchanged")


async def test_a_pause_puts_a_typing_hold_back_on_the_idle_timer(
    redis_client: Redis, redis_url: str
) -> None:
    b = batcher_for(redis_client, redis_url)
    await b.add(CHAT, "hello")
    held = await b.typing(CHAT)
    paused = await b.typing(CHAT, typing=False)
    assert paused.outcome == "released"
    assert paused.deadline_ms < held.deadline_ms and paused.flush_in_ms <= 150
    assert 0 < await redis_client.pttl(b.keys.chat(CHAT).timer) <= 150
    # A pause never stretches the idle timer, nor shortens it below idle.
    again = await b.typing(CHAT, typing=False)
    assert again.outcome == "unchanged" and again.deadline_ms == paused.deadline_ms


async def test_the_message_typed_ends_the_typing_hold(redis_client: Redis, redis_url: str) -> None:
    """A message sent after typing joins the batch and puts it back on the idle
    timer: the typing it followed is over (more typing holds it again)."""
    b = batcher_for(redis_client, redis_url)
    await b.add(CHAT, "one")
    held = await b.typing(CHAT)
    added = await b.add(CHAT, "two")
    assert added.count == 2 and added.flush_in_ms <= 150 < held.flush_in_ms
    assert (await b.typing(CHAT)).outcome == "held"


async def test_typing_never_holds_beyond_the_max_wait(redis_client: Redis, redis_url: str) -> None:
    b = batcher_for(redis_client, redis_url, max_wait_ms=400, idle_ms=100)
    added = await b.add(CHAT, "hello")
    opened = added.now_ms
    r = await b.typing(CHAT)
    assert r.outcome == "held" and r.deadline_ms == opened + 400


async def test_held_full_and_flushed_batches_are_left_alone(
    redis_client: Redis, redis_url: str
) -> None:
    b = batcher_for(redis_client, redis_url, max_messages=2)
    chats = Chats(redis_client, b.settings)
    await b.add("held", "hello")
    held_until = await chats.hold("held")
    assert (await b.typing("held")).outcome == "unchanged"
    assert await deadline_of(b, "held") == held_until

    await b.add("full", "one")
    full = await b.add("full", "two")  # max_messages: closes now
    assert (await b.typing("full")).outcome == "unchanged"
    assert await deadline_of(b, "full") == full.deadline_ms

    await b.add("flushed", "one")
    await chats.flush("flushed")
    assert (await b.typing("flushed")).outcome == "unchanged"
