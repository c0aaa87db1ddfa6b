"""Inbound webhook adapters (payload parsing and signature checks)."""
