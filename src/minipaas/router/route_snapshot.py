"""The route table on disk, so nginx restores it by itself when it starts (Lua reads these).

Two files of JSON lines, one operation a line: `{"op": "set", "route": {...}}` or
`{"op": "remove", "id": N}`. The snapshot holds the whole table as of the last compaction or
full sync; the journal holds every change since, appended. Replaying the snapshot and then the
journal gives the live table; replaying a line twice changes nothing, so a crash between
writing a new snapshot and emptying the journal is harmless.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from minipaas.files import write_atomically
from minipaas.router.route import Route

log = logging.getLogger(__name__)

# The journal is folded into the snapshot once it is larger than the snapshot (and this):
# compaction costs O(table) but happens once per O(table) changes, so a change stays O(1)
COMPACT_MIN_BYTES = 256 * 1024


class RouteSnapshot:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.snapshot_file = directory / "routes.snapshot"
        self.journal_file = directory / "routes.journal"

    def record_set(self, route: Route) -> None:
        """Appends one app's new route."""
        self._append({"op": "set", "route": route.to_json()})

    def record_remove(self, app_id: int) -> None:
        self._append({"op": "remove", "id": app_id})

    def _append(self, op: dict[str, Any]) -> None:
        # No fsync: this guards against nginx dying, which leaves the page cache intact; after
        # a power loss the platform's full sync (replace_all) rewrites the table from the database
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.journal_file, "a", encoding="utf-8") as handle:
            handle.write(_line(op))

    def write_all(self, routes: Iterable[Route]) -> None:
        """Makes `routes` the whole table on disk: a new snapshot, an empty journal."""
        self._write_snapshot("".join(_line({"op": "set", "route": r.to_json()}) for r in routes))

    def _write_snapshot(self, text: str) -> None:
        write_atomically(self.snapshot_file, text)
        # Only now: until the new snapshot is in place the journal is still needed
        with open(self.journal_file, "w", encoding="utf-8"):
            pass

    def needs_compaction(self) -> bool:
        journal = _size(self.journal_file)
        return journal > max(COMPACT_MIN_BYTES, _size(self.snapshot_file))

    def compact(self) -> None:
        """Folds the journal into the snapshot."""
        # Raw JSON, not Route objects: every line was validated before it was written, and
        # building 10,000 Routes would make this ~3x slower
        table: dict[int, Any] = {}
        for line in self._lines():
            try:
                op = json.loads(line)
                if op["op"] == "set":
                    table[int(op["route"]["id"])] = op["route"]
                elif op["op"] == "remove":
                    table.pop(int(op["id"]), None)
            except (ValueError, KeyError, TypeError):
                continue
        self._write_snapshot(
            "".join(_line({"op": "set", "route": table[i]}) for i in sorted(table))
        )

    def load(self) -> dict[int, Route]:
        """The table the files describe (what nginx loads when it starts)."""
        table: dict[int, Route] = {}
        for line in self._lines():
            _apply(table, line)
        return table

    def _lines(self) -> Iterator[str]:
        for path in (self.snapshot_file, self.journal_file):
            try:
                yield from path.read_text(encoding="utf-8").splitlines()
            except FileNotFoundError:
                continue


def _apply(table: dict[int, Route], line: str) -> None:
    try:
        op = json.loads(line)
        if op["op"] == "set":
            route = Route.from_json(op["route"])
            table[route.app_id] = route
        elif op["op"] == "remove":
            table.pop(int(op["id"]), None)
        else:
            raise ValueError(f"unknown op {op['op']!r}")
    except (ValueError, KeyError, TypeError) as exc:
        # As nginx does: a line cut short by a power loss is skipped, the rest still counts
        if line.strip():
            log.warning("skipping an unreadable route line: %s", exc)


def _line(op: dict[str, Any]) -> str:
    return json.dumps(op, separators=(",", ":")) + "\n"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
