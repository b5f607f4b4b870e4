"""The API's session and ``--json``'s are one shape, key for key and in the same order: the CLI
prints either, and a script comparing them byte for byte must see no difference."""

from __future__ import annotations

from telecoder.server.schemas import SessionOut
from tests.factories import make_session


def test_the_api_model_lists_the_session_keys_in_to_dicts_order() -> None:
    assert list(SessionOut.model_fields) == list(make_session().to_dict())
