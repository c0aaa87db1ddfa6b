"""Refused requests leave one log line with the reason, at most one per
endpoint and reason every few seconds, however many arrive."""

from __future__ import annotations

import logging

import pytest

from service.web import body
from tests.helpers import Collector, app_client


def refused_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [r.fields for r in caplog.records if getattr(r, "event", None) == "refused"]  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def fresh_rate_limit() -> None:
    body._last_refused.clear()


async def test_the_handshake_says_why_it_refused(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    query = "?hub.mode=subscribe&hub.verify_token=guess&hub.challenge=42"
    async with app_client(redis_url, Collector()) as (client, _):
        assert (await client.get("/webhooks/whatsapp" + query)).status_code == 403
    async with app_client(redis_url, Collector(), whatsapp_verify_token="right") as (client, _):
        assert (await client.get("/webhooks/whatsapp" + query)).status_code == 403
        ok = await client.get("/webhooks/whatsapp" + query.replace("guess", "right"))
        assert (ok.status_code, ok.text) == (200, "42")
    whys = [line["why"] for line in refused_lines(caplog)]
    assert whys == [
        "BATCHER_WHATSAPP_VERIFY_TOKEN is not set",
        "hub.verify_token does not match BATCHER_WHATSAPP_VERIFY_TOKEN",
    ]


async def test_bad_signatures_are_logged_once_per_burst(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with app_client(redis_url, Collector(), whatsapp_app_secret="s") as (client, _):
        for _ in range(20):
            wrong = {"X-Hub-Signature-256": "sha256=" + "0" * 64}
            r = await client.post("/webhooks/whatsapp", content=b"{}", headers=wrong)
            assert r.status_code == 401
    (line,) = refused_lines(caplog)
    assert line["status"] == 401 and "X-Hub-Signature-256" in str(line["why"])
