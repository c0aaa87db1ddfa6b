"""The Telegram Bot API webhook (setWebhook): ``POST`` one Update per request.

``POST`` answers 200 only once what the Update carried is stored in Redis;
Telegram repeats an update answered otherwise (503 when Redis cannot take
it), and message ids make its repeats idempotent. The secret token
(``X-Telegram-Bot-Api-Secret-Token``, set with setWebhook's
``secret_token``) is checked before the body is parsed; without
``BATCHER_TELEGRAM_SECRET_TOKEN`` the check is skipped (loopback only). A
body that is not a JSON object is answered 400.
"""

from __future__ import annotations

from starlette.requests import Request

from service.providers.parsed import ParsedWebhook
from service.providers.telegram import HEADER, parse_update, secret_token_valid
from service.web.state import AppState
from service.web.webhook import Refusal, Webhook, json_object

ENDPOINT = "telegram"


def check(state: AppState, request: Request, body: bytes) -> Refusal | None:
    secret = state.settings.telegram_secret_token
    if secret is not None and not secret_token_valid(
        secret.get_secret_value().encode(), request.headers.get(HEADER)
    ):
        return Refusal(401, f"missing or invalid {HEADER}")
    return None


def parse(state: AppState, request: Request, body: bytes) -> ParsedWebhook:
    doc = json_object(body, "a JSON object (one Update)")
    return parse_update(doc)


receive = Webhook(ENDPOINT, check, parse).receive
