from __future__ import annotations

import pytest

from minipaas.runtime import EngineUnavailable, ImageUnavailable
from minipaas.services.retry import retry_transient


def test_engine_outages_are_retried_with_the_given_delays() -> None:
    calls: list[str] = []
    slept: list[float] = []

    def work() -> str:
        calls.append("try")
        if len(calls) < 3:
            raise EngineUnavailable("Docker engine is not reachable")
        return "started"

    assert retry_transient(work, delays=(1.0, 3.0, 6.0), sleep=slept.append) == "started"
    assert len(calls) == 3 and slept == [1.0, 3.0]


def test_gives_up_after_the_last_delay_and_says_so() -> None:
    slept: list[float] = []

    def work() -> None:
        raise EngineUnavailable("Docker engine is not reachable")

    with pytest.raises(EngineUnavailable, match="gave up after 3 attempts"):
        retry_transient(work, delays=(1.0, 2.0), sleep=slept.append)
    assert slept == [1.0, 2.0]


def test_deterministic_failures_are_not_retried() -> None:
    calls: list[int] = []

    def work() -> None:
        calls.append(1)
        raise ImageUnavailable("image 'x' is not present")

    with pytest.raises(ImageUnavailable):
        retry_transient(work, delays=(1.0,), sleep=lambda _: None)
    assert calls == [1]
