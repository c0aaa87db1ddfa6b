"""Settings: names, defaults, validation messages, secrets kept out of reprs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.settings import Settings, mask_url


def test_defaults_match_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (s.idle_ms, s.max_wait_ms, s.max_messages) == (10_000, 60_000, 50)
    assert (s.lease_ms, s.max_attempts) == (60_000, 5)
    assert (s.host, s.port, s.key_prefix, s.log_format) == ("127.0.0.1", 8000, "batcher", "rich")


def test_environment_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHER_IDLE_MS", "250")
    monkeypatch.setenv("BATCHER_MAX_WAIT_MS", "1000")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (s.idle_ms, s.max_wait_ms) == (250, 1000)


def test_idle_must_be_below_max_wait() -> None:
    with pytest.raises(ValidationError, match=r"BATCHER_IDLE_MS .* must be smaller than"):
        Settings(idle_ms=5000, max_wait_ms=5000)


def test_idle_must_be_positive() -> None:
    with pytest.raises(ValidationError, match="idle_ms"):
        Settings(idle_ms=0)


def test_prefix_may_not_steer_hash_slots() -> None:
    with pytest.raises(ValidationError, match="KEY_PREFIX"):
        Settings(key_prefix="a{b}")


def test_secrets_never_in_repr() -> None:
    s = Settings(
        redis_url="redis://user:hunter2pw@localhost:6379/0",
        forward_secret="fwd-secret-1",
        whatsapp_app_secret="app-secret-1",
        whatsapp_verify_token="verify-token-1",
    )
    text = repr(s) + str(s) + s.redis_url_display
    for secret in ("hunter2pw", "fwd-secret-1", "app-secret-1", "verify-token-1"):
        assert secret not in text
    assert s.redis_url_display == "redis://user:***@localhost:6379/0"


def test_mask_url_leaves_passwordless_urls() -> None:
    assert mask_url("redis://localhost:1/2") == "redis://localhost:1/2"
