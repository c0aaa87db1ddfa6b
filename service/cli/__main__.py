"""``python -m service.cli``: the ``batcher`` command."""

from service.cli.main import main

main()
