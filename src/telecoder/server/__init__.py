"""The HTTP server: API, live events, dashboard. ``create_app(settings, store)`` builds it."""

from __future__ import annotations

from telecoder.server.app import create_app

__all__ = ["create_app"]
