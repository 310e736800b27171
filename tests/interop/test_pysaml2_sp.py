"""The IdP against real SAML service providers: the suite, and its pysaml2 run.

:class:`SsoSuite` is the interop contract, written once: SSO over both
bindings and IdP-initiated, signed requests, encryption, each NameID format,
attributes, ForceAuthn, IsPassive, the role gate, and single logout across
two SPs of different libraries. :class:`TestPysaml2SP` runs it with
pysaml2's ``Saml2Client`` as the SP; ``test_onelogin_sp.py`` runs it with
python3-saml. The SPs validate every Response with their library's own
checks (``tests/interop/sps.py``); the browser only carries messages.
"""

from __future__ import annotations

import base64
from urllib.parse import urlsplit

import pytest
import webtest

from idp.models import Module
from idp.saml.registry import import_sp
from idp.saml.response import pairwise_uid
from tests.app import environ
from tests.factories import make_role, make_user
from tests.interop.browser import Browser
from tests.interop.sps import (
    EMAIL,
    NO_PASSIVE,
    PERSISTENT,
    SUCCESS,
    TRANSIENT,
    OneLoginSP,
    Pysaml2SP,
    SPRefused,
)
from tests.saml_metadata import AES128_CBC as ENC_AES128_CBC
from tests.saml_metadata import AES128_GCM as ENC_AES128_GCM
from tests.saml_metadata import AES256_CBC as ENC_AES256_CBC
from tests.saml_metadata import AES256_GCM as ENC_AES256_GCM
from tests.saml_metadata import RSA_OAEP_MGF1P as ENC_RSA_OAEP_MGF1P
from tests.saml_metadata import SHA1 as ENC_SHA1
from tests.saml_metadata import SHA512 as ENC_SHA512
from tests.saml_metadata import with_encryption_methods

pytestmark = pytest.mark.interop

INVALID_NAMEID_POLICY = "urn:oasis:names:tc:SAML:2.0:status:InvalidNameIDPolicy"
ALL_FORMATS = (PERSISTENT, TRANSIENT, EMAIL)
BASIC = ("uid", "displayName", "mail")
EVERYTHING = (
    "uid",
    "displayName",
    "mail",
    "mobile",
    "employeeType",
    "o",
    "preferredLanguage",
    "isMemberOf",
)


def uid_at(row, user, settings) -> str:
    """The per-SP uid the IdP releases to ``row`` (SAML-38), never the global one."""
    value = pairwise_uid(user, row, settings["idp.hmac_key"].encode())
    assert value != str(user.id)
    return value


def path_of(response) -> str:
    return urlsplit(response.headers["Location"]).path


class SsoSuite:
    """The interop contract; a subclass names the SP library under test.

    ``sp_class`` is the SP under test; ``other_class`` the second SP that
    shares the user's session in the single-logout tests.
    """

    sp_class: type
    other_class: type

    # -- helpers ---------------------------------------------------------------

    def sso(self, browser: Browser, sp, user, **options):
        """SP-initiated SSO over Redirect; signs in if asked. -> Login."""
        path, request_id = sp.redirect_request(**options)
        page = browser.follow(browser.get(path), user=user)
        form = browser.post_form(page)
        assert form.action == sp.acs_url
        return sp.consume(form.fields, request_id)

    # -- SSO -------------------------------------------------------------------

    def test_sso_over_redirect(self, register, browser, user, settings):
        sp, row = register(self.sp_class, "sp1", attributes=BASIC)
        path, request_id = sp.redirect_request(relay_state="/kursus/42?tab=1")
        first = browser.get(path)
        assert first.status_int == 303
        assert path_of(first) == "/login"
        page = browser.follow(first, user=user)
        assert page.status_int == 200
        form = browser.post_form(page)
        assert form.action == sp.acs_url
        assert form.fields["RelayState"] == "/kursus/42?tab=1"
        login = sp.consume(form.fields, request_id)
        assert login.status == SUCCESS
        assert login.name_id_format == PERSISTENT
        assert login.name_id
        assert login.name_id not in (user.identifier, user.email, str(user.id))
        assert login.session_index
        assert login.attributes == {
            "uid": [uid_at(row, user, settings)],
            "displayName": [user.full_name],
            "mail": [user.email],
        }

    def test_sso_over_post(self, register, browser, user, settings):
        sp, row = register(self.sp_class, "sp1", attributes=BASIC)
        fields, request_id = sp.post_request(relay_state="state-7")
        parked = browser.cross_site_post("/saml/sso/post", fields, "https://sp1.test")
        assert parked.status_int == 303
        assert path_of(parked) == "/saml/sso/continue"
        page = browser.follow(parked, user=user)
        assert browser.sign_in_pages()
        form = browser.post_form(page)
        assert form.action == sp.acs_url
        assert form.fields["RelayState"] == "state-7"
        login = sp.consume(form.fields, request_id)
        assert login.status == SUCCESS
        assert login.attributes["uid"] == [uid_at(row, user, settings)]

    def test_sso_over_post_when_already_signed_in(self, register, browser, user):
        sp, _ = register(self.sp_class, "sp1")
        browser.sign_in(user)
        browser.trail.clear()
        fields, request_id = sp.post_request()
        page = browser.follow(
            browser.cross_site_post("/saml/sso/post", fields, "https://sp1.test")
        )
        assert not browser.sign_in_pages()
        login = sp.consume(browser.post_form(page).fields, request_id)
        assert login.status == SUCCESS

    def test_idp_initiated_sso(self, register, browser, user):
        sp, row = register(self.sp_class, "sp1", attributes=BASIC)
        page = browser.follow(
            browser.get(f"/saml/init/{row.id}?RelayState=x"), user=user
        )
        form = browser.post_form(page)
        assert form.action == sp.acs_url
        assert form.fields["RelayState"] == "x"
        login = sp.consume(form.fields, None)
        assert login.status == SUCCESS
        assert login.name_id_format == PERSISTENT
        assert login.attributes["mail"] == [user.email]

    def test_a_second_sso_needs_no_sign_in(self, register, browser, user):
        sp, _ = register(self.sp_class, "sp1")
        first = self.sso(browser, sp, user)
        browser.trail.clear()
        second = self.sso(browser, sp, None)
        assert not browser.sign_in_pages()
        assert second.status == SUCCESS
        assert second.name_id == first.name_id

    def test_the_sp_checks_what_it_accepts(self, register, browser, user):
        """The control for every test here: the SP refuses what it should."""
        sp, _ = register(self.sp_class, "sp1", attributes=BASIC)
        other, _ = register(self.sp_class, "sp2", attributes=BASIC)
        path, request_id = sp.redirect_request()
        fields = browser.post_form(browser.follow(browser.get(path), user=user)).fields
        xml = base64.b64decode(fields["SAMLResponse"])
        assert user.email.encode() in xml
        forged = xml.replace(user.email.encode(), b"someone.else@example.com")
        with pytest.raises(SPRefused):
            sp.consume({"SAMLResponse": base64.b64encode(forged).decode()}, request_id)
        with pytest.raises(SPRefused):
            sp.consume(fields, "_a-request-this-sp-never-sent")
        with pytest.raises(SPRefused):
            other.consume(fields, None)
        assert sp.consume(fields, request_id).status == SUCCESS

    # -- signatures and encryption ----------------------------------------------

    @pytest.mark.parametrize("binding", ["redirect", "post"])
    def test_signed_authn_requests(self, register, browser, user, binding):
        sp, row = register(self.sp_class, "sp1", sign_requests=True)
        assert 'AuthnRequestsSigned="true"' in row.metadata_xml
        if binding == "redirect":
            path, request_id = sp.redirect_request()
            assert "&Signature=" in path
            page = browser.follow(browser.get(path), user=user)
        else:
            fields, request_id = sp.post_request()
            page = browser.follow(
                browser.cross_site_post("/saml/sso/post", fields, "https://sp1.test"),
                user=user,
            )
        login = sp.consume(browser.post_form(page).fields, request_id)
        assert login.status == SUCCESS

    @pytest.mark.parametrize("fault", ["tampered", "unsigned"])
    def test_a_bad_or_missing_request_signature_is_refused(
        self, register, browser, user, fault
    ):
        """An SP that signs (AuthnRequestsSigned) is held to it."""
        sp, _ = register(self.sp_class, "sp1", sign_requests=True)
        browser.sign_in(user)
        if fault == "tampered":
            path, _ = sp.redirect_request(relay_state="a")
            path = path.replace("RelayState=a", "RelayState=b")
        else:
            path, _ = sp.redirect_request(sign=False)
        page = browser.follow(browser.get(path))
        assert page.status_int == 400
        assert page.html.select_one("form#saml-post-form") is None

    def test_a_replayed_request_is_refused(self, register, browser, user):
        sp, _ = register(self.sp_class, "sp1")
        browser.sign_in(user)
        path, request_id = sp.redirect_request()
        first = browser.follow(browser.get(path))
        assert sp.consume(browser.post_form(first).fields, request_id).status == (
            SUCCESS
        )
        again = browser.follow(browser.get(path))
        assert again.status_int == 400
        assert again.html.select_one("form#saml-post-form") is None

    @pytest.mark.parametrize("encryption", [True, False], ids=["encrypted", "plain"])
    def test_assertion_encrypted_for_an_sp_with_an_encryption_key(
        self, register, browser, user, encryption
    ):
        sp, row = register(
            self.sp_class, "sp1", attributes=BASIC, encryption=encryption
        )
        assert row.encrypt_assertion is encryption
        login = self.sso(browser, sp, user)
        assert login.status == SUCCESS
        assert login.encrypted is encryption
        assert login.attributes["mail"] == [user.email]

    @pytest.mark.parametrize(
        ("listed", "expected"),
        [
            ((), ENC_AES256_GCM),
            (((ENC_AES128_CBC, None),), ENC_AES128_CBC),
            (((ENC_AES128_CBC, None), (ENC_AES256_CBC, None)), ENC_AES256_CBC),
            (((ENC_AES256_CBC, None), (ENC_AES128_GCM, None)), ENC_AES128_GCM),
            (((ENC_AES256_GCM, None), (ENC_RSA_OAEP_MGF1P, ENC_SHA1)), ENC_AES256_GCM),
            (
                ((ENC_AES128_GCM, None), (ENC_RSA_OAEP_MGF1P, ENC_SHA512)),
                ENC_AES128_GCM,
            ),
        ],
        ids=["none", "aes128-cbc", "cbc", "aes128-gcm", "oaep-sha1", "oaep-sha512"],
    )
    def test_saml_35_the_sp_decrypts_what_its_metadata_lists(
        self, dbsession, module, idp_metadata, browser, user, listed, expected
    ):
        """SAML-35: the algorithm chosen from the metadata is one the SP reads."""
        sp = self.sp_class("https://sp1.test/sp", idp_metadata, encryption=True)
        row = import_sp(
            dbsession,
            with_encryption_methods(sp.metadata(), listed),
            module_code=module.code,
        )
        row.attributes_released = list(BASIC)
        dbsession.flush()
        path, request_id = sp.redirect_request()
        page = browser.follow(browser.get(path), user=user)
        form = browser.post_form(page)
        xml = base64.b64decode(form.fields["SAMLResponse"])
        assert f'Algorithm="{expected}"'.encode() in xml
        login = sp.consume(form.fields, request_id)
        assert login.status == SUCCESS
        assert login.encrypted is True
        assert login.attributes["mail"] == [user.email]

    # -- NameID ------------------------------------------------------------------

    def test_persistent_name_id_is_stable_and_differs_per_sp(
        self, register, testapp, app, tm, dbsession, user
    ):
        one, _ = register(self.sp_class, "sp1", name_id_formats=ALL_FORMATS)
        two, _ = register(self.sp_class, "sp2", name_id_formats=ALL_FORMATS)
        first = self.sso(Browser(testapp), one, user, name_id_format=PERSISTENT)
        # A new browser: a new IdP session, the same person.
        other_browser = Browser(
            webtest.TestApp(app, extra_environ=environ(tm, dbsession))
        )
        again = self.sso(other_browser, one, user, name_id_format=PERSISTENT)
        elsewhere = self.sso(other_browser, two, user, name_id_format=PERSISTENT)
        assert first.name_id_format == again.name_id_format == PERSISTENT
        assert first.name_id == again.name_id
        assert first.session_index != again.session_index
        assert elsewhere.name_id != first.name_id

    def test_transient_name_id_changes_at_each_sso(self, register, browser, user):
        sp, _ = register(self.sp_class, "sp1", name_id_formats=ALL_FORMATS)
        first = self.sso(browser, sp, user, name_id_format=TRANSIENT)
        second = self.sso(browser, sp, None, name_id_format=TRANSIENT)
        assert first.name_id_format == second.name_id_format == TRANSIENT
        assert first.name_id and second.name_id
        assert first.name_id != second.name_id
        persistent = self.sso(browser, sp, None, name_id_format=PERSISTENT)
        assert persistent.name_id not in (first.name_id, second.name_id)

    def test_email_name_id_when_the_policy_releases_mail(self, register, browser, user):
        sp, _ = register(
            self.sp_class, "sp1", attributes=("mail",), name_id_formats=ALL_FORMATS
        )
        login = self.sso(browser, sp, user, name_id_format=EMAIL)
        assert (login.name_id_format, login.name_id) == (EMAIL, user.email)

    def test_email_name_id_by_sp_policy_without_name_id_policy(
        self, register, browser, dbsession, user
    ):
        # SAML-33: the policy's email format works only with mail released.
        sp, row = register(
            self.sp_class, "sp1", attributes=("mail",), name_id_formats=ALL_FORMATS
        )
        row.name_id_format = EMAIL
        dbsession.flush()
        login = self.sso(browser, sp, user)
        assert (login.name_id_format, login.name_id) == (EMAIL, user.email)

    def test_email_name_id_refused_when_not_released(self, register, browser, user):
        sp, _ = register(self.sp_class, "sp1", name_id_formats=ALL_FORMATS)
        path, request_id = sp.redirect_request(name_id_format=EMAIL)
        page = browser.follow(browser.get(path), user=user)
        form = browser.post_form(page, "saml-error-form")
        assert form.action == sp.acs_url
        login = sp.consume(form.fields, request_id)
        assert login.status == INVALID_NAMEID_POLICY
        assert login.name_id is None

    # -- attributes ----------------------------------------------------------------

    def test_roles_travel_as_one_multi_valued_attribute(
        self, register, browser, dbsession, user, role
    ):
        extra = make_role(dbsession, "penyelaras")
        user.roles.append(extra)
        dbsession.flush()
        sp, _ = register(self.sp_class, "sp1", attributes=("isMemberOf",))
        login = self.sso(browser, sp, user)
        assert login.attributes == {"isMemberOf": sorted([role.name, extra.name])}

    def test_every_releasable_attribute(self, register, browser, user, role, settings):
        sp, row = register(self.sp_class, "sp1", attributes=EVERYTHING)
        login = self.sso(browser, sp, user)
        assert login.attributes == {
            "uid": [uid_at(row, user, settings)],
            "displayName": [user.full_name],
            "mail": [user.email],
            "mobile": [user.phone],
            "employeeType": [user.category],
            "o": [user.institution],
            "preferredLanguage": [user.locale],
            "isMemberOf": [role.name],
        }

    def test_no_attributes_unless_released(self, register, browser, user):
        sp, _ = register(self.sp_class, "sp1", attributes=())
        login = self.sso(browser, sp, user)
        assert login.status == SUCCESS
        assert login.attributes == {}

    # -- ForceAuthn and IsPassive ------------------------------------------------

    def test_force_authn_asks_a_signed_in_user_again(self, register, browser, user):
        sp, _ = register(self.sp_class, "sp1")
        self.sso(browser, sp, user)
        browser.trail.clear()
        path, request_id = sp.redirect_request(force_authn=True)
        first = browser.get(path)
        assert first.status_int == 303
        assert path_of(first) == "/login"
        page = browser.follow(first, user=user)
        login = sp.consume(browser.post_form(page).fields, request_id)
        assert login.status == SUCCESS

    def test_is_passive_without_a_session_answers_no_passive(self, register, browser):
        sp, _ = register(self.sp_class, "sp1")
        path, request_id = sp.redirect_request(is_passive=True, relay_state="p")
        page = browser.follow(browser.get(path))
        assert not browser.sign_in_pages()
        form = browser.post_form(page)
        assert form.action == sp.acs_url
        assert form.fields["RelayState"] == "p"
        login = sp.consume(form.fields, request_id)
        assert login.status == NO_PASSIVE
        assert login.name_id is None and login.attributes == {}

    def test_is_passive_with_a_session_signs_in_silently(self, register, browser, user):
        sp, _ = register(self.sp_class, "sp1")
        browser.sign_in(user)
        browser.trail.clear()
        login = self.sso(browser, sp, None, is_passive=True)
        assert not browser.sign_in_pages()
        assert login.status == SUCCESS

    # -- the role gate -------------------------------------------------------------

    @pytest.mark.parametrize("start", ["sp", "idp"])
    def test_a_user_without_a_role_for_the_module_gets_no_access(
        self, register, browser, dbsession, start
    ):
        sp, row = register(self.sp_class, "sp1", attributes=BASIC)
        stranger = make_user(dbsession)
        if start == "sp":
            path, _ = sp.redirect_request()
        else:
            path = f"/saml/init/{row.id}"
        page = browser.follow(browser.get(path), user=stranger)
        assert page.status_int == 403
        assert page.html.select_one("#no-access") is not None
        assert page.html.select_one("form#saml-post-form") is None
        assert "SAMLResponse" not in page.text

    # -- single logout ---------------------------------------------------------------

    def two_sessions(self, register, browser, user):
        first, first_row = register(self.sp_class, "sp1", attributes=BASIC)
        second, second_row = register(self.other_class, "sp2", attributes=BASIC)
        first_login = self.sso(browser, first, user)
        second_login = self.sso(browser, second, None)
        assert first.sessions and second.sessions
        return (first, first_row, first_login), (second, second_row, second_login)

    def assert_idp_session_over(self, browser, sp):
        path, request_id = sp.redirect_request(is_passive=True)
        page = browser.follow(browser.get(path))
        assert sp.consume(browser.post_form(page).fields, request_id).status == (
            NO_PASSIVE
        )

    def test_sp_initiated_logout_reaches_the_other_sp(self, register, browser, user):
        (first, _, login), (second, _, _) = self.two_sessions(register, browser, user)
        path, request_id = first.logout_request(
            login.name_id, login.name_id_format, login.session_index
        )
        assert path.startswith("/saml/slo/redirect?")
        end = browser.carry_logout(browser.get(path), [second])
        assert not second.sessions, "the other SP was not sent a LogoutRequest"
        assert end.sp_url is not None, f"{end.page.status}: {end.page.text[:300]}"
        assert end.sp_url.startswith(first.slo_url + "?")
        with pytest.raises(SPRefused):
            first.check_logout_response(end.sp_url, "_another-request")
        assert first.check_logout_response(end.sp_url, request_id) == SUCCESS
        self.assert_idp_session_over(browser, first)

    def test_an_unsigned_logout_request_is_refused(self, register, browser, user):
        """saml-profiles 4.4.4.1: a front-channel LogoutRequest MUST be signed."""
        (first, _, login), (second, _, _) = self.two_sessions(register, browser, user)
        path, _ = first.logout_request(
            login.name_id, login.name_id_format, login.session_index, sign=False
        )
        end = browser.carry_logout(browser.get(path), [second])
        assert end.sp_url is None
        assert end.page.status_int == 400
        assert second.sessions, "an unsigned request logged the other SP out"
        again = self.sso(browser, first, None, is_passive=True)
        assert again.status == SUCCESS, "an unsigned request ended the IdP session"

    def test_idp_initiated_logout_reaches_both_sps(
        self, register, browser, dbsession, user, role
    ):
        (first, _, _), (second, second_row, _) = self.two_sessions(
            register, browser, user
        )
        # A second module, so the final page can name each service.
        other = Module(
            code="m2", display_name_ms="Modul Dua", display_name_en="Module Two"
        )
        role.modules.append(other)
        second_row.module = other
        dbsession.flush()
        form = browser.get("/logout").forms["logout-form"]
        end = browser.carry_logout(form.submit(expect_errors=True), [first, second])
        assert not first.sessions and not second.sessions
        assert end.sp_url is None
        page = end.page
        assert page.status_int == 200, f"{page.status}: {page.text[:300]}"
        assert "Modul Satu" in page.text or "Module One" in page.text
        assert "Modul Dua" in page.text or "Module Two" in page.text
        self.assert_idp_session_over(browser, first)


class TestPysaml2SP(SsoSuite):
    """The contract with pysaml2's ``Saml2Client`` as the SP."""

    sp_class = Pysaml2SP
    other_class = OneLoginSP
