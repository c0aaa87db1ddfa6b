"""The HTTP service: an app factory whose lifespan runs the engine.

app = create_app(Settings())     # uvicorn service.web.app:app  (or batcher serve)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from service.engine.engine import Engine
from service.engine.forward import HttpForwarder
from service.engine.handlers import ConsoleHandler, Handler, load_handler
from service.settings import Settings
from service.store.connections import connect
from service.web import admin, evolution, generic, ops, telegram, twilio, waha, whatsapp
from service.web.state import AppState

log = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]


class App(Starlette):
    """Starlette, with the webhook POSTs served straight from here: on the
    hottest path the router's walk over every route and the middleware
    layers cost a tenth of a request (``batcher bench http``), and these
    endpoints need neither (no path parameters; every error is their own
    reply). Everything else, and any other method, goes the usual way."""

    def __init__(self, *, direct: dict[str, Endpoint], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.direct = direct

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.direct.get(scope["path"])
            if endpoint is not None:
                scope["app"] = self
                response = await endpoint(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def make_handler(settings: Settings) -> tuple[Handler, HttpForwarder | None]:
    """BATCHER_HANDLER, else an HTTP forward to BATCHER_FORWARD_URL, else the console."""
    if settings.handler:
        return load_handler(settings.handler), None
    if settings.forward_url:
        secret = settings.forward_secret
        forwarder = HttpForwarder(
            settings.forward_url,
            secret.get_secret_value().encode() if secret is not None else None,
            timeout_s=settings.forward_timeout_ms / 1000,
            max_connections=settings.concurrency,
        )
        return forwarder, forwarder
    return ConsoleHandler(), None


def create_app(
    settings: Settings, *, handler: Handler | None = None, log_checks: bool = True
) -> App:
    """The app; its lifespan runs an Engine. ``log_checks=False`` when the
    start-up checks were just run and shown (``batcher serve`` does)."""
    if settings.redis_url is None:
        raise ValueError("create_app needs BATCHER_REDIS_URL (batcher serve starts one)")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        assert settings.redis_url is not None
        redis = await connect(settings.redis_url.get_secret_value(), settings.redis_cluster)
        forwarder = None
        chosen = handler
        if chosen is None:
            chosen, forwarder = make_handler(settings)
        engine = Engine(redis, settings, chosen, log_checks=log_checks)
        try:
            await engine.start()
            state = AppState(settings, engine)
            app.state.batcher = state
            app.state.gauges = ops.Gauges(state)
            yield
        finally:
            await engine.stop()
            if forwarder is not None:
                await forwarder.aclose()
            await redis.aclose()

    routes = [
        Route("/webhooks/whatsapp", whatsapp.verify, methods=["GET"]),
        Route("/webhooks/whatsapp", whatsapp.receive, methods=["POST"]),
        Route("/webhooks/twilio", twilio.receive, methods=["POST"]),
        Route("/webhooks/evolution", evolution.receive, methods=["POST"]),
        Route("/webhooks/evolution/{event}", evolution.receive, methods=["POST"]),
        Route("/webhooks/waha", waha.receive, methods=["POST"]),
        Route("/webhooks/telegram", telegram.receive, methods=["POST"]),
        Route("/v1/messages", generic.post_messages, methods=["POST"]),
        Route("/v1/typing", generic.post_typing, methods=["POST"]),
        Route("/healthz", ops.healthz, methods=["GET"]),
        Route("/readyz", ops.readyz, methods=["GET"]),
        Route("/metrics", ops.metrics, methods=["GET"]),
        *admin.ROUTES,
    ]
    direct = {
        r.path: r.endpoint
        for r in routes
        if r.methods == {"POST"}
        and not r.param_convertors
        and r.path.startswith(("/webhooks/", "/v1/"))
    }
    return App(routes=routes, lifespan=lifespan, direct=direct)
