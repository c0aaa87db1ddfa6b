"""The admin endpoints through the real app: 404 while BATCHER_ADMIN_TOKEN is
unset, 401 without the bearer token, and with it flush, hold, release, drop
and the chat's state, the chat id percent-encoded in the path."""

from __future__ import annotations

from urllib.parse import quote

from service import Message
from tests.helpers import Collector, app_client

TOKEN = "s3cret-admin-token"
CHAT = "wa:200:15550111111/with slash"
PATH = "/v1/chats/" + quote(CHAT, safe="")
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_admin_endpoints_do_not_exist_without_a_token(redis_url: str) -> None:
    async with app_client(redis_url, Collector()) as (client, _):
        for method, path in (("GET", PATH), ("POST", PATH + "/flush"), ("POST", PATH + "/drop")):
            r = await client.request(method, path, headers=AUTH)
            assert r.status_code == 404, (method, path, r.text)


async def test_admin_endpoints_need_the_bearer_token(redis_url: str) -> None:
    async with app_client(redis_url, Collector(), admin_token=TOKEN) as (client, engine):
        await engine.add(CHAT, Message(id="m1", text="hi"))
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            assert (await client.post(PATH + "/drop", headers=headers)).status_code == 401
            assert (await client.get(PATH, headers=headers)).status_code == 401
        state = (await client.get(PATH, headers=AUTH)).json()
        assert state["open"]["messages"][0]["text"] == "hi"  # nothing was dropped


async def test_flush_hold_release_drop_over_http(redis_url: str) -> None:
    collector = Collector()
    overrides = {"admin_token": TOKEN, "idle_ms": 5_000, "max_wait_ms": 20_000}
    async with app_client(redis_url, collector, **overrides) as (client, engine):
        assert (await client.post(PATH + "/flush", headers=AUTH)).status_code == 409
        await engine.add(CHAT, Message(id="m1", text="one"))
        state = (await client.get(PATH, headers=AUTH)).json()
        assert state["chat_id"] == CHAT and len(state["open"]["messages"]) == 1

        r = await client.post(PATH + "/hold", headers=AUTH)
        assert r.status_code == 200 and r.json()["deadline_ms"] > 0
        assert "held" in (await client.get(PATH, headers=AUTH)).json()["open"]["why"]
        assert (await client.post(PATH + "/release", headers=AUTH)).status_code == 200
        assert (await client.post(PATH + "/release", headers=AUTH)).status_code == 409

        r = await client.post(PATH + "/flush", headers=AUTH)
        assert r.status_code == 200 and r.json() == {"chat_id": CHAT, "action": "flush",
                                                     "messages": 1}  # fmt: skip
        await collector.wait_messages(1, 5.0)
        assert collector.batches[0].reason == "manual"

        await engine.add(CHAT, Message(id="m2", text="two"))
        r = await client.post(PATH + "/drop", headers=AUTH)
        assert r.status_code == 200 and r.json()["messages"] == 1
        state = (await client.get(PATH, headers=AUTH)).json()
        assert state["open"] is None and state["dead"][0]["batch_id"] == r.json()["dead_batch_id"]
        assert (await client.post(PATH + "/frobnicate", headers=AUTH)).status_code == 404
