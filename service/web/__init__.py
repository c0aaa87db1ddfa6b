"""The HTTP service: the app factory, its lifespan state, the webhooks and
the operations endpoints."""

from service.web.app import create_app

__all__ = ["create_app"]
