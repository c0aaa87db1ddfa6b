"""The end-to-end fixtures of the web tests (``sink``, ``client``), for the
CLI tests that run a real ``batcher serve`` process forwarding to a sink."""

from tests.web.test_e2e import client, sink

__all__ = ["client", "sink"]
