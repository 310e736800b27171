"""The forced password change after a temporary password ("Tukar Kata Laluan").

A user signed in with a temporary password (from registration or an admin
reset) holds only the ``change-password`` permission, and every other page
sends them here (see :func:`idp.security.pending_change_gate`). The
temporary password was used up by the sign-in, so only the new one is
asked for, twice, checked against the password policy.
"""

from pyramid.httpexceptions import HTTPSeeOther
from pyramid.view import view_config

from idp.authz import Permission
from idp.forms.login import NewPasswordForm
from idp.i18n import _
from idp.services.interfaces import IAuditLog, IUserService


@view_config(
    route_name="password.new",
    renderer="password/new.jinja2",
    permission=Permission.CHANGE_PASSWORD,
    require_methods=["GET", "HEAD", "POST"],
)
def new(request):
    user = request.identity
    users = request.find_service(IUserService, context=None)
    form = NewPasswordForm(request.POST if request.method == "POST" else None)
    if request.method == "POST":
        if form.validate() and form.check_policy(
            users.policy_violations(user, form.password.data)
        ):
            users.set_password(
                user, form.password.data, keep_session=request.session.row
            )
            request.session.reauthenticated()
            request.find_service(IAuditLog, context=None).record(
                "password.changed",
                subject_user_id=user.id,
                actor_user_id=user.id,
                client_address=request.client_addr,
                detail={"how": "first sign-in"},
            )
            request.session.flash(_("Your new password is set."))
            return HTTPSeeOther(request.route_path("home"))
        request.response.status_int = 400
    return {"form": form}
