"""`telecoder show` names the ticket a session came from."""

from __future__ import annotations

from telecoder.cli.output import show_session
from tests.factories import make_session


def test_show_names_the_ticket(capsys):
    url = "https://acme.atlassian.net/browse/PROJ-12"
    origin = {"channel": "jira", "thread": "PROJ-12", "identifier": "PROJ-12", "url": url}
    show_session(make_session(origin=origin))
    out = capsys.readouterr().out
    assert "ticket" in out
    assert f"PROJ-12 {url}" in out


def test_show_of_a_session_from_elsewhere_has_no_ticket(capsys):
    show_session(make_session(origin={"channel": "dashboard"}))
    assert "ticket" not in capsys.readouterr().out
