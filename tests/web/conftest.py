"""The end-to-end fixtures (a real ``batcher serve`` process forwarding to a
sink: ``start_service``, ``sink``, ``client``), shared by every web test."""

from tests.web.test_e2e import client, sink, start_service

__all__ = ["client", "sink", "start_service"]
