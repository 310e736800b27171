"""``/healthz`` for load balancers and monitoring: DB reachable, keys usable.

Load balancers probe by address, so the sanity tween lets this one route
through whatever the Host header says (``idp.routes.HEALTH_PATH``); it reads nothing
from the request and writes no session. A 503 says which check failed and
why in a short phrase: no exception text, no paths, no secrets.
"""

import logging

from pyramid.view import view_config
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from idp.dbfaults import describe_database, fault_cause, is_database_fault
from idp.saml import keys

log = logging.getLogger(__name__)

DATABASE_UNREACHABLE = "the database did not answer"


def _log_database_error(request, what: str, exc: SQLAlchemyError) -> None:
    """An outage in one line with its cause (a probe meets it every few
    seconds, and it is the database's fault, not the code's); anything else
    (a bug) with its traceback."""
    if is_database_fault(exc):
        url = request.registry["dbengine"].url
        log.error(
            "health check: %s at %s: %s",
            what,
            describe_database(url),
            fault_cause(exc, url),
        )
    else:
        log.error("health check: %s", what, exc_info=exc)


@view_config(route_name="healthz", renderer="json", http_cache=0)
def healthz(request):
    request.tm.doom()
    checks = {"database": "ok", "keys": "ok"}
    reasons = {}
    try:
        request.dbsession.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        _log_database_error(request, "database unreachable", exc)
        checks["database"] = "unavailable"
        reasons["database"] = DATABASE_UNREACHABLE
    if not reasons:
        # Every key the database lists as published, its files on this node
        # checked against the certificate the database holds.
        try:
            request.registry["idp.keys"].load(request.dbsession)
        except keys.KeyPairError as exc:
            log.error("health check: signing keys unusable: %s", exc)
            checks["keys"] = "unavailable"
            reasons["keys"] = exc.reason
        except SQLAlchemyError as exc:
            _log_database_error(request, "cannot read the key set", exc)
            checks["database"] = "unavailable"
            reasons["database"] = DATABASE_UNREACHABLE
    else:
        checks["keys"] = "unknown"
    if reasons:
        request.response.status_int = 503
        return {"status": "unavailable", **checks, "reasons": reasons}
    return {"status": "ok", **checks}
