"""The API's log handler: lines batched into few flushes, warnings flushed at once."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import time

import pytest

from minipaas import logs
from minipaas.logs import BatchingStreamHandler


def _pipe_handler(interval: float) -> tuple[BatchingStreamHandler, int, io.TextIOWrapper]:
    """A handler writing into a real pipe, as the API writes to its supervisor, through an
    unbuffered stream (as with PYTHONUNBUFFERED): the batching is the handler's own."""
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    raw = os.fdopen(write_end, "wb", buffering=0)
    stream = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)  # type: ignore[arg-type]
    return BatchingStreamHandler(stream, interval=interval), read_end, stream


def _read(fd: int) -> str:
    try:
        return os.read(fd, 1 << 20).decode()
    except BlockingIOError:
        return ""


def _record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.makeLogRecord({"msg": message, "levelno": level, "levelname": "X"})


def test_info_lines_reach_the_pipe_in_one_batch_within_the_interval() -> None:
    handler, read_end, stream = _pipe_handler(interval=0.3)
    try:
        for number in range(50):
            handler.emit(_record(f"line {number}"))
        assert _read(read_end) == ""  # nothing written yet: batched
        deadline = time.monotonic() + 5
        seen = ""
        while seen.count("\n") < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
            seen += _read(read_end)
        assert seen.splitlines() == [f"line {number}" for number in range(50)]
    finally:
        handler.close()
        stream.close()
        os.close(read_end)


def test_a_warning_flushes_everything_before_it_at_once() -> None:
    handler, read_end, stream = _pipe_handler(interval=60)
    try:
        handler.emit(_record("request"))
        handler.emit(_record("trouble", logging.WARNING))
        assert _read(read_end).splitlines() == ["request", "trouble"]
    finally:
        handler.close()
        stream.close()
        os.close(read_end)


def test_closing_flushes_what_is_left() -> None:
    handler, read_end, stream = _pipe_handler(interval=60)
    handler.emit(_record("last words"))
    handler.close()
    try:
        assert _read(read_end).splitlines() == ["last words"]
    finally:
        stream.close()
        os.close(read_end)


def test_an_access_line_written_to_the_batch_is_the_line_logging_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The API's access lines skip the logging machinery (logs.log_access): the line must be
    the one a LogRecord through the JSON formatter gives, and follow the logger's level."""
    access = logging.getLogger("minipaas.access")
    original = access.level
    try:
        fast, through_logging = _access_line_both_ways(access, monkeypatch)
    finally:
        access.setLevel(original)  # setLevel: it also clears the loggers' cached answers
    time_format = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00"
    assert re.fullmatch(time_format, fast.pop("time"))
    assert re.fullmatch(time_format, through_logging.pop("time"))
    assert fast == through_logging
    assert list(fast) == list(through_logging)
    assert fast["message"] == "GET /apps/{app_id} 200" and fast["level"] == "info"


def _access_line_both_ways(
    access: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, object], dict[str, object]]:
    fields = {
        "request_id": "r-1",
        "method": "GET",
        "route": "/apps/{app_id}",
        "path": "/apps/7",
        "status": 200,
        "duration_ms": 1.5,
        "user": "ada",
    }
    access.setLevel(logging.INFO)
    batched, read_end, stream = _pipe_handler(interval=60)
    monkeypatch.setattr(logs, "_access_lines", batched)
    try:
        logs.log_access("GET /apps/{app_id} 200", fields)
        batched.flush()
        fast = json.loads(_read(read_end))
        access.setLevel(logging.WARNING)  # access lines turned off
        logs.log_access("GET /apps/{app_id} 200", fields)
        batched.flush()
        assert _read(read_end) == ""
    finally:
        batched.close()
        stream.close()
        os.close(read_end)

    access.setLevel(logging.INFO)
    monkeypatch.setattr(logs, "_access_lines", None)
    written = io.StringIO()
    plain = logging.StreamHandler(written)
    plain.setFormatter(logs.JsonFormatter())
    access.addHandler(plain)
    try:
        logs.log_access("GET /apps/{app_id} 200", fields)
    finally:
        access.removeHandler(plain)
    return fast, json.loads(written.getvalue())


def test_a_line_with_bytes_that_are_not_utf8_is_still_written() -> None:
    """The JSON encoder refuses such bytes: the line falls back to the standard encoder."""
    record = logging.makeLogRecord(
        {"msg": "odd output", "levelno": logging.INFO, "levelname": "INFO", "raw": b"\xff"}
    )
    entry = json.loads(logs.JsonFormatter().format(record))
    assert entry["message"] == "odd output" and entry["raw"] == "b'\\xff'"
