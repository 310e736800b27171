"""``/healthz`` for load balancers and monitoring: DB reachable, keys loaded."""

import logging

from pyramid.view import view_config
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from idp.saml import keys

log = logging.getLogger(__name__)


@view_config(route_name="healthz", renderer="json", http_cache=0)
def healthz(request):
    request.tm.doom()
    checks = {"database": "ok", "keys": "ok"}
    try:
        request.dbsession.execute(text("SELECT 1"))
    except SQLAlchemyError:
        log.exception("health check: database unreachable")
        checks["database"] = "unavailable"
    try:
        keys.load(request.registry["idp.keypair"].key_file.parent)
    except keys.KeyPairError:
        log.exception("health check: signing keys unusable")
        checks["keys"] = "unavailable"
    healthy = all(value == "ok" for value in checks.values())
    request.response.status_int = 200 if healthy else 503
    return {"status": "ok" if healthy else "unavailable", **checks}
