"""The egress proxy's policy decisions and the model endpoints a session's sandbox may reach."""

from __future__ import annotations

import pytest

from telecoder.confine import model_endpoints
from telecoder.protocols import Endpoint, NetworkPolicy
from telecoder.runtimes.egress import decide

MODEL = (Endpoint(host="127.0.0.1", port=8080), Endpoint(host="api.anthropic.com", port=443))


@pytest.mark.parametrize(
    ("mode", "host", "port", "allowed"),
    [
        ("none", "127.0.0.1", 8080, False),
        ("none", "pypi.org", 443, False),
        ("model", "127.0.0.1", 8080, True),
        ("model", "API.Anthropic.com.", 443, True),
        ("model", "api.anthropic.com", 80, False),
        ("model", "pypi.org", 443, False),
        ("model", "127.0.0.1", 5432, False),
        ("allowlist", "pypi.org", 443, True),
        ("allowlist", "files.pythonhosted.org", 443, True),
        ("allowlist", "pythonhosted.org", 443, True),
        ("allowlist", "evilpythonhosted.org", 443, False),
        ("allowlist", "mirror.example.com", 8443, True),
        ("allowlist", "mirror.example.com", 443, False),
        ("allowlist", "example.com", 443, False),
        ("allowlist", "localhost", 5432, False),
        ("open", "example.com", 443, True),
        ("open", "127.0.0.1", 8080, True),
    ],
)
def test_each_policy_lets_through_only_what_it_names(
    mode: str, host: str, port: int, allowed: bool
) -> None:
    policy = NetworkPolicy(
        mode=mode,  # type: ignore[arg-type]
        endpoints=MODEL,
        allow=("pypi.org", "*.pythonhosted.org", "mirror.example.com:8443"),
    )
    decision = decide(policy, host, port)
    assert decision.allowed is allowed
    assert bool(decision.reason) is not allowed  # a refusal always says why


def test_open_names_nothing_local_explicitly() -> None:
    """Under ``open`` a host the policy does not name may be anything public — the proxy then
    refuses it if it resolves to a loopback or private address (``explicit`` is False)."""
    policy = NetworkPolicy(mode="open", endpoints=MODEL)
    assert decide(policy, "example.com", 443).explicit is False
    assert decide(policy, "127.0.0.1", 8080).explicit is True


def test_model_endpoints_come_from_the_engines_variables() -> None:
    env = {
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9000",
        "OPENAI_BASE_URL": "https://llm.example.com/v1",
        "GOOGLE_GEMINI_BASE_URL": "",
        "OLLAMA_HOST": "10.0.0.5:11434",
        "ANTHROPIC_API_KEY": "sk-not-an-endpoint",
        "BROKEN_BASE_URL": "http://host:notaport",
    }
    found = model_endpoints(env, ["api.anthropic.com:443", "junk"])
    assert found == (
        Endpoint(host="127.0.0.1", port=9000),
        Endpoint(host="llm.example.com", port=443),
        Endpoint(host="10.0.0.5", port=11434),
        Endpoint(host="api.anthropic.com", port=443),
    )
