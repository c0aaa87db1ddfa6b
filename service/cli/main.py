"""The ``batcher`` command: one parser over the commands, each in its own module.

The product's commands live in this package. Others come from installed
plugins, the entry points of group ``batcher.commands`` (this project's
benchmarks and chaos soak register ``bench`` and ``chaos`` there, so the
product never imports its tooling). A command's module has a ``register``
function that takes the ``add_subparsers()`` object, adds its parser, and
sets ``run`` (``args -> exit status``) as the parser's default.

Only the module of the command being run is imported (all of them for
``--help``): ``batcher serve`` refusing a busy data directory answers at
once instead of after loading every command's dependencies.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any

PLUGIN_GROUP = "batcher.commands"
Register = Callable[[Any], object]

# The product's own commands, in the order ``--help`` lists them: name -> module.
COMMANDS = {
    "serve": "service.cli.serve",
    "check": "service.cli.check",
    "dead": "service.cli.dead",
    "rejected": "service.cli.rejected",
    "watch": "service.cli.watch",
    "show": "service.cli.chats",
    "flush": "service.cli.chats",
    "hold": "service.cli.chats",
    "release": "service.cli.chats",
    "drop": "service.cli.chats",
    "demo": "service.cli.demo",
}


def plugins() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP)}


def build_parser(wanted: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``wanted`` (a command name), only that command's module
    is imported and registered."""
    parser = argparse.ArgumentParser(
        prog="batcher",
        description="Batches rapid-fire chat messages per chat in Redis; delivers each "
        "batch once the chat has gone quiet.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    found = plugins()
    everything = wanted not in COMMANDS and wanted not in found
    modules = [m for name, m in COMMANDS.items() if everything or name == wanted]
    registers: list[Register] = [
        importlib.import_module(m).register for m in dict.fromkeys(modules)
    ]
    for name, ep in found.items():
        if everything or name == wanted:
            registers.append(ep.load())
    for register in registers:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args_list = list(sys.argv[1:] if argv is None else argv)
    wanted = next((a for a in args_list if not a.startswith("-")), None)
    args = build_parser(wanted).parse_args(args_list)
    from service.errors import BatcherError

    try:
        sys.exit(args.run(args))
    except BatcherError as exc:
        from rich.console import Console

        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
