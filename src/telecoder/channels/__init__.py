"""Where tasks come from: verify and parse inbound requests, reply into their thread."""

from __future__ import annotations

import json
from typing import Any

from telecoder.errors import BadInput


def json_object(body: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object; BadInput (a 422) saying what is wrong."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadInput(f"the body is not JSON: {e}") from None
    if not isinstance(payload, dict):
        raise BadInput("the body is not a JSON object")
    return payload
