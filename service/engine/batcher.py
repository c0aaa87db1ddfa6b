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
from service.errors import BatcherError, InvalidMessage, MessageTooLarge, RedisUnavailable
from service.logs import emit
from service.models import AddResult, Message, TypingResult, channel_json, message_prefix
from service.settings import Settings
from service.store.keyspace import Keyspace, SeenEntry, seen_entry
from service.store.runner import Call
from service.store.scripts import Scripts

log = logging.getLogger(__name__)

MAX_CHAT_ID_BYTES = 4096

# Message types that change an earlier message (named by ``target_id``): the
# append script applies them to it while it is still in the open batch.
CHANGES = frozenset(("edit", "revoke"))
_OUTCOMES = {0: "duplicate", 1: "appended", 2: "edited", 3: "revoked", 4: "emptied"}
_TYPING = {0: "no_batch", 1: "held", 2: "released", 3: "unchanged"}


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

        An invalid message (``InvalidMessage``, ``MessageTooLarge``) is raised
        before anything is sent. Raises ``RedisUnavailable`` when any of them
        could not be stored: the caller must not acknowledge the lot (they are
        idempotent by message id, so a retry stores the missing ones and
        skips the others).
        """
        prepared = self._prepare(items)
        for p in prepared:
            if isinstance(p, BatcherError):
                raise p
        return [r for r in await self._send(prepared) if isinstance(r, AddResult)]

    async def add_each(
        self, items: Sequence[tuple[str, Message | str]]
    ) -> list[AddResult | BatcherError]:
        """Like ``add_many``, but an invalid message comes back in its place,
        as the error, and costs the others nothing."""
        return await self._send(self._prepare(items))

    async def typing(self, chat_id: str, *, typing: bool = True) -> TypingResult:
        """The user is typing in ``chat_id`` (``typing=False``: stopped).

        Typing holds the chat's open batch for BATCHER_TYPING_MS more (never
        beyond its max wait); stopping puts it back on the idle timer. With
        no open batch nothing happens: typing alone never opens one.
        """
        return (await self.typing_many([(chat_id, typing)]))[0]

    async def typing_many(self, events: Sequence[tuple[str, bool]]) -> list[TypingResult]:
        """Several typing events in one round trip, applied in order."""
        calls = []
        for chat_id, typing in events:
            if not isinstance(chat_id, str) or not chat_id:
                raise InvalidMessage("chat_id must be a non-empty string")
            try:
                calls.append(self.scripts.typing_call(self.keys.chat(chat_id), typing=typing))
            except UnicodeEncodeError as exc:
                raise InvalidMessage("chat_id is not valid Unicode text") from exc
        try:
            raws = await self.coalescer.run(calls) if calls else []
        except (RedisError, OSError) as exc:
            raise RedisUnavailable(f"Redis did not take the typing events: {exc}") from exc
        results = []
        for (chat_id, typing), raw in zip(events, raws, strict=True):
            if isinstance(raw, Exception):
                raise RedisUnavailable(f"Redis did not take the typing event: {raw}") from raw
            r = Scripts.parse_typing(raw)
            result = TypingResult(chat_id, _TYPING[r.status], r.deadline_ms, r.now_ms)
            results.append(result)
            if result.outcome in ("held", "released"):
                event = "typing" if typing else "paused"
                emit(log, event, chat=chat_id, flush_in_ms=result.flush_in_ms)
        return results

    def _prepare(
        self, items: Sequence[tuple[str, Message | str]]
    ) -> list[tuple[str, Call, Message] | BatcherError]:
        prepared: list[tuple[str, Call, Message] | BatcherError] = []
        for chat_id, message in items:
            msg = message if isinstance(message, Message) else Message(id="", text=message)
            try:
                call, msg = self._append_call(chat_id, msg)
            except (InvalidMessage, MessageTooLarge) as exc:
                prepared.append(exc)
            else:
                prepared.append((chat_id, call, msg))
        return prepared

    async def _send(
        self, prepared: list[tuple[str, Call, Message] | BatcherError]
    ) -> list[AddResult | BatcherError]:
        calls = [p[1] for p in prepared if not isinstance(p, BatcherError)]
        try:
            raws = iter(await self.coalescer.run(calls) if calls else ())
        except (RedisError, OSError) as exc:
            raise RedisUnavailable(f"Redis did not take the messages: {exc}") from exc
        results: list[AddResult | BatcherError] = []
        for p in prepared:
            if isinstance(p, BatcherError):
                results.append(p)
                continue
            chat_id, _, msg = p
            raw = next(raws)
            if isinstance(raw, Exception):
                raise RedisUnavailable(f"Redis did not take the message: {raw}") from raw
            r = Scripts.parse_append(raw)
            max_wait_left = r.opened_ms + self.settings.max_wait_ms - r.now_ms
            result = AddResult(
                chat_id,
                msg.id,
                r.status != 0,
                r.deadline_ms,
                r.count,
                r.now_ms,
                max_wait_left,
                _OUTCOMES[r.status],
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
        seen: SeenEntry | None = None
        if msg.id:
            try:
                seen = seen_entry(chat_id, msg.id)
            except UnicodeEncodeError as exc:
                raise InvalidMessage("message id is not valid Unicode text") from exc
            if self.settings.dedupe_window_ms <= 0:
                seen = None
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
        target = None
        if msg.type in CHANGES and msg.target_id:
            target = (msg.type, message_prefix(msg.target_id))
        call = self.scripts.append_call(ck, seen, payload, target, channel_json(msg.channel))
        return call, msg


def _log_added(r: AddResult) -> None:
    if r.outcome in ("edited", "revoked", "emptied"):
        emit(log, r.outcome, chat=r.chat_id, id=r.message_id, size=r.count)
    elif r.accepted:
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
