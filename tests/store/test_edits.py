"""Edits and revokes in the append script: applied to the open batch, atomically.

An edit or a revoke names an earlier message (``target_id``). While that
message is still in its chat's open batch, the append script changes it in
place; once it has left (claimed, delivered), the edit or revoke is appended
as a message of its own.
"""

from __future__ import annotations

from redis.asyncio import Redis

from service.engine.batcher import Batcher
from service.models import Message, Sender, order_messages
from service.store.scripts import Claimed, Scripts
from tests.helpers import fast_settings


def batcher_for(client: Redis, url: str, **overrides: int) -> Batcher:
    return Batcher(client, fast_settings(url, **overrides))


def text(mid: str, body: str, at: float) -> Message:
    return Message(id=mid, text=body, sent_at=at, sender=Sender(id="u1", name="Ana"))


def edit(mid: str, target: str, body: str, at: float) -> Message:
    return Message(id=mid, type="edit", text=body, sent_at=at, target_id=target)


def revoke(mid: str, target: str) -> Message:
    return Message(id=mid, type="revoke", target_id=target, sent_at=3.0)


async def open_batch(b: Batcher, client: Redis, chat: str) -> list[Message]:
    return order_messages(await client.lrange(b.keys.chat(chat).buf, 0, -1))


async def claim(b: Batcher, chat: str) -> Claimed:
    scripts = Scripts(b.redis, b.keys, b.settings)
    ck = b.keys.chat(chat)
    await b.redis.delete(ck.timer)
    got = Scripts.parse_claim(
        await scripts.run(scripts.claim_call(ck, "batch-1", "token", recovered=False))
    )
    assert isinstance(got, Claimed)
    return got


async def test_an_edit_changes_the_message_in_place(redis_client: Redis, redis_url: str) -> None:
    b = batcher_for(redis_client, redis_url)
    await b.add("c", text("m1", "see you at 5", 1.0))
    await b.add("c", text("m2", "bring the keys", 2.0))
    r = await b.add("c", edit("e1", "m1", "see you at 6", 3.0))
    assert (r.outcome, r.accepted, r.count) == ("edited", True, 2)
    first, second = await open_batch(b, redis_client, "c")
    assert (first.id, first.type, first.text, first.edited_at) == (
        "m1",
        "text",
        "see you at 6",
        3.0,
    )
    assert first.sent_at == 1.0 and first.sender == Sender(id="u1", name="Ana")  # kept
    assert [h.id for h in first.history] == ["e1"] and first.history[0].target_id == "m1"
    assert second.text == "bring the keys" and second.edited_at is None


async def test_edits_pile_up_in_order_and_retries_are_duplicates(
    redis_client: Redis, redis_url: str
) -> None:
    b = batcher_for(redis_client, redis_url)
    await b.add("c", text("m1", "v1", 1.0))
    await b.add("c", edit("e1", "m1", "v2", 2.0))
    await b.add("c", edit("e2", "m1", "v3", 3.0))
    again = await b.add("c", edit("e1", "m1", "v2", 2.0))  # the provider's retry
    assert again.outcome == "duplicate"
    (only,) = await open_batch(b, redis_client, "c")
    assert (only.text, only.edited_at, [h.text for h in only.history]) == ("v3", 3.0, ["v2", "v3"])


async def test_an_edit_re_arms_the_idle_timer(redis_client: Redis, redis_url: str) -> None:
    b = batcher_for(redis_client, redis_url, idle_ms=800, max_wait_ms=5000)
    first = await b.add("c", text("m1", "v1", 1.0))
    r = await b.add("c", edit("e1", "m1", "v2", 2.0))
    assert r.deadline_ms - r.now_ms == 800 and r.deadline_ms >= first.deadline_ms
    assert 700 < await redis_client.pttl(b.keys.chat("c").timer) <= 800


async def test_a_revoke_takes_the_message_out(redis_client: Redis, redis_url: str) -> None:
    b = batcher_for(redis_client, redis_url)
    await b.add("c", text("m1", "wrong chat, sorry", 1.0))
    await b.add("c", text("m2", "hello", 2.0))
    r = await b.add("c", revoke("r1", "m1"))
    assert (r.outcome, r.count) == ("revoked", 1)
    assert [m.id for m in await open_batch(b, redis_client, "c")] == ["m2"]
    meta = b.keys.chat("c").meta
    size = int(await redis_client.hget(meta, "bytes"))
    assert size == len(text("m2", "hello", 2.0).stored_json())  # the batch size shrank


async def test_a_batch_emptied_by_revokes_is_gone(redis_client: Redis, redis_url: str) -> None:
    b = batcher_for(redis_client, redis_url)
    await b.add("c", text("m1", "oops", 1.0))
    r = await b.add("c", revoke("r1", "m1"))
    assert (r.outcome, r.accepted, r.count) == ("emptied", True, 0)
    ck = b.keys.chat("c")
    assert not await redis_client.exists(ck.buf, ck.timer)
    assert await redis_client.zscore(ck.bucket.due, "c") is None
    assert (await b.add("c", revoke("r1", "m1"))).outcome == "duplicate"
    # the next message opens a new batch
    fresh = await b.add("c", text("m3", "hi again", 4.0))
    assert (fresh.outcome, fresh.count) == ("appended", 1)


async def test_an_edit_of_a_message_already_taken_is_its_own_message(
    redis_client: Redis, redis_url: str
) -> None:
    b = batcher_for(redis_client, redis_url)
    await b.add("c", text("m1", "v1", 1.0))
    got = await claim(b, "c")
    assert len(got.items) == 1
    r = await b.add("c", edit("e1", "m1", "v2", 2.0))
    assert (r.outcome, r.count) == ("appended", 1)
    (alone,) = await open_batch(b, redis_client, "c")
    assert (alone.id, alone.type, alone.text, alone.target_id) == ("e1", "edit", "v2", "m1")
    r = await b.add("c", revoke("r1", "m1"))
    assert r.outcome == "appended"


async def test_the_target_is_matched_by_the_whole_id(redis_client: Redis, redis_url: str) -> None:
    """``m1`` is not ``m10``, and an id that looks like JSON cannot match another's prefix."""
    b = batcher_for(redis_client, redis_url)
    await b.add("c", text("m10", "ten", 1.0))
    await b.add("c", text('m1","x', "tricky", 2.0))
    assert (await b.add("c", edit("e1", "m1", "one", 3.0))).outcome == "appended"
    assert (await b.add("c", revoke("r1", "m1"))).outcome == "appended"
    texts = [m.text for m in await open_batch(b, redis_client, "c")]
    assert texts[:2] == ["ten", "tricky"]


async def test_an_edit_in_another_chat_does_not_apply(redis_client: Redis, redis_url: str) -> None:
    b = batcher_for(redis_client, redis_url)
    await b.add("c1", text("m1", "mine", 1.0))
    assert (await b.add("c2", edit("e1", "m1", "theirs", 2.0))).outcome == "appended"
    (m,) = await open_batch(b, redis_client, "c1")
    assert m.text == "mine"


async def test_a_delivered_batch_shows_the_edit(redis_client: Redis, redis_url: str) -> None:
    b = batcher_for(redis_client, redis_url)
    await b.add("c", text("m1", "v1", 1.0))
    await b.add("c", edit("e1", "m1", "v2", 2.0))
    got = await claim(b, "c")
    (m,) = order_messages(got.items)
    assert (m.id, m.text, m.edited_at) == ("m1", "v2", 2.0)
