"""The evolution webhook (being written)."""

from __future__ import annotations

from starlette.requests import Request

from service.providers.parsed import BadPayload, ParsedWebhook
from service.web.state import AppState
from service.web.webhook import Refusal, Webhook

ENDPOINT = "evolution"


def check(state: AppState, request: Request, body: bytes) -> Refusal | None:
    return Refusal(403, "not implemented yet")


def parse(state: AppState, request: Request, body: bytes) -> ParsedWebhook:
    raise BadPayload("not implemented yet")


receive = Webhook(ENDPOINT, check, parse).receive
