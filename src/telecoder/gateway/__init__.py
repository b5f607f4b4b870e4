"""The model gateway: keys, metering, prices, budgets, rate-limit backoff, routing, endpoints."""
