"""A sample in-process handler: the bot's code, called by the service itself.

Point the service at it with ``BATCHER_HANDLER=handler:handle``; the module
``handler`` must be importable, so put this folder on the path (``batcher
serve`` also looks in the current directory)::

    PYTHONPATH=docs/examples BATCHER_HANDLER=handler:handle uv run batcher serve

The service calls ``handle`` once per batch, i.e. once per burst of messages
of one chat. Returning acknowledges the batch; raising makes the service retry
it (same ``batch_id``, ``attempt`` + 1) and, after ``BATCHER_MAX_ATTEMPTS``,
dead-letter it.
"""

from __future__ import annotations

import logging

from service import Batch

log = logging.getLogger(__name__)


def what_the_user_said(batch: Batch) -> str:
    """The batch's messages as one text, in order. A message that is not text
    (an image, a voice note, a location...) is named by its type, with its
    caption when it has one: ``"[image] my receipt"``, ``"[audio]"``."""
    parts: list[str] = []
    for message in batch.messages:
        if message.type == "text":
            if message.text:
                parts.append(message.text)
        elif message.text:
            parts.append(f"[{message.type}] {message.text}")
        else:
            parts.append(f"[{message.type}]")
    return " ".join(parts)


async def send_reply(chat_id: str, seq: int, text: str) -> None:
    """Where the bot answers the user. chat-batcher only delivers what users
    send; the answer goes out through the chat provider's own API.

    For WhatsApp the chat id is ``wa:<phone_number_id>:<user>``: the bot would
    call Meta's Graph API ``POST /<phone_number_id>/messages`` with
    ``{"messaging_product": "whatsapp", "to": user, "type": "text",
    "text": {"body": text}}`` and its access token, e.g.::

        _, phone_number_id, user = chat_id.split(":", 2)
        await http.post(f".../{phone_number_id}/messages", json=..., headers=...)

    ``seq`` grows by one with every batch of a chat (1, 2, 3...). A reply that
    is sent later than it is computed (queued, or after a slow model call) can
    be checked against the last seq answered for the chat: a reply for an
    older seq is stale, because the user has said more since, and is dropped.

    This sample only logs; it makes no network call.
    """
    log.info("reply to %s (batch seq %d): %s", chat_id, seq, text)


async def handle(batch: Batch) -> None:
    """``BATCHER_HANDLER=handler:handle``: one call per batch.

    Delivery is at least once: after a crash between the reply and the ack the
    same batch (same ``batch_id``) comes again. A bot that must never answer
    twice records the ``batch_id`` it answered, as ``receiver.py`` does."""
    said = what_the_user_said(batch)
    # The bot's own logic goes here (rules, a model call, a lookup...).
    answer = f"You said: {said}"
    await send_reply(batch.chat_id, batch.seq, answer)
