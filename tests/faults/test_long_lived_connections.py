"""Routes change without reloading nginx: a long-lived response to one app is not cut, nor
even paused, by 20 deploys and every lifecycle action of another app, and nginx's master and
workers stay the same processes throughout."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest

from minipaas.runtime import get_runtime
from minipaas.runtime.base import RuntimeFailure
from minipaas.runtime.busybox_image import build_busybox_image
from minipaas.services.routing import get_router
from tests.support.flows import create_app, deploy
from tests.support.images import HELLO_V1
from tests.support.stack import Stack
from tests.support.waiting import eventually

# alone: it times gaps in a stream, which a second session's load stretches
pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.alone]

STREAMER = "minipaas-test/streamer:v1"
DEPLOYS = 20
INTERVAL = 0.2  # seconds between the lines the app writes
MAX_GAP = 2.0  # seconds without a line that count as a stall
# busybox httpd hands a CGI's output to the client as it comes: a line every 0.2 s, as many
# as the query string asks for (the test closes the stream long before). nginx buffers a
# proxied response until a buffer fills or it ends (proxy_buffering is on), so the app asks
# for streaming the way apps behind nginx do: X-Accel-Buffering: no
STREAM_CGI = f"""#!/bin/sh
printf 'Content-Type: text/plain\\r\\nX-Accel-Buffering: no\\r\\n\\r\\n'
i=0
while [ "$i" -lt "${{QUERY_STRING:-10}}" ]; do
  echo "line $i"
  i=$((i + 1))
  sleep {INTERVAL}
done
"""


@dataclass
class Stream:
    """One streaming GET through the router, read line by line in a thread of its own."""

    url: str
    headers: dict[str, str]
    arrivals: list[float] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    status: int | None = None
    error: BaseException | None = None
    ended: bool = False  # the app's response ended (it must not, before we leave)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        # A read timeout below the stall limit's double: a stall fails loudly, not silently
        timeout = httpx.Timeout(10.0, read=2 * MAX_GAP)
        try:
            with (
                httpx.Client(timeout=timeout) as client,
                client.stream("GET", self.url, headers=self.headers) as response,
            ):
                self.status = response.status_code
                for line in response.iter_lines():
                    self.arrivals.append(time.monotonic())
                    self.lines.append(line)
                    if self.stop.is_set():
                        return  # leaving closes the connection
                self.ended = True
        except BaseException as exc:  # reported by the test thread
            self.error = exc

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=10)

    def longest_gap(self, since: float) -> float:
        times = [since, *(t for t in self.arrivals if t >= since)]
        return max(b - a for a, b in itertools.pairwise(times))


def router_processes() -> tuple[int | None, set[int]]:
    router = get_router()
    return router.pid(), router.worker_pids()


@pytest.fixture(scope="module")
def streamer_image(stack: Stack) -> str:
    command = ["/bin/sh", "-c", "chmod 755 /www/cgi-bin/stream && exec httpd -f -p 80 -h /www"]
    for attempt in range(3):
        try:
            build_busybox_image(
                get_runtime(),
                STREAMER,
                command,
                {"index.html": "streamer\n", "cgi-bin/stream": STREAM_CGI},
            )
            break
        except RuntimeFailure:
            # Another run on this engine pruning dangling builds can remove a layer mid-build
            if attempt == 2:
                raise
    return STREAMER


def test_stream_to_one_app_survives_deploys_and_lifecycle_of_another(
    stack: Stack, api: httpx.Client, streamer_image: str, app_name: str
) -> None:
    streamer = create_app(api, f"{app_name[:50]}-a", streamer_image)
    other = create_app(api, f"{app_name[:50]}-b", HELLO_V1)
    assert deploy(api, streamer["id"])["status"] == "succeeded"
    assert deploy(api, other["id"])["status"] == "succeeded"
    router_url = stack.router_url
    host = f"{streamer['name']}.{stack.settings.apps_domain}"
    streams = {
        "by host": Stream(f"{router_url}/cgi-bin/stream?100000", {"Host": host}),
        "by path": Stream(f"{router_url}/apps/{streamer['id']}/cgi-bin/stream?100000", {}),
    }
    master, workers = router_processes()
    assert master is not None and workers, "the router is not running"
    for stream in streams.values():
        stream.start()

    def flowing() -> bool:
        for name, stream in streams.items():
            assert stream.error is None, f"{name}: {stream.error!r}"
            assert len(stream.lines) >= 3, f"{name}: {len(stream.lines)} lines so far"
        return True

    timeline: list[str] = []
    try:
        eventually(
            flowing,
            timeout=10,
            retry_on=(AssertionError,),
            message="the streams did not start flowing",
        )
        watched_from = time.monotonic()
        for number in range(1, DEPLOYS + 1):
            started = time.monotonic()
            result = deploy(api, other["id"])
            assert result["status"] == "succeeded", (number, result)
            timeline.append(f"deploy {number}: {time.monotonic() - started:.2f} s")
        assert router_processes() == (master, workers), "nginx was reloaded or restarted"

        for action in ("stop", "start", "restart", "remove"):
            answer = api.post(f"/apps/{other['id']}/{action}")
            assert answer.status_code == 200, (action, answer.text)
            timeline.append(f"{action}: {answer.json()['app']['status']}")
            assert router_processes() == (master, workers), f"nginx changed at {action}"
        assert api.delete(f"/apps/{other['id']}").status_code == 204
        assert api.get(f"/apps/{other['id']}").status_code == 404
        assert router_processes() == (master, workers), "nginx changed at delete"
        last_change = time.monotonic()
        # And the route of the deleted app is gone without a reload
        gone = httpx.get(
            f"{router_url}/", headers={"Host": f"{other['name']}.{stack.settings.apps_domain}"}
        )
        assert gone.status_code == 404, gone.text
        time.sleep(1.0)  # the streams go on after the last change, too
    finally:
        for stream in streams.values():
            stream.close()

    for name, stream in streams.items():
        assert stream.status == 200, (name, stream.status)
        assert stream.error is None, f"{name}: {stream.error!r} after {timeline}"
        assert not stream.ended, f"{name}: the response ended early after {timeline}"
        # every line, in order, none lost or repeated
        assert stream.lines == [f"line {i}" for i in range(len(stream.lines))], name
        gap = stream.longest_gap(watched_from)
        assert gap <= MAX_GAP, f"{name}: no line for {gap:.2f} s during {timeline}"
        # and it still flowed after the last change
        assert stream.arrivals[-1] > last_change + 0.5, name
