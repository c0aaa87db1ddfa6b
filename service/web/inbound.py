"""Storing what a provider's webhook carried: messages, rejects, provider errors, typing.

Shared by the provider endpoints. Every part of a POST is stored before the
endpoint answers 2xx: the messages (appended to their chats), the messages no
chat can be named for (kept in the rejected store), and the errors the
provider reported beside them (counted, the latest kept). A message the
batcher refuses (too large, an unusable chat id) is rejected on its own; the
others are stored all the same. Any Redis failure raises
``RedisUnavailable``: the endpoint answers 503 and the provider retries.
"""

from __future__ import annotations

import logging

from redis.exceptions import RedisError

from service.errors import BatcherError, InvalidMessage, RedisUnavailable
from service.logs import emit
from service.models import AddResult
from service.providers.parsed import ParsedWebhook, Rejected
from service.store.provider_errors import ProviderErrors
from service.store.rejected import RejectedStore, entry_id
from service.store.runner import Call
from service.web.state import AppState

log = logging.getLogger(__name__)

_OUTCOME = {"appended": "accepted"}  # metric label of a plain append


async def store_parsed(state: AppState, source: str, parsed: ParsedWebhook) -> list[AddResult]:
    """Store everything ``parsed`` holds; the messages' results, in order."""
    stats = state.stats
    rejected = list(parsed.rejected)
    results: list[AddResult] = []
    if parsed.messages:
        for (_, message), got in zip(
            parsed.messages, await state.batcher.add_each(parsed.messages), strict=True
        ):
            if isinstance(got, BatcherError):
                rejected.append(Rejected(str(got), f"message {message.id!r}", message.data))
            else:
                results.append(got)
                stats.messages.labels(source, _OUTCOME.get(got.outcome, got.outcome)).inc()
    if rejected or parsed.errors:
        await _store_aside(state, source, rejected, parsed)
    if parsed.typing:
        try:
            await state.batcher.typing_many(parsed.typing)
        except InvalidMessage as exc:  # typing is advisory: nothing to keep
            log.debug("typing events of %s ignored: %s", source, exc)
        else:
            stats.messages.labels(source, "typing").inc(len(parsed.typing))
    return results


async def _store_aside(
    state: AppState, source: str, rejected: list[Rejected], parsed: ParsedWebhook
) -> None:
    redis, keys = state.batcher.redis, state.batcher.keys
    store, errors = RejectedStore(redis, keys), ProviderErrors(redis, keys)
    calls: list[Call] = [store.keep_call(source, r.reason, r.path, r.raw) for r in rejected]
    calls += [
        errors.report_call(source, e.code, e.title, e.message, e.details) for e in parsed.errors
    ]
    try:
        replies = await state.batcher.scripts.run_many(calls, durable=True)
    except (RedisError, OSError) as exc:
        raise RedisUnavailable(f"Redis did not take the request: {exc}") from exc
    for reply in replies:
        if isinstance(reply, Exception):
            raise RedisUnavailable(f"Redis did not take the request: {reply}") from reply
    for r, new in zip(rejected, replies, strict=False):
        if new:  # a provider's retry of the same message is kept, and logged, once
            state.stats.rejected.labels(source).inc()
            entry = entry_id(source, r.raw)
            emit(log, "rejected", source=source, id=entry, reason=_cut(r.reason), path=_cut(r.path))
    for e in parsed.errors:
        code = "none" if e.code is None else str(e.code)
        state.stats.provider_errors.labels(source, code).inc()
        emit(
            log,
            "provider_error",
            source=source,
            code=code,
            title=_cut(e.title),
            details=_cut(e.details),
        )


def _cut(text: str | None, limit: int = 200) -> str | None:
    """Outside text in a log line, bounded."""
    return text if text is None or len(text) <= limit else text[: limit - 1] + "…"
