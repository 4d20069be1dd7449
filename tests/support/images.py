"""Tiny local images built from busybox: no registry is needed (or reachable)."""

from __future__ import annotations

from minipaas.runtime import get_runtime
from minipaas.runtime.busybox_image import HTTPD, build_busybox_image

HELLO_V1 = "minipaas-test/hello:v1"
HELLO_V2 = "minipaas-test/hello:v2"
CRASHER = "minipaas-test/crasher:v1"
BINARY_LOGGER = "minipaas-test/binary-logger:v1"
MEMORY_EATER = "minipaas-test/memory-eater:v1"
SLOW_STARTER = "minipaas-test/slow-starter:v1"
CRASH_LOOPER = "minipaas-test/crash-looper:v1"
OOM_ON_TRIGGER = "minipaas-test/oom-on-trigger:v1"
MISSING = "minipaas-test/does-not-exist:v1"


def build_test_images() -> None:
    runtime = get_runtime()
    build_busybox_image(runtime, HELLO_V1, HTTPD, {"index.html": "hello from v1\n"})
    build_busybox_image(runtime, HELLO_V2, HTTPD, {"index.html": "hello from v2\n"})
    build_busybox_image(
        runtime, CRASHER, ["/bin/sh", "-c", "echo 'crashing on purpose' >&2; exit 3"]
    )
    build_busybox_image(
        runtime,
        BINARY_LOGGER,
        ["/bin/sh", "-c", "printf 'before \\377\\376 after\\n'; exec httpd -f -v -p 80 -h /www"],
        {"index.html": "binary logger\n"},
    )
    # Answers HTTP only after 4 s: a deploy of it is mid-way for a while
    build_busybox_image(
        runtime,
        SLOW_STARTER,
        ["/bin/sh", "-c", "sleep 4; exec httpd -f -p 80 -h /www"],
        {"index.html": "slow\n"},
    )
    # Serves, then dies a second later with code 5, again and again
    build_busybox_image(
        runtime,
        CRASH_LOOPER,
        ["/bin/sh", "-c", "httpd -p 80 -h /www; sleep 1; echo 'giving up' >&2; exit 5"],
        {"index.html": "for a moment\n"},
    )
    # Doubles a string until memory runs out, before it would serve anything
    build_busybox_image(
        runtime,
        MEMORY_EATER,
        ["/bin/sh", "-c", "x=0123456789; while true; do x=$x$x; done"],
    )
    # Serves until /www/eat appears (docker exec), then eats memory until the OOM killer
    # ends it; the trigger is removed first, so a restarted container serves again
    build_busybox_image(
        runtime,
        OOM_ON_TRIGGER,
        [
            "/bin/sh",
            "-c",
            "httpd -p 80 -h /www; while [ ! -e /www/eat ]; do sleep 0.1; done; rm /www/eat; "
            "x=0123456789; while true; do x=$x$x; done",
        ],
        {"index.html": "hungry\n"},
    )
