"""Sample provider payloads, for load generators and tests (never the product).

The WhatsApp builders make the documents Meta's Cloud API POSTs to a webhook,
as ``service.providers.whatsapp.parse_webhook`` reads them, from the inside
out: a message object, the ``value`` of one ``messages`` change (metadata,
contacts, messages, statuses), and the envelope of entries and changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

WA_OBJECT = "whatsapp_business_account"
DISPLAY_NUMBER = "15550100000"
TIMESTAMP = 1767225600  # 2026-01-01T00:00:00Z

Doc = dict[str, Any]


def wa_text(sender: str, wamid: str, text: str, *, timestamp: int = TIMESTAMP) -> Doc:
    """One text message object."""
    return {"from": sender, "id": wamid, "timestamp": str(timestamp), "type": "text",
            "text": {"body": text}}  # fmt: skip


def wa_value(
    messages: Sequence[Mapping[str, Any]],
    *,
    phone_number_id: str,
    contacts: Mapping[str, str] | None = None,
    **extra: Any,
) -> Doc:
    """The ``value`` of one ``messages`` change: ``contacts`` maps wa_id to
    profile name; ``extra`` adds fields such as ``statuses`` or ``errors``."""
    value: Doc = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": DISPLAY_NUMBER, "phone_number_id": phone_number_id},
    }
    if contacts is not None:
        value["contacts"] = [{"profile": {"name": n}, "wa_id": w} for w, n in contacts.items()]
    value["messages"] = [dict(m) for m in messages]
    value.update(extra)
    return value


def wa_webhook(*entries: Sequence[Mapping[str, Any]], waba_id: str = "1") -> Doc:
    """The envelope: one entry per argument, each a list of changes (a bare
    ``value`` counts as its ``messages`` change)."""
    return {
        "object": WA_OBJECT,
        "entry": [{"id": waba_id, "changes": [_change(c) for c in changes]} for changes in entries],
    }


def _change(change: Mapping[str, Any]) -> Doc:
    if "field" in change:
        return dict(change)
    return {"field": "messages", "value": dict(change)}


def text_webhook(
    messages: Sequence[tuple[str, str, str]],
    *,
    phone_number_id: str,
    timestamp: int = TIMESTAMP,
    contact_name: str | None = None,
) -> Doc:
    """A webhook document of text messages, each (sender, wamid, text); with
    ``contact_name``, a ``contacts`` entry per distinct sender."""
    texts = [wa_text(s, w, t, timestamp=timestamp) for s, w, t in messages]
    contacts = None
    if contact_name is not None:
        contacts = dict.fromkeys((s for s, _, _ in messages), contact_name)
    return wa_webhook([wa_value(texts, phone_number_id=phone_number_id, contacts=contacts)])
