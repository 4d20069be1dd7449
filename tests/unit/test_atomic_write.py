"""Config files are replaced whole, also when a job and the reconciler write at once."""

from __future__ import annotations

import threading
from pathlib import Path

from minipaas.files import write_atomically


def test_concurrent_writers_never_trip_over_each_other(tmp_path: Path) -> None:
    target = tmp_path / "nginx.conf"
    errors: list[BaseException] = []

    def write(text: str) -> None:
        try:
            for _ in range(200):
                write_atomically(target, text)
        except BaseException as exc:  # collected: an assertion in a thread would be lost
            errors.append(exc)

    writers = [threading.Thread(target=write, args=(f"config {n}\n",)) for n in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert errors == []
    assert target.read_text() in {f"config {n}\n" for n in range(4)}
    assert [p.name for p in tmp_path.iterdir()] == ["nginx.conf"]  # no temp file left
