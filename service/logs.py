"""Structured log events: one name and a few fields per thing that happens.

The library only emits; ``service/console.py`` (set up by the CLI) renders
them as aligned, coloured lines for people or as JSON objects for shippers.
"""

from __future__ import annotations

import logging
from typing import Any

# event -> level it is logged at
LEVELS = {
    "appended": logging.DEBUG,  # one per message: quiet in production
    "duplicate": logging.DEBUG,
    "typing": logging.DEBUG,  # a typing event held an open batch
    "paused": logging.DEBUG,  # ... and a pause put it back on the idle timer
    "edited": logging.INFO,  # an edit applied to a message of the open batch
    "revoked": logging.INFO,  # a revoke took a message out of the open batch
    "emptied": logging.INFO,  # ... and it was the batch's last: never delivered
    "rejected": logging.WARNING,  # a message no chat can be named for: kept aside
    "provider_error": logging.WARNING,  # an error the provider reported (value.errors)
    "claimed": logging.INFO,
    "delivered": logging.INFO,
    "batch": logging.INFO,  # the default handler's output
    "failed": logging.WARNING,
    "dead": logging.ERROR,
    "recovering": logging.WARNING,
    "redelivering": logging.WARNING,
    "lease_lost": logging.WARNING,
    "released": logging.INFO,
    "subscribed": logging.INFO,
    "listener_lost": logging.WARNING,
    "check": logging.INFO,
    "embedded": logging.INFO,
    "embedded_stopped": logging.INFO,
    "started": logging.INFO,
    "redis_retry": logging.WARNING,
    "refused": logging.WARNING,  # a request refused (bad signature, token): rate-limited
    "admin": logging.INFO,
    "ownership": logging.INFO,  # this process's share of the buckets changed
    "topology": logging.INFO,  # the primaries listened to changed (a cluster)
}


def emit(log: logging.Logger, event: str, level: int | None = None, **fields: Any) -> None:
    """Log ``event`` with its fields (message text: ``event k=v …``)."""
    lvl = LEVELS.get(event, logging.INFO) if level is None else level
    if not log.isEnabledFor(lvl):
        return
    text = " ".join(f"{k}={v}" for k, v in fields.items())
    log.log(lvl, f"{event} {text}", extra={"event": event, "fields": fields})
