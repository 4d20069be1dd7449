"""Builds and image removals take turns on the host (runtime/image_turns.py): real flocks on
a real file, held from a second process as another install's build would hold them."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from minipaas.runtime import image_turns

# A build of "another install": holds the shared lock until its stdin closes
_OTHER_BUILD = """
import sys
from pathlib import Path
from minipaas.runtime import image_turns
with image_turns.building(Path(sys.argv[1])):
    print("building", flush=True)
    sys.stdin.read()
"""


def _other_install_building(lock: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", _OTHER_BUILD, str(lock)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline() == "building\n"
    return process


def test_no_removal_while_another_install_builds_and_at_once_after(tmp_path: Path) -> None:
    lock = tmp_path / "images.lock"
    other = _other_install_building(lock)
    try:
        began = time.monotonic()
        with image_turns.removing(lock) as our_turn:
            assert our_turn is False
        assert time.monotonic() - began < 0.5  # no waiting by default: the next pass
        with image_turns.building(lock):  # builds run side by side
            pass
    finally:
        assert other.stdin is not None
        other.stdin.close()
        other.wait(timeout=10)
    with image_turns.removing(lock) as our_turn:
        assert our_turn is True


def test_a_removal_holds_off_builds_until_it_ends(tmp_path: Path) -> None:
    lock = tmp_path / "images.lock"
    built_at: list[float] = []

    def build() -> None:
        with image_turns.building(lock):
            built_at.append(time.monotonic())

    with image_turns.removing(lock) as our_turn:
        assert our_turn
        builder = threading.Thread(target=build)
        builder.start()
        time.sleep(0.3)
        assert built_at == []
        removed_at = time.monotonic()
    builder.join(timeout=5)
    assert built_at and built_at[0] >= removed_at


def test_a_removal_may_wait_for_a_build_to_end(tmp_path: Path) -> None:
    lock = tmp_path / "images.lock"
    other = _other_install_building(lock)
    assert other.stdin is not None
    threading.Timer(0.3, other.stdin.close).start()
    with image_turns.removing(lock, wait_seconds=10) as our_turn:
        assert our_turn
    other.wait(timeout=10)


def test_without_a_lock_directory_each_install_keeps_to_its_own_builds(tmp_path: Path) -> None:
    nowhere = tmp_path / "missing" / "images.lock"
    with image_turns.building(nowhere), image_turns.removing(nowhere) as our_turn:
        assert our_turn
