"""Tooling beside the product: benchmarks (``batcher bench``), the chaos soak
(``batcher chaos``) and sample payloads. It may import the product; the
product never imports it (the two commands reach the CLI as entry points)."""
