"""The bus's lateness figures: 1 ms bins, percentiles by rank, an empty figure says so."""

from __future__ import annotations

import math

from telecoder.bus import Lateness


def test_percentiles_are_the_upper_edges_of_their_bins() -> None:
    late = Lateness()
    assert math.isnan(late.pct(50))
    for ms in range(100):  # 0.5 ms, 1.5 ms, ..., 99.5 ms
        late.add((ms + 0.5) / 1000)
    late.add(60.0)  # past the last bin: counted there
    late.add(-0.002)  # a clock step back: the first bin
    assert late.count == 102
    assert late.pct(50) == 51.0  # rank 51 of 0..101: the 0.002 s step back took bin 0
    assert late.pct(99) == 100.0
    assert late.pct(100) == 10_001.0
    assert late.summary() == "p50 51 ms, p99 100 ms (102)"
