"""The append API: ``await batcher.add(chat_id, message)``.

A message is acknowledged (the call returns) only once Redis has stored it;
any Redis failure raises ``RedisUnavailable`` and nothing is acknowledged.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.engine.coalescer import Coalescer
from service.errors import InvalidMessage, MessageTooLarge, RedisUnavailable
from service.logs import emit
from service.models import AddResult, Message
from service.settings import Settings
from service.store.keyspace import Keyspace, seen_member
from service.store.scripts import Call, Scripts

log = logging.getLogger(__name__)

MAX_CHAT_ID_BYTES = 4096


def new_id() -> str:
    return secrets.token_hex(12)


class Batcher:
    def __init__(self, redis: Redis, settings: Settings, scripts: Scripts | None = None) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keyspace.of(settings)
        self.scripts = scripts or Scripts(redis, self.keys, settings)
        self.coalescer = Coalescer(self.scripts)

    async def add(self, chat_id: str, message: Message | str) -> AddResult:
        """Append one message to the chat's open batch (or detect a duplicate)."""
        return (await self.add_many([(chat_id, message)]))[0]

    async def add_many(self, items: Sequence[tuple[str, Message | str]]) -> list[AddResult]:
        """Append several messages in one round trip (shared with concurrent callers).

        Raises ``RedisUnavailable`` when any of them could not be stored: the
        caller must not acknowledge the lot (they are idempotent by message
        id, so a retry stores the missing ones and skips the others).
        """
        calls: list[Call] = []
        msgs: list[tuple[str, Message]] = []
        for chat_id, message in items:
            msg = message if isinstance(message, Message) else Message(id="", text=message)
            call, msg = self._append_call(chat_id, msg)
            calls.append(call)
            msgs.append((chat_id, msg))
        try:
            raws = await self.coalescer.run(calls)
        except (RedisError, OSError) as exc:
            raise RedisUnavailable(f"Redis did not take the messages: {exc}") from exc
        results = []
        for (chat_id, msg), raw in zip(msgs, raws, strict=True):
            if isinstance(raw, Exception):
                raise RedisUnavailable(f"Redis did not take the message: {raw}") from raw
            r = Scripts.parse_append(raw)
            max_wait_left = r.opened_ms + self.settings.max_wait_ms - r.now_ms
            result = AddResult(
                chat_id, msg.id, r.accepted, r.deadline_ms, r.count, r.now_ms, max_wait_left
            )
            results.append(result)
            _log_added(result)
        return results

    def _append_call(self, chat_id: str, msg: Message) -> tuple[Call, Message]:
        if not isinstance(chat_id, str) or not chat_id:
            raise InvalidMessage("chat_id must be a non-empty string")
        try:
            ck = self.keys.chat(chat_id)
        except UnicodeEncodeError as exc:
            raise InvalidMessage("chat_id is not valid Unicode text") from exc
        if len(ck.timer) - len(ck.bucket.timer_prefix) > MAX_CHAT_ID_BYTES:
            raise InvalidMessage(f"chat_id is longer than {MAX_CHAT_ID_BYTES} bytes")
        member = b""
        if msg.id:
            if self.settings.dedupe_window_ms > 0:
                member = seen_member(chat_id, msg.id)
        else:
            msg = msg.model_copy(update={"id": new_id()})
        try:
            payload = msg.stored_json()
        except (TypeError, ValueError) as exc:
            raise InvalidMessage(f"message is not JSON-serialisable: {exc}") from exc
        if len(payload) > self.settings.max_message_bytes:
            raise MessageTooLarge(
                f"message {msg.id!r} is {len(payload)} bytes, above the "
                f"{self.settings.max_message_bytes}-byte limit"
            )
        return self.scripts.append_call(ck, member, payload), msg


def _log_added(r: AddResult) -> None:
    if r.accepted:
        emit(
            log,
            "appended",
            chat=r.chat_id,
            size=r.count,
            flush_in_ms=r.flush_in_ms,
            max_wait_left_ms=r.max_wait_left_ms,
        )
    else:
        emit(log, "duplicate", chat=r.chat_id, id=r.message_id)
