"""The token bucket behind --limit-read and --limit-upload: rates on a fake clock."""

from __future__ import annotations

import threading
import time

import pytest

from strongroom.bandwidth import TokenBucket, rate_bytes

MIB = 1 << 20


class FakeClock:
    """A clock that only moves when someone sleeps (or the test says so)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def bucket(rate: float, clock: FakeClock) -> TokenBucket:
    return TokenBucket(rate, clock=clock, sleep=clock.sleep)


def test_4_mib_at_8_mib_per_second_takes_half_a_second() -> None:
    clock = FakeClock()
    b = bucket(8 * MIB, clock)
    start = clock.now
    for _ in range(4):
        b.take(MIB)
    assert clock.now - start == pytest.approx(0.5)
    assert b.taken == 4 * MIB


def test_small_pieces_and_several_callers_share_one_rate() -> None:
    clock = FakeClock()
    b = bucket(10 * MIB, clock)
    for i in range(300):  # three "threads" taking turns, 100 KiB... 1 MiB pieces
        b.take((i % 3 + 1) * 100 * 1024)
    assert clock.now - 1000.0 == pytest.approx(b.taken / (10 * MIB))


def test_a_slow_caller_is_not_slowed_further_but_cannot_bank_more_than_the_burst() -> None:
    clock = FakeClock()
    b = bucket(MIB, clock)
    clock.now += 0.2  # the read itself took 0.2 s: 0.2 s of the rate is used
    assert b.take(MIB // 5) == pytest.approx(0.0)
    clock.now += 10.0  # a long pause banks at most `burst` (0.25 s) of rate
    start = clock.now
    b.take(MIB)
    assert clock.now - start == pytest.approx(0.75)


def test_real_threads_never_beat_the_rate() -> None:
    b = TokenBucket(16 * MIB)
    t0 = time.monotonic()

    def work() -> None:
        for _ in range(8):
            b.take(64 * 1024)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    assert elapsed >= 0.9 * (2 * MIB / (16 * MIB))  # 2 MiB at 16 MiB/s: 0.125 s
    assert elapsed < 2.0


@pytest.mark.parametrize(
    ("text", "value"),
    [("50M", 50 * MIB), ("512K", 512 << 10), ("1GiB", 1 << 30), ("8M/s", 8 * MIB)],
)
def test_rates_are_typed_as_sizes(text: str, value: int) -> None:
    assert rate_bytes(text) == value


@pytest.mark.parametrize("text", ["0", "fast", "-1M", "1.5M"])
def test_bad_rates_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        rate_bytes(text)
