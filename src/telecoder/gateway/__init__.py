"""The model gateway: agents' model traffic goes through it (keys, metering, budgets, backoff,
routing, endpoints)."""
