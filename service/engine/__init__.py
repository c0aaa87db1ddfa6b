"""The engine: append messages, hear expired timers, claim, deliver, recover.

``Engine`` runs one process's share: the listener (expired events), the
nudger and the sweeper (the deadline index), and the delivery workers that
claim each closed batch, call the handler under a lease, and ack or nack it.
``Batcher`` is the append API alone (for a process that only ingests).
"""

from service.engine.batcher import Batcher
from service.engine.engine import Engine
from service.engine.forward import HttpForwarder
from service.engine.handlers import ConsoleHandler, Handler, load_handler

__all__ = ["Batcher", "ConsoleHandler", "Engine", "Handler", "HttpForwarder", "load_handler"]
