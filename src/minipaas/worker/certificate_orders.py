"""ACME orders in a loop of their own: one order waits on the CA for seconds (up to the
pass budget), which must never hold up the reconciler's repairs (dispatch, routes, lost jobs)."""

from __future__ import annotations

import logging
import threading

from minipaas import metrics, queue
from minipaas.services import certificates

log = logging.getLogger(__name__)
STEP = "renew_due_certificates"


class CertificateOrderThread(threading.Thread):
    """Orders and renews certificates every interval until stopped; one worker per interval
    across the platform (each hostname is claimed in the database as well)."""

    def __init__(self, interval: float) -> None:
        super().__init__(name="certificate-orders", daemon=True)
        metrics.RECONCILER_ACTIONS.labels(STEP)
        self.interval = interval
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.wait(self.interval):
            if not queue.claim_turn("certificate-orders", self.interval):
                continue
            try:
                outcomes = certificates.renew_due_certificates()
            except Exception:
                log.exception("certificate orders: pass failed")
                continue
            if outcomes:
                metrics.RECONCILER_ACTIONS.labels(STEP).inc(len(outcomes))
            for outcome in outcomes:
                log.info("certificates: %s", outcome)

    def stop(self) -> None:
        self._stopping.set()
