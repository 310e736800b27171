"""The single sign-on decision (idp.saml.sso.decide), from plain values.

No Pyramid and no database: a start, who follows it and whether their roles
reach the SP are given as values, and each outcome is read off. The
functional suites (tests/functional/test_sso_*.py, tests/interop/) check the
pages and messages each outcome becomes.
"""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from idp.models import IdpSession, ServiceProvider, User
from idp.saml.errors import Reply
from idp.saml.requests import BINDING_POST, AuthnRequest
from idp.saml.sp_metadata import Endpoint
from idp.saml.sso import Access, Outcome, SignedIn, Start, decide

ARRIVED = dt.datetime(2026, 12, 4, 9, 30, tzinfo=dt.UTC)
BEFORE = ARRIVED - dt.timedelta(minutes=5)
AFTER = ARRIVED + dt.timedelta(seconds=40)
SP = ServiceProvider(id=7, entity_id="https://sp.example.org/sp", enabled=True)
ACS = Endpoint(BINDING_POST, "https://sp.example.org/acs", index=0)

GRANTED = Access(True, ("guru",))
NOT_GRANTED = Access(False, ("murid",))


def sp_initiated(
    *, force_authn=False, is_passive=False, cross_site=False, token=None
) -> Start:
    request = AuthnRequest(
        id="_req1",
        sp_id=SP.id,
        issuer=SP.entity_id,
        acs=ACS,
        force_authn=force_authn,
        is_passive=is_passive,
        name_id_format=None,
        sp_name_qualifier=None,
        allow_create=True,
        requested_context=None,
        relay_state="/kursus/42",
        signed=True,
        sp=SP,
    )
    return Start(
        SP,
        request.reply(),
        ARRIVED,
        request=request,
        token=token,
        cross_site=cross_site,
    )


def idp_initiated() -> Start:
    reply = Reply(SP.id, SP.entity_id, ACS.location, "", "/kursus/42")
    return Start(SP, reply, ARRIVED)


def signed_in(*, authn_at=BEFORE, must_change_password=False) -> SignedIn:
    user = User(full_name="Cikgu Ujian", must_change_password=must_change_password)
    return SignedIn(user, IdpSession(authn_at=authn_at), authn_at)


NOBODY = None


class Looked:
    """A lazily given fact that records whether the decision asked for it."""

    def __init__(self, value) -> None:
        self.value = value
        self.asked = 0
        self.about = None

    def __call__(self, *about):
        self.asked += 1
        self.about = about
        return self.value


def never(what: str):
    def asked(*about):
        raise AssertionError(f"the decision asked for {what}")

    return asked


def outcome(start: Start, who: SignedIn | None, access: Access = GRANTED) -> Outcome:
    return decide(start, lambda: who, lambda user: access)


# --------------------------------------------------------------------------
# One outcome at a time


@pytest.mark.parametrize("is_passive", [False, True])
@pytest.mark.parametrize("force_authn", [False, True])
def test_a_cross_site_post_continues_on_this_site_without_looking_at_anyone(
    force_authn, is_passive
):
    """The POST carries no SameSite=Lax cookie: who sent it is not known yet."""
    start = sp_initiated(
        cross_site=True, force_authn=force_authn, is_passive=is_passive
    )
    assert (
        decide(start, never("who is signed in"), never("the role gate"))
        is Outcome.CONTINUE
    )


def test_nobody_signed_in_signs_in_first_and_the_role_gate_waits():
    access = Looked(GRANTED)
    assert decide(sp_initiated(), lambda: NOBODY, access) is Outcome.SIGN_IN
    assert decide(idp_initiated(), lambda: NOBODY, access) is Outcome.SIGN_IN
    assert access.asked == 0


def test_is_passive_never_shows_the_sign_in_page():
    """IsPassive: straight back to the SP with NoPassive, never a page of ours."""
    assert outcome(sp_initiated(is_passive=True), NOBODY) is Outcome.NO_PASSIVE
    # Control: a signed-in user is answered, passive or not.
    assert outcome(sp_initiated(is_passive=True), signed_in()) is Outcome.ASSERTION


@pytest.mark.parametrize("start", [sp_initiated(), idp_initiated()])
def test_auth_13_a_pending_password_change_comes_before_any_assertion(start):
    """AUTH-13: a user with a temporary password gets the change form, not a Response."""
    access = Looked(GRANTED)
    who = signed_in(must_change_password=True)
    assert decide(start, lambda: who, access) is Outcome.CHANGE_PASSWORD
    assert access.asked == 0
    # Control: the same user, password changed, is answered.
    assert outcome(start, signed_in()) is Outcome.ASSERTION


@pytest.mark.parametrize("authn_at", [BEFORE, AFTER])
def test_auth_13_a_passive_request_during_a_pending_change_is_no_passive(authn_at):
    who = signed_in(authn_at=authn_at, must_change_password=True)
    start = sp_initiated(is_passive=True, force_authn=True)
    assert outcome(start, who) is Outcome.NO_PASSIVE


@pytest.mark.parametrize("authn_at", [BEFORE, AFTER])
def test_a_pending_change_with_force_authn_still_changes_the_password_first(
    authn_at,
):
    """Whether the sign-in is fresh decides only where the change leads next."""
    who = signed_in(authn_at=authn_at, must_change_password=True)
    start = sp_initiated(force_authn=True)
    assert outcome(start, who) is Outcome.CHANGE_PASSWORD
    assert who.fresh_for(start) is (authn_at == AFTER)


def test_force_authn_wants_a_sign_in_after_the_request_arrived():
    start = sp_initiated(force_authn=True)
    assert outcome(start, signed_in(authn_at=BEFORE)) is Outcome.SIGN_IN
    assert outcome(start, signed_in(authn_at=None)) is Outcome.SIGN_IN
    # The very instant the request arrived counts as after it.
    assert outcome(start, signed_in(authn_at=ARRIVED)) is Outcome.ASSERTION
    assert outcome(start, signed_in(authn_at=AFTER)) is Outcome.ASSERTION


def test_force_authn_and_is_passive_together_cannot_be_met():
    start = sp_initiated(force_authn=True, is_passive=True)
    assert outcome(start, signed_in(authn_at=BEFORE)) is Outcome.NO_PASSIVE
    # Control: a sign-in after the request meets both.
    assert outcome(start, signed_in(authn_at=AFTER)) is Outcome.ASSERTION


def test_idp_initiated_sso_asks_for_no_fresh_sign_in():
    """A portal link carries no ForceAuthn: any live sign-in will do."""
    old = signed_in(authn_at=ARRIVED - dt.timedelta(hours=7))
    assert outcome(idp_initiated(), old) is Outcome.ASSERTION


@pytest.mark.parametrize("start", [sp_initiated(), idp_initiated()])
def test_saml_32_no_role_for_the_module_is_no_access(start):
    access = Looked(NOT_GRANTED)
    assert decide(start, lambda: signed_in(), access) is Outcome.NO_ACCESS
    assert access.asked == 1
    # Control: a role that grants the module.
    assert outcome(start, signed_in(), GRANTED) is Outcome.ASSERTION


def test_each_fact_is_asked_for_at_most_once():
    who, access = Looked(signed_in()), Looked(GRANTED)
    assert decide(sp_initiated(), who, access) is Outcome.ASSERTION
    assert (who.asked, access.asked) == (1, 1)
    # The role gate is asked about the user who is signed in.
    assert access.about == (who.value.user,)


# --------------------------------------------------------------------------
# Every combination at once


def test_every_combination_keeps_the_rules():
    """The rules hold across all inputs, and each outcome of the decision occurs.

    ``REFUSED`` is not among them: it comes from making the assertion
    (NoAuthnContext, InvalidNameIDPolicy, a request answered twice), after
    the decision.
    """
    seen = set()
    for (
        kind,
        force_authn,
        is_passive,
        cross_site,
        who,
        authn_at,
        pending,
        granted,
    ) in itertools.product(
        ["sp", "idp"],
        [False, True],
        [False, True],
        [False, True],
        ["nobody", "user"],
        [None, BEFORE, AFTER],
        [False, True],
        [False, True],
    ):
        if kind == "idp" and (force_authn or is_passive or cross_site):
            continue
        start = (
            idp_initiated()
            if kind == "idp"
            else sp_initiated(
                force_authn=force_authn, is_passive=is_passive, cross_site=cross_site
            )
        )
        who = (
            NOBODY
            if who == "nobody"
            else signed_in(authn_at=authn_at, must_change_password=pending)
        )
        access = GRANTED if granted else NOT_GRANTED
        result = outcome(start, who, access)
        seen.add(result)
        case = (kind, force_authn, is_passive, cross_site, who, authn_at, pending)
        if cross_site:
            assert result is Outcome.CONTINUE, case
            continue
        if result is Outcome.ASSERTION:
            assert who is not None, case
            assert not who.user.must_change_password, case
            assert who.fresh_for(start), case
            assert granted, case
        if start.is_passive:
            assert result not in (Outcome.SIGN_IN, Outcome.CHANGE_PASSWORD), case
        else:
            assert result is not Outcome.NO_PASSIVE, case
        if who is not None and who.user.must_change_password:
            assert result in (Outcome.CHANGE_PASSWORD, Outcome.NO_PASSIVE), case
    assert seen == set(Outcome) - {Outcome.REFUSED}
