"""What each chat provider POSTs, read into messages: signature checks and
payload parsing, pure functions with no I/O (the web layer calls them)."""
