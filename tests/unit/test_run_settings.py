"""One type for "what runs": the columns of every table carrying it match its fields."""

from __future__ import annotations

from dataclasses import fields

import pytest

from minipaas.db.models import App, Deployment, PullPolicy, Release, RunSettings


@pytest.mark.parametrize("model", [App, Deployment, Release])
def test_every_run_setting_is_a_column(model: type) -> None:
    columns = set(model.__table__.columns.keys())  # type: ignore[attr-defined]
    missing = {f.name for f in fields(RunSettings)} - columns
    assert not missing, f"{model.__name__} lacks {missing}"


def test_settings_copy_from_one_row_to_another_whole() -> None:
    run = RunSettings(
        image="example/app:1",
        internal_port=8080,
        command=["serve", "--port", "8080"],
        env_ciphertext="ciphertext",
        env_names=["A", "B"],
        memory_mb=128,
        cpus=0.25,
        pids=64,
        pull_policy=PullPolicy.NEVER,
        health_check_path="/ready",
        health_check_running_seconds=None,
    )
    app = App()
    app.set_run_settings(run)
    release = Release()
    release.set_run_settings(app.run_settings())
    assert release.run_settings() == run
    assert release.run_settings().health.path == "/ready"
    # lists are copied, not shared between rows
    assert release.env_names is not app.env_names
