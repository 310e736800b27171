"""Views that exist only in the test app, to drive shared mechanisms.

``/_probe/form`` is a minimal state-changing form (CSRF, sessions, method
checks); ``/_probe/boom`` fails the way an unexpected bug would; ``/_probe/write``
writes a row and a session, for faults that strike at the session's save;
``/_probe/hold`` keeps a server thread busy until the test lets it go;
``/_probe/retry`` counts an SSO answer and fails retryably on its first
attempt, as a serialization failure would.
"""

from markupsafe import escape
from pyramid.response import Response
from sqlalchemy import text


def form(request):
    token = request.session.get_csrf_token()
    return Response(
        f'<form id="probe" method="post" action="/_probe/form">'
        f'<input type="hidden" name="csrf_token" value="{escape(token)}">'
        f'<input name="note" value="">'
        f"</form>"
    )


def form_post(request):
    request.session["note"] = request.POST.get("note", "")
    return Response("saved")


def boom(request):
    # A write, then a crash: the write must not survive (DATA-10, DATA-03).
    request.dbsession.execute(
        text(
            "INSERT INTO roles (name, display_name_ms, display_name_en, "
            "description, created_at) VALUES ('boom', 'b', 'b', "
            "'/srv/secret/path SELECT', CURRENT_TIMESTAMP)"
        )
    )
    raise RuntimeError("database password is hunter2 at /srv/secret/path")


PROBE_ROLE = "probe-write"


def write(request):
    """A write, then a session to save: both commit, or neither (DATA-03)."""
    request.dbsession.execute(
        text(
            "INSERT INTO roles (name, display_name_ms, display_name_en, "
            "description, created_at) VALUES (:name, 'p', 'p', '', "
            "CURRENT_TIMESTAMP)"
        ),
        {"name": PROBE_ROLE},
    )
    request.session["note"] = "written"
    return Response("written")


def hold(request):
    """Keeps its thread until the test sets ``probe.release`` (queueing)."""
    request.registry["probe.holding"].set()
    request.registry["probe.release"].wait(timeout=30)
    return Response("released")


def retry_once(request):
    """Counts an SSO answer, then meets a retryable error on the first attempt."""
    from pyramid_retry import RetryableException

    from idp import metrics

    metrics.sso_answered(None, "probe", by_sp=False)
    if request.environ.get("retry.attempt", 0) == 0:
        raise RetryableException("could not serialize access (probe)")
    return Response(f"attempt {request.environ['retry.attempt']}")


def client(request):
    """The address the app takes for the client (rate limits, audit)."""
    return Response(request.client_addr or "")


def includeme(config):
    import threading

    config.add_route("probe.client", "/_probe/client")
    config.add_view(client, route_name="probe.client", request_method="GET")

    config.registry["probe.holding"] = threading.Event()
    config.registry["probe.release"] = threading.Event()
    config.add_route("probe.hold", "/_probe/hold")
    config.add_view(hold, route_name="probe.hold", request_method="GET")
    config.add_route("probe.form", "/_probe/form")
    config.add_route("probe.boom", "/_probe/boom")
    config.add_view(form, route_name="probe.form", request_method="GET")
    config.add_view(
        form_post,
        route_name="probe.form",
        request_method="POST",
        require_methods=["POST"],
    )
    config.add_view(boom, route_name="probe.boom")
    config.add_route("probe.retry", "/_probe/retry")
    config.add_view(retry_once, route_name="probe.retry", request_method="GET")
    config.add_route("probe.write", "/_probe/write")
    config.add_view(write, route_name="probe.write", request_method="GET")
