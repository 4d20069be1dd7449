"""Rows that tests build in a transaction of their own, never committed (so the running
platform's worker never sees them)."""

from __future__ import annotations

from minipaas.db.run_settings import PullPolicy, RunSettings


def run_settings(
    *,
    image: str = "minipaas-test/none:v1",
    health_check_path: str = "/",
    health_check_running_seconds: int | None = None,
) -> RunSettings:
    """What an app row needs to run, small limits, no env."""
    return RunSettings(
        image=image,
        internal_port=80,
        command=None,
        env_ciphertext=None,
        env_names=[],
        memory_mb=64,
        cpus=0.5,
        pids=64,
        pull_policy=PullPolicy.NEVER,
        health_check_path=health_check_path,
        health_check_running_seconds=health_check_running_seconds,
    )
