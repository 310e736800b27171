"""``/metrics``: Prometheus's text format, for the configured networks only.

Anyone else, and everyone when ``idp.metrics_allow`` is empty, gets the
ordinary bilingual 404 page, as for a path that does not exist: the
endpoint gives no hint it is there. The address checked is ``REMOTE_ADDR``
(``request.remote_addr``), which waitress rewrites from the proxy's
X-Forwarded-For only when the peer is its ``trusted_proxy``. Not WebOb's
``request.client_addr``: that takes the *first* X-Forwarded-For entry
whenever the header is there, so with waitress serving directly (no
``trusted_proxy``, as in development) any client could send
``X-Forwarded-For: 127.0.0.1`` and be let in. The view reads nothing else
from the request and writes no session.
"""

import ipaddress

from pyramid.httpexceptions import HTTPNotFound
from pyramid.response import Response
from pyramid.view import view_config

from idp import metrics


def allowed(request) -> bool:
    networks = request.registry.settings["idp.metrics_allow"]
    peer = request.remote_addr
    if not networks or not peer:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


@view_config(route_name="metrics", http_cache=0)
def metrics_view(request):
    if not allowed(request):
        raise HTTPNotFound()
    request.tm.doom()
    response = Response(body=metrics.exposition(request.registry["dbengine"]))
    response.headers["Content-Type"] = metrics.CONTENT_TYPE
    return response
