"""The registry: built-ins through entry points, test plugins through ``register``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from telecoder import registry
from telecoder.engines.shell import ShellEngine
from telecoder.errors import BadInput, EngineNotFound, PluginNotFound
from telecoder.protocols import EngineCommand, EngineOutcome, EngineTask, Feed, Stream
from telecoder.runtimes.local import LocalRuntime


class EchoEngine:
    name = "test-echo"

    def command(self, task: EngineTask) -> EngineCommand:
        return EngineCommand(argv=["echo", task.prompt])

    def parser(self, task: EngineTask) -> EchoParser:
        return EchoParser()


class EchoParser:
    def feed(self, stream: Stream, line: str) -> Feed:
        return Feed()

    def finish(self, exit_code: int | None) -> EngineOutcome:
        return EngineOutcome(ok=exit_code == 0)


@pytest.fixture
def echo_engine() -> Iterator[str]:
    unregister = registry.register("engines", EchoEngine.name, EchoEngine)
    yield EchoEngine.name
    unregister()


def test_built_ins_come_from_entry_points() -> None:
    assert "shell" in registry.names("engines")
    assert "local" in registry.names("runtimes")
    assert "local" in registry.names("forges")
    assert isinstance(registry.create("engines", "shell"), ShellEngine)
    assert isinstance(registry.create("runtimes", "local"), LocalRuntime)


def test_each_create_is_a_new_instance() -> None:
    assert registry.create("engines", "shell") is not registry.create("engines", "shell")


def test_a_registered_engine_is_listed_and_created(echo_engine: str) -> None:
    assert echo_engine in registry.names("engines")
    assert registry.names("engines") == sorted(registry.names("engines"))
    engine = registry.create("engines", echo_engine)
    assert isinstance(engine, EchoEngine)
    assert echo_engine not in registry.names("runtimes")


def test_unregister_removes_it() -> None:
    unregister = registry.register("engines", "test-gone", EchoEngine)
    assert "test-gone" in registry.names("engines")
    unregister()
    unregister()  # idempotent
    assert "test-gone" not in registry.names("engines")
    with pytest.raises(EngineNotFound):
        registry.create("engines", "test-gone")


def test_a_registered_name_overrides_a_built_in() -> None:
    unregister = registry.register("engines", "shell", EchoEngine)
    try:
        assert isinstance(registry.create("engines", "shell"), EchoEngine)
        assert registry.names("engines").count("shell") == 1
    finally:
        unregister()
    assert isinstance(registry.create("engines", "shell"), ShellEngine)


def test_unknown_engine_names_the_known_ones(echo_engine: str) -> None:
    with pytest.raises(EngineNotFound) as caught:
        registry.create("engines", "no-such-engine")
    assert isinstance(caught.value, BadInput)
    message = caught.value.message
    assert "'no-such-engine'" in message
    assert "shell" in message
    assert echo_engine in message


def test_unknown_runtime_is_plugin_not_found() -> None:
    with pytest.raises(PluginNotFound) as caught:
        registry.create("runtimes", "no-such-runtime")
    assert not isinstance(caught.value, EngineNotFound)
    assert "local" in caught.value.message


def test_the_installed_names_are_read_once_a_process() -> None:
    """The server's intake asks on every submission; scanning the metadata costs ~10 ms."""
    registry.names("engines")
    before = registry._installed.cache_info()
    assert registry.names("engines") == registry.names("engines")
    after = registry._installed.cache_info()
    assert (after.hits - before.hits, after.misses - before.misses) == (2, 0)
