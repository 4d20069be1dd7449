"""An app's own domains: host names besides <name>.<APPS_DOMAIN> that reach it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response, status
from sqlalchemy.orm import Session

from minipaas.api.deps import CurrentUser, Limit, Offset, SessionDep, VisibleApp, _visible_app_row
from minipaas.api.responses import APP_ITEM, BODY, errors
from minipaas.api.schemas import DomainCreate, DomainOut, DomainTlsOut
from minipaas.db.models import AppDomain
from minipaas.services import certificates, domains

# Like every route under /apps/{app_id}: the caller must be able to see the app (else 404)
router = APIRouter(
    prefix="/apps/{app_id}/domains", tags=["domains"], dependencies=[Depends(_visible_app_row)]
)

Hostname = Annotated[str, Path(max_length=300, description="the domain, e.g. www.example.com")]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DomainOut,
    responses=errors(
        *APP_ITEM,
        *BODY,
        403,
        409,
        s403="the platform's host, under APPS_DOMAIN, or not in ALLOWED_DOMAINS",
        s409="another app's (or already this app's) name, or too many domains",
        s503="the router could not be updated; see the message",
    ),
)
def add_domain(app: VisibleApp, body: DomainCreate, user: CurrentUser, db: SessionDep) -> DomainOut:
    """Give the app one more host name; the router serves it at once (point DNS at it)."""
    domain = domains.add_domain(db=db, app=app, hostname=body.hostname, user=user)
    return _with_tls(db, [domain])[0]


@router.get("", response_model=list[DomainOut], responses=errors(*APP_ITEM))
def list_domains(
    app: VisibleApp, db: SessionDep, response: Response, limit: Limit = 50, offset: Offset = 0
) -> list[DomainOut]:
    """The app's own domains by name; the total is in X-Total-Count."""
    rows, total = domains.list_domains(db=db, app=app, limit=limit, offset=offset)
    response.headers["X-Total-Count"] = str(total)
    return _with_tls(db, rows)


@router.delete(
    "/{hostname}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=errors(
        *APP_ITEM,
        s404="no such app, or the app has no such domain",
        s503="the router could not be updated; see the message",
    ),
)
def remove_domain(app: VisibleApp, hostname: Hostname, db: SessionDep) -> Response:
    """Take a host name from the app; the router stops serving it for the app."""
    domains.remove_domain(db=db, app=app, hostname=hostname)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _with_tls(db: Session, rows: Sequence[AppDomain]) -> list[DomainOut]:
    status = certificates.domain_tls(db, [row.hostname for row in rows])
    return [
        DomainOut.model_validate(row).model_copy(
            update={"tls": DomainTlsOut.model_validate(status[row.hostname])}
        )
        for row in rows
    ]
