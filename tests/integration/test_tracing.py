"""OpenTelemetry traces: a session attempt's spans reach a local OTLP/HTTP receiver (protobuf,
decoded with opentelemetry-proto) with the expected names and parent links — the attempt, its
steps, and a model request through the gateway (a real shell-engine session running curl
against the fake model server). Off when no endpoint is set: OpenTelemetry is not imported."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from telecoder import tracing
from telecoder.assemble import build_worker
from telecoder.domain import NewSession, SessionStatus
from telecoder.settings import Settings
from telecoder.store import Store
from tests.conftest import make_repo
from tests.fakes.model_server import FakeModelServer
from tests.fakes.otlp import OtlpReceiver
from tests.integration.test_engine_shell import execute
from tests.integration.test_gateway_sessions import CURL, tuned, upstream


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as found:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", found.url)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "telecoder-test")
        tracing.reset()
        yield found
        monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
        tracing.reset()  # the next test's process state: off


async def test_one_sessions_spans_arrive_with_their_parents(
    settings: Settings, store: Store, tmp_path, monkeypatch, receiver: OtlpReceiver
) -> None:
    repo = make_repo(
        tmp_path, files={".telecoder.yml": "verify:\n  - 'true'\n", "README.md": "x\n"}
    )
    with FakeModelServer() as server:
        upstream(monkeypatch, server.url)
        worker = build_worker(tuned(settings, worker_id="w-trace"), store)
        new = NewSession(repo=str(repo.path), prompt=f"{CURL} && echo x > x.txt", engine="shell")
        done = await execute(worker, store, new, within=60)
    assert done.status == SessionStatus.SUCCEEDED, done.error
    tracing.flush()
    spans = {s.name: s for s in receiver.spans}
    assert {"session.attempt", "prepare", "agent", "verify", "review", "publish"} <= set(spans)
    assert "model.request" in spans, sorted(spans)
    root = spans["session.attempt"]
    assert root.parent_id == ""
    assert root.service == "telecoder-test"
    assert root.attributes["telecoder.session_id"] == new.id
    assert root.attributes["telecoder.attempt"] == 1
    assert root.attributes["telecoder.engine"] == "shell"
    for step in ("prepare", "agent", "review", "publish"):
        assert spans[step].parent_id == root.span_id, step
        assert spans[step].trace_id == root.trace_id
    assert spans["verify"].parent_id == spans["agent"].span_id  # the agent's revisions verify
    request = spans["model.request"]
    assert request.trace_id == root.trace_id
    assert request.parent_id == root.span_id  # found by its ticket, from the gateway's task
    assert request.attributes["telecoder.endpoint"] == "anthropic"
    assert request.attributes["http.response.status_code"] == 200
    assert not any(s.error for s in receiver.spans)


def test_off_without_an_endpoint_opentelemetry_is_not_even_imported() -> None:
    code = (
        "import sys\n"
        "from telecoder import tracing, worker, pipeline\n"
        "with tracing.span('x'):\n"
        "    with tracing.attempt('s', 1):\n"
        "        tracing.model_request('s', 1, 0.1, 200)\n"
        "assert not tracing.enabled()\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'imported'\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
