"""The console's audit log, its CSV export and check, the outbox, the dashboard.

The audit log needs ``admin.audit.read`` (auditor, superadmin), its export
``admin.audit.export``; the outbox ``admin.outbox.read`` and its retry
``admin.outbox.act`` (registry, superadmin; audited as ``mail.retry``); the
dashboard ``admin`` (every admin role). The export streams, one batch of
rows at a time, and is safe to open in a spreadsheet
(:func:`idp.services.reports.csv_safe`).
"""

from __future__ import annotations

import datetime as dt

from pyramid.httpexceptions import HTTPBadRequest, HTTPSeeOther
from pyramid.response import Response
from pyramid.view import view_config

from idp.authz import Permission
from idp.charts import stacked_bars
from idp.i18n import _
from idp.services.accounts import masked
from idp.services.audit import verify as verify_chain
from idp.services.errors import Conflict, Invalid, NotFound
from idp.services.interfaces import IAuditLog, IMailQueue, IReports
from idp.services.mail_queue import OUTBOX_SORTS, OUTBOX_STATES, masked_recipient
from idp.services.reports import (
    AUDIT_FILTERS,
    AUDIT_SORTS,
    AuditFilter,
    audit_csv_lines,
    check_event_filter,
    parse_time,
)
from idp.views.admin import actor
from idp.views.admin_registry import listing

FILTER_ERRORS = {
    "audit.bad_event": _("An event name is letters, digits, '.', '_' and '-'."),
    "audit.bad_time": _("Enter a date as YYYY-MM-DD, or a date and time."),
    "user.not_found": _("No account matches this identity number or email."),
}


def _filters(request) -> tuple[AuditFilter, dict, dict]:
    """The audit filters in the query, the values typed, and their errors.

    A filter that cannot be read shows its error beside it and the log
    unfiltered by it is not shown: the page answers 400 with the form.
    """
    typed = {name: request.GET.get(name, "").strip()[:200] for name in AUDIT_FILTERS}
    errors: dict = {}
    values: dict = {}
    reports = request.service(IReports)
    try:
        if typed["event"]:
            values["event"] = check_event_filter(typed["event"])
    except Invalid as exc:
        errors["event"] = FILTER_ERRORS[exc.code]
    for name, key in (("user", "subject"), ("admin", "actor")):
        if typed[name]:
            try:
                values[key] = reports.find_user(typed[name]).id
            except NotFound:
                errors[name] = FILTER_ERRORS["user.not_found"]
    for name in ("since", "until"):
        if typed[name]:
            try:
                values[name] = parse_time(typed[name], name)
            except Invalid:
                errors[name] = FILTER_ERRORS["audit.bad_time"]
    if "until" in values and len(typed["until"]) == 10:
        # A date alone means the whole of that day.
        values["until"] += dt.timedelta(days=1)
    return AuditFilter(**values), typed, errors


@view_config(
    route_name="admin.audit",
    renderer="admin/audit.jinja2",
    permission=Permission.AUDIT_READ,
    require_methods=["GET", "HEAD"],
)
def audit(request):
    page_listing = listing(
        request, AUDIT_SORTS, "time", descending=True, filters=AUDIT_FILTERS
    )
    filters, typed, errors = _filters(request)
    page = None
    users = {}
    if errors:
        request.response.status_int = 400
    else:
        reports = request.service(IReports)
        page = reports.audit_events(filters, page_listing)
        ids = {row.actor_user_id for row in page.items if row.actor_user_id}
        ids |= {row.subject_user_id for row in page.items if row.subject_user_id}
        users = reports.user_labels(ids)
    query = {name: value for name, value in typed.items() if value}
    return {
        "page": page,
        "typed": typed,
        "errors": errors,
        "users": users,
        "masked": masked,
        "query": query,
        "can_export": request.has_permission(Permission.AUDIT_EXPORT),
    }


@view_config(
    route_name="admin.audit_export",
    permission=Permission.AUDIT_EXPORT,
    require_methods=["GET", "HEAD"],
)
def audit_export(request):
    """The filtered log as CSV, streamed: any size, flat memory, no long lock."""
    # The page's own parameters are accepted (a link from a sorted page),
    # anything else is a 400, as on the page.
    listing(request, AUDIT_SORTS, "time", filters=AUDIT_FILTERS)
    filters, _typed, errors = _filters(request)
    if errors:
        raise HTTPBadRequest()
    reports = request.service(IReports)
    upto = reports.audit_newest_id()
    stamp = reports.clock().strftime("%Y%m%dT%H%M%SZ")
    # The body is written after the view returns, when pyramid_tm has
    # ended the request's transaction: each batch is read in a short
    # session of its own on the same database (Reports.audit_batch).
    bind = request.dbsession.get_bind()
    # Reading the whole log out is an act worth knowing about.
    actor(request).record(
        request.service(IAuditLog),
        "audit.exported",
        # Resolved ids, never the identity number or email typed (DATA-08).
        filters=filters.described(),
        upto=upto,
    )

    def body():
        from sqlalchemy.orm import Session

        from idp.services.reports import EXPORT_BATCH, Reports

        yield from (line.encode("utf-8") for line in audit_csv_lines(()))
        after = 0
        while True:
            with Session(bind) as session:
                batch = Reports(session).audit_batch(filters, after=after, upto=upto)
                text = "".join(list(audit_csv_lines(batch))[1:])
            if text:
                yield text.encode("utf-8")
            if len(batch) < EXPORT_BATCH:
                return
            after = batch[-1].id

    response = Response(app_iter=body(), content_type="text/csv", charset="utf-8")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="idme-audit-{stamp}.csv"'
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@view_config(
    route_name="admin.audit_verify",
    renderer="admin/audit_verify.jinja2",
    permission=Permission.AUDIT_READ,
    require_methods=["GET", "HEAD"],
)
def audit_verify(request):
    """Recompute the whole chain (``idp-admin audit verify``), on demand."""
    return {"result": verify_chain(request.dbsession)}


# The outbox


@view_config(
    route_name="admin.outbox",
    renderer="admin/outbox.jinja2",
    permission=Permission.OUTBOX_READ,
    request_method=("GET", "HEAD"),
)
def outbox(request):
    return _outbox_page(request)


def _outbox_page(request, message=None) -> dict:
    state = request.GET.get("state", "failed")
    if state not in OUTBOX_STATES:
        raise HTTPBadRequest()
    page = request.service(IMailQueue).waiting(
        state,
        listing(request, OUTBOX_SORTS, "created", filters=("state",)),
    )
    depth, failing, oldest = request.service(IReports).outbox_status()
    return {
        "page": page,
        "state": state,
        "states": OUTBOX_STATES,
        "recipient": masked_recipient,
        "message": message,
        "depth": depth,
        "failing": failing,
        "oldest": oldest,
        "can_act": request.context.holds(Permission.OUTBOX_ACT),
    }


@view_config(
    route_name="admin.outbox",
    renderer="admin/outbox.jinja2",
    permission=Permission.OUTBOX_ACT,
    request_method="POST",
    require_methods=["GET", "HEAD", "POST"],
)
def outbox_retry(request):
    text = request.POST.get("message", "")
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise HTTPBadRequest()
    try:
        request.service(IMailQueue).retry(int(text), actor=actor(request))
    except NotFound:
        message = _("This message was sent or no longer exists.")
    except Conflict:
        message = _(
            "This message is being sent, or will be tried again within "
            "${minutes} minutes: there is nothing to bring forward.",
            mapping={"minutes": 10},
        )
    else:
        request.session.flash(
            _(
                "Message ${id} will be sent on the worker's next run.",
                mapping={"id": text},
            )
        )
        return HTTPSeeOther(request.route_path("admin.outbox", _query=request.GET))
    request.response.status_int = 409
    return _outbox_page(request, message)


# The dashboard

SIGN_IN_LINES = (
    ("success", _("Successful")),
    ("failed", _("Failed")),
    ("throttled", _("Throttled")),
)
SLO_LABELS = {
    "done": _("Confirmed by the service"),
    "failed": _("Failed"),
    "timeout": _("No answer in time"),
    "sent": _("No answer yet"),
    "pending": _("Not sent yet"),
}


@view_config(
    route_name="admin.dashboard",
    renderer="admin/dashboard.jinja2",
    permission=Permission.ADMIN,
    require_methods=["GET", "HEAD"],
)
def dashboard(request):
    window = request.GET.get("window", "24h")
    unknown = set(request.GET) - {"window", "lang"}
    if unknown or len(request.GET.getall("window")) > 1:
        raise HTTPBadRequest()
    try:
        board = request.service(IReports).dashboard(window)
    except Invalid:
        raise HTTPBadRequest() from None
    hourly = window == "24h"
    labels = [
        bucket.strftime("%H:00" if hourly else "%d/%m")
        for bucket in board.sign_ins.buckets
    ]
    sign_in_chart = stacked_bars(
        [board.sign_ins.lines[name] for name, _label in SIGN_IN_LINES],
        len(labels),
    )
    lock_chart = stacked_bars([board.locks.lines["account.locked"]], len(labels))
    return {
        "board": board,
        "window": window,
        "labels": labels,
        "sign_in_lines": SIGN_IN_LINES,
        "sign_in_chart": sign_in_chart,
        "lock_chart": lock_chart,
        "slo_labels": SLO_LABELS,
    }
