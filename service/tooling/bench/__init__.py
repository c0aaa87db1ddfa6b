"""``batcher bench``: the service measured against baselines in the same run."""
