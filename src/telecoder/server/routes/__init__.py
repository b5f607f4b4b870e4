"""The server's routers: meta (health, version), sessions, events (SSE), dashboard."""
