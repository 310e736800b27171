"""The forced password change after a temporary password ("Tukar Kata Laluan").

A user signed in with a temporary password (from registration or an admin
reset) holds only the ``change-password`` permission, and every other page
sends them here (see :func:`idp.security.pending_change_gate`). The
temporary password was used up by the sign-in, so only the new one is
asked for, twice, checked against the password policy.

Someone whose account an operator created (``idp-admin user add``) has no
security image or phrase yet: until now the sign-in pages showed them their
number's decoy, as for any number, and here they choose their own, with a
phrase suggested by the decoy generator they may keep or replace.

A sign-in that the change interrupted (the user started at a service, or
opened one while the change was pending) continues once the new password is
set: see :func:`idp.security.keep_continuation`.
"""

from urllib.parse import parse_qs

from pyramid.httpexceptions import HTTPSeeOther
from pyramid.view import view_config

from idp import security_images
from idp.authz import Permission
from idp.forms.account import FirstSignInForm
from idp.forms.login import NewPasswordForm
from idp.i18n import _
from idp.security import peek_continuation, take_continuation
from idp.services.interfaces import IAuditLog, IUserService
from idp.services.security_image import suggestion
from idp.services.users import PasswordChange
from idp.views.saml import continuation_waits

_EXPIRED = _(
    "The sign-in to the service you started from expired while you chose your "
    "password. Go back to the service and start again; you are already signed "
    "in to idMe."
)


@view_config(
    route_name="password.new",
    renderer="password/new.jinja2",
    permission=Permission.CHANGE_PASSWORD,
    require_methods=["GET", "HEAD", "POST"],
)
def new(request):
    user = request.identity
    users = request.service(IUserService)
    choose = not (user.security_image and user.security_phrase)
    post = request.POST if request.method == "POST" else None
    if not choose:
        form = NewPasswordForm(post)
    elif post is None:
        form = FirstSignInForm(security_phrase=suggestion())
    else:
        form = FirstSignInForm(post)
    if request.method == "POST":
        if form.validate() and form.check_policy(
            users.policy_violations(user, form.password.data)
        ):
            _save(request, users, user, form, choose)
            return _onwards(request)
        request.response.status_int = 400
    return {
        "form": form,
        "choose_security": choose,
        "images": security_images.CATALOGUE if choose else (),
        "to_service": _to_service(request, peek_continuation(request)),
    }


def _to_service(request, url: str | None) -> bool:
    """Whether the continuation leads to a service (through a sign-in, maybe)."""
    if url is None:
        return False
    path, _, query = url.partition("?")
    if path == request.route_path("login.identifier"):
        url = parse_qs(query).get("next", [""])[0]
    return url.startswith("/saml/")


def _onwards(request) -> HTTPSeeOther:
    """On to where the sign-in was going, else idMe's home page.

    A sign-in to a service continues here, after the change and never before
    (AUTH-13): its parked request is answered, or refused with its own page
    (no role for the service, say). The "password set" note is shown only on
    idMe's own page: a service's page would never show it.
    """
    target = take_continuation(request)
    if target is not None and continuation_waits(request, target):
        return HTTPSeeOther(target)
    request.session.flash(_("Your new password is set."))
    if target is not None:
        # The service's request expired while the password was chosen: home,
        # told what happened, rather than an error page that hides the change.
        request.session.flash(_EXPIRED)
    return HTTPSeeOther(request.route_path("home"))


def _save(request, users, user, form, choose: bool) -> None:
    if choose:
        user.security_image = form.security_image.data
        user.security_phrase = form.phrase
        request.service(IAuditLog).record(
            "security_image.changed",
            subject_user_id=user.id,
            actor_user_id=user.id,
            client_address=request.client_addr,
            detail={"changed": ["image", "phrase"], "how": "first sign-in"},
        )
    users.set_password(
        user,
        form.password.data,
        how=PasswordChange.FIRST_SIGN_IN,
        client_address=request.client_addr,
        keep_session=request.session.row,
    )
    request.session.reauthenticated()
