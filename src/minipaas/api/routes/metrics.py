"""Prometheus metrics of the platform (admins; Prometheus sends a bearer token)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from minipaas import metrics
from minipaas.api.deps import AdminUser
from minipaas.api.responses import ADMIN, errors

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "OK"},
        **errors(*ADMIN),
    },
)
async def prometheus_metrics(_: AdminUser) -> Response:
    """HTTP requests, deployments, reconciler actions, router reloads, apps, queue depth."""
    body = await run_in_threadpool(metrics.exposition)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
