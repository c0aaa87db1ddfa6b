"""What a provider's webhook POST carried, once parsed (shared by the adapters)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from service.models import Message


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message that cannot be assigned to a chat: kept whole, with the reason."""

    reason: str
    path: str  # where in the payload, e.g. "entry[0].changes[0].value.messages[2]"
    raw: Any  # the object as received


@dataclass(frozen=True, slots=True)
class ProviderError:
    """An error the provider reported beside the messages (tied to no chat)."""

    code: int | None
    title: str | None
    message: str | None
    details: str | None
    raw: dict[str, Any]

    @classmethod
    def of(cls, raw: dict[str, Any]) -> ProviderError:
        code = raw.get("code")
        data = raw.get("error_data")
        details = data.get("details") if isinstance(data, dict) else None
        return cls(
            code if isinstance(code, int) and not isinstance(code, bool) else None,
            _text(raw.get("title")),
            _text(raw.get("message")),
            _text(details),
            raw,
        )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


@dataclass(slots=True)
class ParsedWebhook:
    """Everything one webhook POST carried."""

    messages: list[tuple[str, Message]] = field(default_factory=list)  # (chat_id, message)
    statuses: int = 0  # delivery receipts, counted and acknowledged
    errors: list[ProviderError] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    skipped: int = 0  # events acknowledged but not batched (account events, echoes)
    # (chat_id, True: typing / False: stopped), applied after the messages
    typing: list[tuple[str, bool]] = field(default_factory=list)


class BadPayload(ValueError):
    """The request as a whole cannot be read (answered 400; nothing stored)."""
