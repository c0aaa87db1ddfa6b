"""The rejected-messages store and the provider-error log, on a real server."""

from __future__ import annotations

from redis.asyncio import Redis

from service.store.keyspace import Keyspace
from service.store.provider_errors import RECENT, ProviderErrors
from service.store.rejected import RejectedStore, entry_id
from service.store.runner import run_scripts

KS = Keyspace()
RAW = {"id": "wamid.X", "type": "text", "text": {"body": "no sender"}}


async def test_kept_whole_with_no_ttl_and_once_per_message(redis_client: Redis) -> None:
    store = RejectedStore(redis_client, KS)
    call = store.keep_call("whatsapp", "no sender", "entry[0].changes[0].value.messages[1]", RAW)
    assert await run_scripts(redis_client, [call, call]) == [1, 0]  # a retry keeps one entry
    other = store.keep_call("whatsapp", "no sender", "elsewhere", {**RAW, "id": "wamid.Y"})
    assert await run_scripts(redis_client, [other]) == [1]
    assert await store.count() == 2
    assert await redis_client.ttl(KS.rejected) == -1
    entry = await store.get(entry_id("whatsapp", RAW))
    assert entry is not None
    assert (entry.source, entry.reason, entry.raw) == ("whatsapp", "no sender", RAW)
    assert entry.path == "entry[0].changes[0].value.messages[1]" and entry.at > 1.7e9
    listed = await store.list()
    assert {e.raw["id"] for e in listed} == {"wamid.X", "wamid.Y"}
    assert listed[0].at >= listed[1].at  # newest first
    assert len(await store.list(limit=1)) == 1


async def test_the_id_is_the_message_not_the_key_order(redis_client: Redis) -> None:
    reordered = dict(reversed(list(RAW.items())))
    assert entry_id("whatsapp", reordered) == entry_id("whatsapp", RAW)
    assert entry_id("twilio", RAW) != entry_id("whatsapp", RAW)


async def test_drop_one_and_all(redis_client: Redis) -> None:
    store = RejectedStore(redis_client, KS)
    calls = [store.keep_call("whatsapp", "r", "p", {"n": n}) for n in range(3)]
    await run_scripts(redis_client, calls)
    first = entry_id("whatsapp", {"n": 0})
    assert await store.drop(first) and not await store.drop(first)
    assert await store.get(first) is None
    assert await store.drop_all() == 2 and await store.count() == 0


async def test_provider_errors_counted_by_code_latest_kept(redis_client: Redis) -> None:
    errors = ProviderErrors(redis_client, KS)
    calls = [errors.report_call("whatsapp", 130429, "Rate limit hit", None, None)] * 2
    calls += [errors.report_call("whatsapp", None, None, "no code", "d")]
    calls += [errors.report_call("whatsapp", 131000, f"e{n}", None, None) for n in range(RECENT)]
    replies = await run_scripts(redis_client, calls)
    assert replies[:3] == [1, 2, 1]
    summary = await errors.summary()
    assert summary.counts == {"whatsapp:130429": 2, "whatsapp:none": 1, "whatsapp:131000": RECENT}
    assert len(summary.recent) == RECENT  # capped
    assert summary.recent[0].title == f"e{RECENT - 1}" and summary.recent[0].code == 131000
