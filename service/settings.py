"""Configuration: one pydantic-settings class, environment prefix ``BATCHER_``.

Names carry their unit (``_ms``, ``_s``). Secrets are ``SecretStr`` so that
they never show up in a repr or a log line.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MAX_WORKERS = 64  # batcher serve --workers

# Provider webhooks, and the settings that must be set before each one is
# served on a non-loopback address.
PROVIDERS: dict[str, tuple[str, ...]] = {
    "whatsapp": ("whatsapp_app_secret",),
    "twilio": ("twilio_auth_token", "public_url"),
    "evolution": ("evolution_api_key",),
    "waha": ("waha_hmac_key",),
    "telegram": ("telegram_secret_token",),
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BATCHER_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    # --- Redis -----------------------------------------------------------
    redis_url: SecretStr | None = Field(
        default=None,
        description="redis:// or rediss:// URL; unset starts an embedded server.",
    )
    key_prefix: str = Field(default="batcher", min_length=1, max_length=64)
    buckets: int = Field(
        default=16,
        ge=1,
        le=16384,
        description="Hash-tag buckets; every key of one chat lives in one bucket (one slot).",
    )
    ack_replicas: int = Field(
        default=0,
        ge=0,
        description="Acknowledge a message only once this many replicas have it (WAIT).",
    )
    redis_cluster: Literal["auto", "true", "false"] = Field(
        default="auto",
        description="Whether BATCHER_REDIS_URL names a node of a Redis Cluster: auto asks "
        "the server (INFO cluster).",
    )
    ack_timeout_ms: int = Field(default=1_000, gt=0, description="How long WAIT may take.")
    allow_eviction: bool = Field(
        default=False,
        description="Start even though maxmemory-policy can evict batches (unsafe).",
    )
    configure_redis: bool = Field(
        default=True,
        description="Turn on keyspace notifications with CONFIG SET when they are off.",
    )

    # --- Batching --------------------------------------------------------
    idle_ms: int = Field(default=10_000, gt=0, description="Close a batch after this much silence.")
    max_wait_ms: int = Field(
        default=60_000, gt=0, description="Close a batch this long after it opened."
    )
    max_messages: int = Field(default=50, ge=1, le=100_000)
    max_batch_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Close a batch at once when it holds this much."
    )
    max_message_bytes: int = Field(
        default=64 * 1024, ge=256, description="A larger message is refused (413)."
    )
    dedupe_window_ms: int = Field(
        default=24 * 3600 * 1000,
        ge=0,
        description="A message id seen within this window is a duplicate (0 disables).",
    )
    typing_ms: int = Field(
        default=8_000,
        gt=0,
        description="How long a typing event holds an open batch (each event re-arms it; "
        "never beyond BATCHER_MAX_WAIT_MS). A paused presence goes back to BATCHER_IDLE_MS.",
    )

    # --- Delivery --------------------------------------------------------
    handler: str | None = Field(default=None, description="module:function called with each batch.")
    forward_url: str | None = None
    forward_secret: SecretStr | None = None
    forward_timeout_ms: int = Field(
        default=10_000, gt=0, description="A forward without a response by then is retried."
    )
    handler_timeout_ms: int = Field(
        default=300_000,
        gt=0,
        description="A handler still running after this is cancelled and the batch retried.",
    )
    lease_ms: int = Field(
        default=60_000, gt=0, description="A claimed batch is redelivered after this."
    )
    max_attempts: int = Field(default=5, ge=1)
    retry_base_ms: int = Field(default=1_000, gt=0)
    retry_max_ms: int = Field(default=60_000, gt=0)
    concurrency: int = Field(default=32, ge=1, le=10_000, description="Batches delivered at once.")

    # --- Background loops ------------------------------------------------
    nudge_interval_ms: int = Field(default=2, ge=1, le=3_600_000)  # least gap between passes
    sweep_interval_ms: int = Field(default=1_000, ge=10)
    sweep_grace_ms: int = Field(
        default=1_000,
        ge=0,
        description="A chat overdue by more than this with no claim is recovered by the sweeper.",
    )
    owner_lease_ms: int = Field(
        default=3_000,
        ge=30,
        description="A service process that stops heartbeating loses its buckets (its share "
        "of the claims, nudges and sweeps) to the others after this long; it heartbeats "
        "three times per lease.",
    )
    listener_ping_ms: int = Field(default=1_000, ge=10)
    listener_dead_ms: int = Field(
        default=5_000,
        ge=20,
        description="No reply on the pub/sub connection for this long means it is dead.",
    )

    # --- HTTP / webhooks -------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # uvicorn worker processes on that one port, each with its own engine
    # (they share the buckets: service/engine/ownership.py).
    workers: int = Field(
        default=1,
        ge=1,
        le=MAX_WORKERS,
        description="Worker processes `batcher serve` runs on its port, each with its own engine.",
    )
    whatsapp_app_secret: SecretStr | None = None
    whatsapp_verify_token: SecretStr | None = None
    whatsapp_groups: Literal["group", "member"] = Field(
        default="group",
        description="WhatsApp group messages: one batch per group, or per member (each "
        "member's own chat).",
    )
    providers: str = Field(
        default=",".join(PROVIDERS),
        description="The provider webhooks served (comma-separated); the others answer 404. "
        "On a non-loopback host each one needs its secret.",
    )
    public_url: str | None = Field(
        default=None,
        description="The service's base URL as the outside world calls it (Twilio signs it).",
    )
    twilio_auth_token: SecretStr | None = None
    evolution_api_key: SecretStr | None = None
    waha_hmac_key: SecretStr | None = None
    telegram_secret_token: SecretStr | None = None
    admin_token: SecretStr | None = Field(
        default=None,
        description="Bearer token of the admin endpoints (/v1/chats/...); unset: they answer 404.",
    )
    insecure_dev: bool = Field(
        default=False,
        description="Allow serving on a non-loopback host with providers' secrets unset.",
    )

    # --- Console / embedded server ---------------------------------------
    log_format: Literal["rich", "json"] = "rich"
    log_level: str | None = Field(
        default=None,
        description="Default: DEBUG (every message) on the embedded server, INFO otherwise.",
    )
    data_dir: str = Field(default=".batcher", description="Embedded server's data directory.")
    redis_server: str | None = Field(default=None, description="Binary for the embedded server.")

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.idle_ms >= self.max_wait_ms:
            raise ValueError(
                f"BATCHER_IDLE_MS ({self.idle_ms}) must be smaller than "
                f"BATCHER_MAX_WAIT_MS ({self.max_wait_ms})"
            )
        if any(c in self.key_prefix for c in "{}"):
            raise ValueError(
                "BATCHER_KEY_PREFIX must not contain '{' or '}' (they select hash slots)"
            )
        if self.retry_base_ms > self.retry_max_ms:
            raise ValueError("BATCHER_RETRY_BASE_MS must not exceed BATCHER_RETRY_MAX_MS")
        if self.listener_dead_ms <= self.listener_ping_ms:
            raise ValueError("BATCHER_LISTENER_DEAD_MS must exceed BATCHER_LISTENER_PING_MS")
        unknown = self.enabled_providers - set(PROVIDERS)
        if unknown:
            raise ValueError(
                f"BATCHER_PROVIDERS names unknown providers {sorted(unknown)}; "
                f"known: {', '.join(PROVIDERS)}"
            )
        if self.redis_url is not None:
            scheme = urlsplit(self.redis_url.get_secret_value()).scheme
            if scheme not in ("redis", "rediss", "unix"):
                raise ValueError("BATCHER_REDIS_URL must start with redis://, rediss:// or unix://")
        return self

    @property
    def enabled_providers(self) -> frozenset[str]:
        return frozenset(p.strip() for p in self.providers.split(",") if p.strip())

    def serving_problem(self) -> str | None:
        """Why ``serve`` must not start with these settings, if it must not.

        Unsigned webhooks are only acceptable on loopback (development): on
        any other address anybody could inject messages into any chat.
        """
        loopback = self.host in ("127.0.0.1", "localhost", "::1") or self.host.startswith("127.")
        if loopback or self.insecure_dev:
            return None
        unset = [
            f"BATCHER_{name.upper()}"
            for provider in PROVIDERS
            if provider in self.enabled_providers
            for name in PROVIDERS[provider]
            if getattr(self, name) is None
        ]
        if not unset:
            return None
        return (
            f"refusing to serve on {self.host} without {', '.join(unset)}: those "
            "webhooks would be accepted unchecked. Set them, leave their providers out "
            "of BATCHER_PROVIDERS, or set BATCHER_INSECURE_DEV=1 for a throwaway "
            "development setup."
        )

    @property
    def redis_url_display(self) -> str:
        """The Redis URL with any password masked, for logs."""
        if self.redis_url is None:
            return "(embedded)"
        return mask_url(self.redis_url.get_secret_value())


def mask_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, ""))
