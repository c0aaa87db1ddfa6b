"""A message's channel is stored once per batch (store/lua/items.lua): by the
first item of a list and by any item whose channel differs from the one
before it; the others take the one stored before them when read."""

from __future__ import annotations

from redis.asyncio import Redis

from service.engine.batcher import Batcher
from service.models import Message, channel_of, order_messages
from service.store.chats import Chats
from service.store.deadletters import replay_dead
from service.store.scripts import Claimed, Scripts
from tests.helpers import Collector, fast_settings, running_engine

ACCOUNT = {"provider": "whatsapp", "phone_number_id": "100", "waba_id": "1"}
OTHER = {"provider": "whatsapp", "phone_number_id": "200", "waba_id": "1"}


def wa(mid: str, at: float, channel: dict[str, str] | None = None) -> Message:
    return Message(id=mid, text=f"text {mid}", sent_at=at, source="whatsapp", channel=channel)


def revoke(mid: str, target: str) -> Message:
    return Message(id=mid, type="revoke", target_id=target, sent_at=9.0, channel=ACCOUNT)


async def stored(client: Redis, b: Batcher, chat: str) -> list[bytes]:
    return list(await client.lrange(b.keys.chat(chat).buf, 0, -1))


def carriers(items: list[bytes]) -> list[bool]:
    return [b'"channel":' in item for item in items]


async def claim(b: Batcher, chat: str, batch_id: str) -> Claimed:
    scripts = Scripts(b.redis, b.keys, b.settings)
    ck = b.keys.chat(chat)
    await b.redis.delete(ck.timer)
    got = Scripts.parse_claim(
        await scripts.run(scripts.claim_call(ck, batch_id, "token", recovered=False))
    )
    assert isinstance(got, Claimed)
    return got


async def test_the_first_item_carries_the_channel_and_the_rest_inherit_it(
    redis_client: Redis, redis_url: str
) -> None:
    b = Batcher(redis_client, fast_settings(redis_url))
    await b.add_many([("c", wa(f"m{i}", float(i), ACCOUNT)) for i in range(3)])
    items = await stored(redis_client, b, "c")
    assert carriers(items) == [True, False, False]
    messages = order_messages(items)
    assert [m.channel for m in messages] == [ACCOUNT] * 3
    # Another channel is stored where it changes; the batch takes the latest.
    await b.add("c", wa("m3", 3.0, OTHER))
    await b.add("c", wa("m4", 4.0, OTHER))
    items = await stored(redis_client, b, "c")
    assert carriers(items) == [True, False, False, True, False]
    messages = order_messages(items)
    assert [m.channel for m in messages] == [ACCOUNT] * 3 + [OTHER] * 2
    assert channel_of(messages) == OTHER
    # The next batch's first message carries it again.
    await claim(b, "c", "b1")
    await b.add("c", wa("m5", 5.0, OTHER))
    assert carriers(await stored(redis_client, b, "c")) == [True]


async def test_revoking_the_carrier_moves_the_channel_to_the_next_item(
    redis_client: Redis, redis_url: str
) -> None:
    b = Batcher(redis_client, fast_settings(redis_url))
    await b.add_many([("c", wa(f"m{i}", float(i), ACCOUNT)) for i in range(3)])
    before = int(await redis_client.hget(b.keys.chat("c").meta, "bytes") or 0)
    r = await b.add("c", revoke("r1", "m0"))
    assert r.outcome == "revoked"
    items = await stored(redis_client, b, "c")
    assert carriers(items) == [True, False]
    assert [m.channel for m in order_messages(items)] == [ACCOUNT, ACCOUNT]
    size = int(await redis_client.hget(b.keys.chat("c").meta, "bytes") or 0)
    assert size == sum(len(i) - i.index(b"\t") - 1 for i in items) < before
    # the latest stored channel changed hands: the next message stores its own
    await b.add("c", wa("m3", 3.0, ACCOUNT))
    assert carriers(await stored(redis_client, b, "c")) == [True, False, True]


async def test_the_overflow_of_a_full_batch_carries_the_channel(
    redis_client: Redis, redis_url: str
) -> None:
    b = Batcher(redis_client, fast_settings(redis_url, max_messages=2))
    await b.add_many([("c", wa(f"m{i}", float(i), ACCOUNT)) for i in range(3)])
    got = await claim(b, "c", "b1")
    assert len(got.items) == 2 and channel_of(order_messages(got.items)) == ACCOUNT
    rest = await stored(redis_client, b, "c")
    assert carriers(rest) == [True]
    assert [m.channel for m in order_messages(rest)] == [ACCOUNT]
    size = int(await redis_client.hget(b.keys.chat("c").meta, "bytes") or 0)
    assert size == len(rest[0]) - rest[0].index(b"\t") - 1


async def test_a_delivered_batch_has_its_channel(redis_url: str) -> None:
    collector = Collector()
    async with running_engine(redis_url, collector) as engine:
        await engine.batcher.add_many([("c", wa(f"m{i}", float(i), ACCOUNT)) for i in range(3)])
        await engine.batcher.add("plain", "no channel")
        await collector.wait_messages(4)
    by_chat = {b.chat_id: b for b in collector.batches}
    assert by_chat["c"].channel == ACCOUNT and len(by_chat["c"].messages) == 3
    assert by_chat["plain"].channel is None


BRACED = {"provider": "waha", "session": "shop}1", "me}": "x"}


async def test_a_brace_in_a_channel_value_moves_with_a_revoke_and_an_overflow(
    redis_client: Redis, redis_url: str
) -> None:
    b = Batcher(redis_client, fast_settings(redis_url, max_messages=2))
    await b.add_many([("c", wa(f"m{i}", float(i), BRACED)) for i in range(2)])
    await b.add("c", wa("m2", 2.0, ACCOUNT))
    got = await claim(b, "c", "b1")  # m0, m1 taken; m2 opens the next batch
    assert channel_of(order_messages(got.items)) == BRACED
    assert [m.channel for m in order_messages(await stored(redis_client, b, "c"))] == [ACCOUNT]

    await b.add_many([("d", wa(f"n{i}", float(i), BRACED)) for i in range(3)])
    await b.add("d", revoke("r1", "n0"))
    assert [m.channel for m in order_messages(await stored(redis_client, b, "d"))] == [BRACED] * 2


async def test_a_replay_keeps_each_message_its_channel(redis_client: Redis, redis_url: str) -> None:
    settings = fast_settings(redis_url, idle_ms=60_000, max_wait_ms=120_000)
    b, chats = Batcher(redis_client, settings), Chats(redis_client, settings)
    await b.add_many([("c", wa("d0", 1.0, ACCOUNT)), ("c", wa("d1", 3.0, ACCOUNT))])
    dropped = await chats.drop("c")
    assert dropped is not None
    await b.add("c", wa("o0", 2.0, OTHER))
    # Arrival order d0, o0, d1: the merge puts the open message between the
    # dead ones, and d1, which carried no channel, must not take o0's.
    ck = b.keys.chat("c")
    dead = b.keys.dead_batch(ck.bucket.bucket, dropped[0])
    for key, index, ms in ((dead, 0, 1000), (dead, 1, 3000), (ck.buf, 0, 2000)):
        item = await redis_client.lindex(key, index)
        await redis_client.lset(key, index, str(ms).encode() + item[item.index(b"\t") :])
    assert await replay_dead(redis_client, b.keys, dropped[0]) == 2
    messages = order_messages(await stored(redis_client, b, "c"))
    assert [(m.id, m.channel) for m in messages] == [
        ("d0", ACCOUNT),
        ("o0", OTHER),
        ("d1", ACCOUNT),
    ]
