"""A statement interrupted mid-flight by a job's timeout (an exception a signal raises while
the statement waits): a one-statement write on the autocommit pool (a deployment's progress
line), a read on it (the deploy path's cancel check) and a transaction of get_session().

The job sees its timeout, not a database error from resetting the busy connection (and a
progress line does not swallow it as a lost line), and the pools hand out only working
connections afterwards."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from minipaas.db.models import PulledImage
from minipaas.db.session import get_engine, get_session, read_engine
from minipaas.services.deployments.cancellation import raise_if_cancelled
from minipaas.services.deployments.events import record_event
from tests.support.interrupts import TimedOut, timeout_after
from tests.support.stack import Stack

pytestmark = [pytest.mark.docker]


def test_a_progress_line_interrupted_mid_write_gives_the_job_its_timeout(stack: Stack) -> None:
    message = "interrupted progress line"
    with get_engine().connect() as blocker:
        # Every insert into the table waits behind this lock until it commits
        blocker.execute(text("LOCK TABLE deployment_events IN EXCLUSIVE MODE"))
        with pytest.raises(TimedOut), timeout_after(0.5):
            record_event(0, "test", message)
        blocker.rollback()
    for _ in range(3):
        with read_engine().connect() as connection:
            assert connection.execute(text("SELECT 1")).scalar() == 1


def test_a_read_interrupted_mid_statement_gives_the_job_its_timeout(stack: Stack) -> None:
    with get_engine().connect() as blocker:
        # Every read of the table waits behind this lock until it ends
        blocker.execute(text("LOCK TABLE deployments IN ACCESS EXCLUSIVE MODE"))
        with pytest.raises(TimedOut), timeout_after(0.5):
            raise_if_cancelled(0)
        blocker.rollback()
    for _ in range(3):
        with read_engine().connect() as connection:
            assert connection.execute(text("SELECT 1")).scalar() == 1


def test_a_transaction_interrupted_mid_statement_gives_the_job_its_timeout(stack: Stack) -> None:
    with get_engine().connect() as blocker:
        blocker.execute(text("LOCK TABLE deployments IN ACCESS EXCLUSIVE MODE"))
        with pytest.raises(TimedOut), timeout_after(0.5), get_session() as db:
            db.execute(text("SELECT count(*) FROM deployments"))
        blocker.rollback()
    for _ in range(3):
        with get_session() as db:
            assert db.execute(text("SELECT 1")).scalar() == 1


def test_an_orm_flush_interrupted_mid_statement_gives_the_job_its_timeout(stack: Stack) -> None:
    """A flush rolls back on the busy connection itself, before get_session() sees anything:
    the engine's error hook drops that connection first."""
    image_id = f"sha256:{'0' * 60}ab12"
    with get_engine().connect() as blocker:
        # Every insert into the table waits behind this lock until it ends
        blocker.execute(text("LOCK TABLE pulled_images IN EXCLUSIVE MODE"))
        with pytest.raises(TimedOut), timeout_after(0.5), get_session() as db:
            db.add(PulledImage(image_id=image_id, reference="interrupted/flush:1"))
            db.commit()
        blocker.rollback()
    with get_session() as db:
        assert db.get(PulledImage, image_id) is None  # the cancelled insert left nothing
        assert db.execute(text("SELECT 1")).scalar() == 1
