"""The samples of docs/examples work as their docstrings say: the receiver
through Starlette's TestClient, the handler loaded the way the service loads
``BATCHER_HANDLER=handler:handle``, and that handler on a real engine."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import importlib
import json
import sys
import warnings
from types import ModuleType
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning

from service import Batch, Message
from service.engine.forward import sign
from service.engine.handlers import load_handler
from tests.helpers import REPO_ROOT, running_engine

with warnings.catch_warnings():
    # This Starlette prefers the httpx2 package for its TestClient and warns on
    # import when it finds only httpx (a project dependency), which works.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

EXAMPLES = REPO_ROOT / "docs" / "examples"
SECRET = b"example-forward-secret"


def example(monkeypatch: pytest.MonkeyPatch, name: str) -> ModuleType:
    """docs/examples/<name>.py, freshly imported from that folder."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.delitem(sys.modules, name, raising=False)
    module = importlib.import_module(name)
    assert module.__file__ == str(EXAMPLES / f"{name}.py")
    return module


def make_batch(batch_id: str = "b-1", seq: int = 1, **fields: Any) -> Batch:
    doc: dict[str, Any] = {
        "batch_id": batch_id,
        "chat_id": "wa:200:15550111111",
        "seq": seq,
        "attempt": 1,
        "reason": "idle",
        "opened_at": 1767225600.0,
        "closed_at": 1767225610.0,
        "messages": [
            {"id": "m1", "text": "hi", "source": "whatsapp"},
            {"id": "m2", "type": "image", "text": "my receipt", "source": "whatsapp"},
            {"id": "m3", "type": "audio", "source": "whatsapp"},
            {"id": "m4", "text": "order #4411", "source": "whatsapp"},
        ],
        **fields,
    }
    return Batch.model_validate(doc)


def forwarded(batch: Batch, secret: bytes = SECRET) -> tuple[bytes, dict[str, str]]:
    """The body and headers exactly as the service's HttpForwarder sends them."""
    body = batch.model_dump_json().encode()
    headers = {
        "Content-Type": "application/json",
        "Idempotency-Key": batch.batch_id,
        "X-Batcher-Signature": sign(secret, body),
    }
    return body, headers


class Bot:
    """A reply function that records what it was called with."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[Any] = []
        self.fail = fail

    async def __call__(self, batch: Any) -> None:
        self.calls.append(batch)
        if self.fail:
            raise RuntimeError("the provider's API is down")


# --- the forward receiver ---------------------------------------------------------------


def test_the_receiver_answers_a_signed_batch_once(monkeypatch: pytest.MonkeyPatch) -> None:
    receiver = example(monkeypatch, "receiver")
    bot = Bot()
    client = TestClient(receiver.create_app(SECRET, reply=bot))
    body, headers = forwarded(make_batch("b-1", seq=3))

    first = client.post("/batches", content=body, headers=headers)
    assert first.status_code == 200
    assert len(bot.calls) == 1
    got = bot.calls[0]
    assert (got.batch_id, got.chat_id, got.seq, got.attempt) == ("b-1", "wa:200:15550111111", 3, 1)
    assert [m["id"] for m in got.messages] == ["m1", "m2", "m3", "m4"]

    # A redelivery (same batch_id, even at a later attempt): 200, no second reply.
    again_body, again_headers = forwarded(make_batch("b-1", seq=3, attempt=2))
    again = client.post("/batches", content=again_body, headers=again_headers)
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert len(bot.calls) == 1

    # Another batch is answered.
    other_body, other_headers = forwarded(make_batch("b-2", seq=4))
    assert client.post("/batches", content=other_body, headers=other_headers).status_code == 200
    assert [b.batch_id for b in bot.calls] == ["b-1", "b-2"]


def test_the_receiver_refuses_what_is_not_signed_by_the_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    receiver = example(monkeypatch, "receiver")
    bot = Bot()
    client = TestClient(receiver.create_app(SECRET, reply=bot))
    body, headers = forwarded(make_batch("b-9"))
    tampered = body.replace(b'"hi"', b'"HI"')
    assert tampered != body
    no_signature = {k: v for k, v in headers.items() if k != "X-Batcher-Signature"}
    other_secret = forwarded(make_batch("b-9"), secret=b"not-the-secret")[1]
    garbage = {**headers, "X-Batcher-Signature": "sha256=" + "0" * 64}
    unprefixed = {**headers, "X-Batcher-Signature": headers["X-Batcher-Signature"][7:]}
    non_ascii: dict[str, Any] = {**headers, "X-Batcher-Signature": b"sha256=\xe9"}

    attempts: list[tuple[bytes, dict[str, Any]]] = [
        (tampered, headers),
        (body, no_signature),
        (body, other_secret),
        (body, garbage),
        (body, unprefixed),
        (body, non_ascii),
    ]
    for content, hdrs in attempts:
        response = client.post("/batches", content=content, headers=hdrs)
        assert response.status_code == 401, hdrs.get("X-Batcher-Signature")
    assert bot.calls == []
    # The same client, with the real signature, gets through: the 401s were the signature's.
    assert client.post("/batches", content=body, headers=headers).status_code == 200
    assert len(bot.calls) == 1


def test_the_receiver_checks_the_signature_before_parsing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    receiver = example(monkeypatch, "receiver")
    bot = Bot()
    client = TestClient(receiver.create_app(SECRET, reply=bot))
    junk = b"{not json"
    assert client.post("/batches", content=junk).status_code == 401  # unsigned: not parsed
    signed_junk = {"X-Batcher-Signature": sign(SECRET, junk)}
    assert client.post("/batches", content=junk, headers=signed_junk).status_code == 400
    not_a_batch = json.dumps({"batch_id": 7}).encode()
    signed = {"X-Batcher-Signature": sign(SECRET, not_a_batch)}
    assert client.post("/batches", content=not_a_batch, headers=signed).status_code == 400
    assert bot.calls == []


def test_the_receiver_lets_a_failed_reply_be_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    receiver = example(monkeypatch, "receiver")
    bot = Bot(fail=True)
    client = TestClient(receiver.create_app(SECRET, reply=bot))
    body, headers = forwarded(make_batch("b-5"))
    assert client.post("/batches", content=body, headers=headers).status_code == 500
    bot.fail = False
    # Not remembered as answered: the service's retry reaches the bot again.
    assert client.post("/batches", content=body, headers=headers).status_code == 200
    assert client.post("/batches", content=body, headers=headers).status_code == 200
    assert len(bot.calls) == 2


def test_the_receiver_remembers_a_bounded_number_of_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    receiver = example(monkeypatch, "receiver")
    bot = Bot()
    client = TestClient(receiver.create_app(SECRET, reply=bot, seen_limit=2))
    for batch_id in ("b-1", "b-2", "b-3", "b-3", "b-2", "b-1"):
        body, headers = forwarded(make_batch(batch_id))
        assert client.post("/batches", content=body, headers=headers).status_code == 200
    # b-3 and b-2 were remembered; b-1, the oldest, was forgotten when b-3 came.
    assert [b.batch_id for b in bot.calls] == ["b-1", "b-2", "b-3", "b-1"]


def test_the_receivers_module_app_reads_the_secret_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BATCHER_FORWARD_SECRET", SECRET.decode())
    receiver = example(monkeypatch, "receiver")
    body, headers = forwarded(make_batch("b-env"))
    client = TestClient(receiver.app)
    assert client.post("/batches", content=body, headers=headers).status_code == 200
    assert client.post("/batches", content=body).status_code == 401

    # Without the variable the sample refuses everything rather than take unsigned batches.
    monkeypatch.delenv("BATCHER_FORWARD_SECRET")
    unset = example(monkeypatch, "receiver")
    empty_signature = {**headers, "X-Batcher-Signature": sign(b"", body)}
    response = TestClient(unset.app).post("/batches", content=body, headers=empty_signature)
    assert response.status_code == 401


def test_the_receivers_signature_is_the_one_the_readme_shows() -> None:
    body = b'{"batch_id":"b"}'
    expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    assert sign(SECRET, body) == expected


# --- the in-process handler -------------------------------------------------------------


class Sent:
    """Stands in for the handler's ``send_reply``: records (chat_id, seq, text)."""

    def __init__(self) -> None:
        self.replies: list[tuple[str, int, str]] = []
        self.changed = asyncio.Event()

    async def __call__(self, chat_id: str, seq: int, text: str) -> None:
        self.replies.append((chat_id, seq, text))
        self.changed.set()


async def test_the_handler_loads_as_the_service_loads_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.delitem(sys.modules, "handler", raising=False)
    handle = load_handler("handler:handle")
    module = sys.modules["handler"]
    assert module.__file__ == str(EXAMPLES / "handler.py")
    sent = Sent()
    monkeypatch.setattr(module, "send_reply", sent)

    await handle(make_batch("b-7", seq=7))

    said = "hi [image] my receipt [audio] order #4411"
    assert sent.replies == [("wa:200:15550111111", 7, f"You said: {said}")]


async def test_the_handlers_own_send_reply_makes_no_call_and_returns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.delitem(sys.modules, "handler", raising=False)
    handle = load_handler("handler:handle")
    with caplog.at_level("INFO", logger="handler"):
        await handle(make_batch("b-8", seq=2))
    assert "reply to wa:200:15550111111 (batch seq 2): You said: hi" in caplog.text


async def test_the_handler_on_a_real_engine(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.delitem(sys.modules, "handler", raising=False)
    handle = load_handler("handler:handle")
    sent = Sent()
    monkeypatch.setattr(sys.modules["handler"], "send_reply", sent)
    delivered: asyncio.Queue[Batch] = asyncio.Queue()

    async def handle_and_tell(batch: Batch) -> None:
        await handle(batch)  # the example, as the engine would call it
        delivered.put_nowait(batch)

    async with running_engine(redis_url, handle_and_tell) as engine:
        await engine.add("web:examples", Message(id="e1", text="I need"))
        await engine.add("web:examples", Message(id="e2", text="to change my order"))
        batch = await asyncio.wait_for(delivered.get(), timeout=10)

    assert batch.chat_id == "web:examples"
    assert [m.id for m in batch.messages] == ["e1", "e2"]
    assert batch.seq == 1
    assert sent.replies == [("web:examples", 1, "You said: I need to change my order")]
