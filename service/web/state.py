"""What the HTTP endpoints reach through ``request.app.state``."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from service.engine.batcher import Batcher
from service.engine.engine import Engine
from service.settings import Settings
from service.stats import Stats


@dataclass(frozen=True, slots=True)
class AppState:
    settings: Settings
    engine: Engine

    @property
    def batcher(self) -> Batcher:
        return self.engine.batcher

    @property
    def stats(self) -> Stats:
        return self.engine.stats


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.batcher
    return state
