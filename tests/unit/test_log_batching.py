"""The API's log handler: lines batched into few flushes, warnings flushed at once."""

from __future__ import annotations

import io
import logging
import os
import time

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
