"""Binding inside a fresh network namespace waits for its loopback to have its address
(bubblewrap brings ``lo`` up after it reports the sandbox's pid), then gives up clearly."""

from __future__ import annotations

import errno
import socket
import time

import pytest

from telecoder.runtimes.netns import _bind


def test_an_address_that_never_comes_is_refused_after_the_wait() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        started = time.monotonic()
        with pytest.raises(OSError, match="assign requested address") as refused:
            _bind(listener, ("192.0.2.1", 0), wait=0.2)  # TEST-NET-1: on no interface here
        assert refused.value.errno == errno.EADDRNOTAVAIL
        assert time.monotonic() - started >= 0.2


def test_an_address_that_is_there_binds_at_once() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        started = time.monotonic()
        _bind(listener, ("127.0.0.1", 0))
        assert listener.getsockname()[0] == "127.0.0.1"
        assert time.monotonic() - started < 0.1


def test_other_errors_are_not_waited_for() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken,
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener,
    ):
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        started = time.monotonic()
        with pytest.raises(OSError, match="in use") as refused:
            _bind(listener, taken.getsockname(), wait=5)
        assert refused.value.errno == errno.EADDRINUSE
        assert time.monotonic() - started < 1
