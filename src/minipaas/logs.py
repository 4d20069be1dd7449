"""Structured (JSON) logs for the API and the worker, tied together by request id.

A request's id (its X-Request-ID, or a new one) travels with the jobs it queues, so the
worker's lines for a deployment carry the id of the request that asked for it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from contextlib import suppress
from contextvars import ContextVar
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, TextIO

from pydantic_core import PydanticSerializationError, to_json

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
deployment_id: ContextVar[int | None] = ContextVar("deployment_id", default=None)
app_id: ContextVar[int | None] = ContextVar("app_id", default=None)

_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Fields of a LogRecord that are not "extra" data passed by the caller
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def clean_request_id(value: str | None) -> str | None:
    """A client's X-Request-ID is kept only if it is short and plain (it lands in logs)."""
    return value if value and _SAFE_REQUEST_ID.fullmatch(value) else None


def _encode(entry: dict[str, Any]) -> str:
    """A log line's JSON: pydantic-core's encoder, several times the standard library's;
    values it cannot encode are written as their str()."""
    try:
        return to_json(entry, fallback=str).decode()
    except PydanticSerializationError:  # bytes that are not UTF-8: the line is still written
        return _standard_encode(entry)


_standard_encode = json.JSONEncoder(default=str).encode


@lru_cache(maxsize=4)
def _second(seconds: int) -> str:
    """The time of day up to the second ("2026-11-27T16:13:00"): made once per second."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _timestamp(created: float) -> str:
    """As datetime's isoformat(timespec="milliseconds") in UTC, for a fraction of its cost."""
    seconds = int(created)
    return f"{_second(seconds)}.{int((created - seconds) * 1000):03d}+00:00"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, var in (
            ("request_id", request_id),
            ("deployment_id", deployment_id),
            ("app_id", app_id),
        ):
            value = var.get()
            if value is not None:
                entry[key] = value
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _encode(entry)


class BatchingStreamHandler(logging.StreamHandler[TextIO]):
    """Writes lines to the stream in batches: at most every `interval` seconds, and at once
    for a warning or worse. Under load an API process then hands its supervisor one pipe
    write per batch instead of one per request (each one cost the supervisor ~40 us of CPU).
    It keeps its own buffer: the stream may be unbuffered (PYTHONUNBUFFERED). A SIGKILL
    loses at most `interval` seconds of info lines."""

    def __init__(self, stream: TextIO, interval: float = 0.2) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._interval = interval
        self._closed = threading.Event()
        flusher = threading.Thread(target=self._flush_forever, name="log-flush", daemon=True)
        flusher.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.add_line(self.format(record))
            if record.levelno >= logging.WARNING:
                self.flush()
        except Exception:
            self.handleError(record)

    def add_line(self, line: str) -> None:
        """A line formatted already, written with the next batch."""
        with self._guard():
            self._pending.append(line + self.terminator)

    def flush(self) -> None:
        with self._guard():
            if self._pending:
                batch, self._pending = "".join(self._pending), []
                self.stream.write(batch)
            if hasattr(self.stream, "flush"):
                self.stream.flush()

    def _guard(self) -> threading.RLock:
        assert self.lock is not None  # made by Handler.__init__
        return self.lock

    def _flush_forever(self) -> None:
        while not self._closed.wait(self._interval):
            with suppress(Exception):
                self.flush()

    def close(self) -> None:
        self._closed.set()
        with suppress(Exception):
            self.flush()
        super().close()


_access_log = logging.getLogger("minipaas.access")
# The handler access lines go to without a LogRecord (configure_json_logging(batched=True))
_access_lines: BatchingStreamHandler | None = None


def log_access(message: str, fields: dict[str, Any]) -> None:
    """The API's line for one request: `message` and `fields` as an info line of the
    "minipaas.access" logger. With the API's batched JSON logs, the line is written to the
    batch directly: a LogRecord, the logging machinery and the formatter took a GET of one
    app ~6% of its CPU, for a line whose every field is known here."""
    handler = _access_lines
    if handler is None or not _access_log.isEnabledFor(logging.INFO):
        _access_log.info("%s", message, extra=fields)
        return
    entry = {
        "time": _timestamp(time.time()),
        "level": "info",
        "logger": _access_log.name,
        "message": message,
    }
    handler.add_line(_encode(entry | fields))


def configure_json_logging(level: int = logging.INFO, *, batched: bool = False) -> None:
    """`batched` for the API's many access lines; the worker flushes each line (its lines
    are few, and a forked job's would be lost at its exit)."""
    global _access_lines
    handler = BatchingStreamHandler(sys.stdout) if batched else logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    _access_lines = handler if isinstance(handler, BatchingStreamHandler) else None
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "rq.worker"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # One line per request comes from our middleware, with the route and the request id
    logging.getLogger("uvicorn.access").disabled = True
    # Fields these lines never show, skipped when each record is made (the logging docs'
    # "Optimization" switches): the caller's file and line, thread and process names
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
