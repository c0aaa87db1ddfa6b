"""``python -m service.tooling.chaos``: the chaos soak without the ``batcher`` wrapper."""

import sys

from service.tooling.chaos.command import main

sys.exit(main())
