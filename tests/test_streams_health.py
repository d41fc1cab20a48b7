"""Reconnect backoff and health snapshots."""

from __future__ import annotations

import random

import pytest

from nonsite.streams.health import Backoff, HealthTracker, SourceState


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    b = Backoff(0.5, 30.0, rng=random.Random(7))
    waits = [b.next() for _ in range(10)]
    ceilings = [0.5, 1, 2, 4, 8, 16, 30, 30, 30, 30]
    for w, c in zip(waits, ceilings, strict=True):
        assert c / 2 <= w <= c
    assert len({round(w, 6) for w in waits[6:]}) == 4  # jittered, not lockstep
    b.reset()
    assert 0.25 <= b.next() <= 0.5


def test_two_cameras_do_not_retry_in_lockstep() -> None:
    a, b = Backoff(1, 30, rng=random.Random(1)), Backoff(1, 30, rng=random.Random(2))
    assert [a.next() for _ in range(5)] != pytest.approx([b.next() for _ in range(5)], abs=1e-3)


def test_health_tracker_counts_and_states() -> None:
    t = HealthTracker("cam")
    h0 = t.snapshot()
    assert h0.state is SourceState.connecting and h0.last_frame_ts is None
    t.open_failed("connection refused by 10.0.0.5:554")
    t.set_state(SourceState.down, "connection refused by 10.0.0.5:554")
    t.set_state(SourceState.connecting)
    t.decoded(100.0)
    t.decoded(100.04)
    t.sampled()
    t.set_state(SourceState.up)
    t.reconnected()
    h = t.snapshot()
    assert (h.state, h.frames_decoded, h.frames_sampled, h.reconnects, h.open_failures) == (
        SourceState.up, 2, 1, 1, 1)
    assert h.last_frame_ts == 100.04 and h.last_error == "connection refused by 10.0.0.5:554"
    assert h.since >= h0.since
    assert h0.frames_decoded == 0  # snapshots do not change afterwards
    assert h.to_dict()["state"] == "up"
