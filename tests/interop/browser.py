"""A browser between the IdP (a WebTest app) and the test SPs.

It does what a person's browser does in the SAML flows: follows the IdP's
redirects, signs in when the IdP asks (three steps: identifier, security
image, password), reads the auto-posting form that carries a Response to an
SP, and carries logout messages between the IdP and the SPs' SLO URLs.
Nothing here judges SAML; the SPs do that.
"""

from __future__ import annotations

import http.cookiejar
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

import webtest

from tests.factories import PASSWORD, display

IDP_ORIGIN = "https://idp.test"
MAX_HOPS = 20
SIGN_IN_FORMS = ("login-form", "image-form", "password-form")


def at_idp(url: str) -> bool:
    parts = urlsplit(url)
    return not parts.netloc or f"{parts.scheme}://{parts.netloc}" == IDP_ORIGIN


def idp_path(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def query_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def is_redirect(response: webtest.TestResponse) -> bool:
    return 300 <= response.status_int < 400


@dataclass(frozen=True)
class PostForm:
    """The IdP's auto-posting form: where it posts and its hidden fields."""

    action: str
    fields: dict[str, str]


@dataclass
class Browser:
    """One person's browser; ``trail`` lists every IdP path it requested."""

    app: webtest.TestApp
    trail: list[str] = field(default_factory=list)

    def get(self, path: str, **kwargs) -> webtest.TestResponse:
        self.trail.append(path)
        return self.app.get(path, expect_errors=True, **kwargs)

    def cross_site_post(
        self, path: str, fields: dict[str, str], origin: str
    ) -> webtest.TestResponse:
        """A form an SP's page posts to the IdP.

        The IdP's cookie is SameSite=Lax, so a browser does not send it on a
        cross-site POST; cookies the IdP sets in its answer are kept.
        """
        self.trail.append(path)
        kept = self.app.cookiejar
        self.app.cookiejar = http.cookiejar.CookieJar()
        try:
            response = self.app.post(
                path,
                fields,
                extra_environ={"HTTP_ORIGIN": origin},
                expect_errors=True,
            )
            new = list(self.app.cookiejar)
        finally:
            self.app.cookiejar = kept
        for cookie in new:
            kept.set_cookie(cookie)
        return response

    def follow(
        self, response: webtest.TestResponse, *, user=None, password: str = PASSWORD
    ) -> webtest.TestResponse:
        """Follow the IdP's redirects, signing in as ``user`` if asked.

        Stops at a redirect away from the IdP (to an SP) or at any page that
        is not a sign-in step (or is one and no user was given).
        """
        for _ in range(MAX_HOPS):
            if is_redirect(response):
                location = response.headers["Location"]
                if not at_idp(location):
                    return response
                response = self.get(idp_path(location))
                continue
            form = self._sign_in_form(response) if user is not None else None
            if form is None:
                return response
            if form.id == "login-form":
                form["identifier"] = display(user)
            elif form.id == "image-form":
                form["confirm"] = True
            else:
                form["password"] = password
            self.trail.append(form.action)
            response = form.submit(expect_errors=True)
        raise AssertionError(f"more than {MAX_HOPS} hops: {self.trail[-MAX_HOPS:]}")

    @staticmethod
    def _sign_in_form(response: webtest.TestResponse):
        if response.status_int != 200 or "html" not in (response.content_type or ""):
            return None
        forms = {form.id: form for form in response.forms.values()}
        return next((forms[name] for name in SIGN_IN_FORMS if name in forms), None)

    def sign_in_pages(self) -> list[str]:
        """The sign-in pages among the paths requested (``/login...``)."""
        return [path for path in self.trail if urlsplit(path).path.startswith("/login")]

    def sign_in(self, user, password: str = PASSWORD) -> webtest.TestResponse:
        return self.follow(self.get("/login"), user=user, password=password)

    @staticmethod
    def post_form(
        response: webtest.TestResponse, form_id: str = "saml-post-form"
    ) -> PostForm:
        """The form that would carry a SAML message to an SP, or AssertionError.

        ``saml-post-form`` carries a Response the IdP chose to send;
        ``saml-error-form`` the error Response on a refusal page.
        """
        form = response.html.select_one(f"form#{form_id}")
        assert form is not None, (
            f"no {form_id} in the {response.status} page "
            f"{response.request.path_qs}: {response.text[:500]}"
        )
        assert (form.get("method") or "").lower() == "post"
        fields = {
            element["name"]: element.get("value", "")
            for element in form.select("input[type=hidden][name]")
        }
        return PostForm(form["action"], fields)

    def carry_logout(self, response: webtest.TestResponse, sps) -> LogoutEnd:
        """Carry a single logout between the IdP and ``sps`` until it ends.

        Does what a browser does on the way: follows the IdP's redirects,
        loads the frames of its pages and their ``<meta http-equiv=refresh>``.
        A LogoutRequest arriving at one of ``sps`` is answered by that SP and
        the answer taken back to the IdP. Ends when the IdP sends the browser
        to an SP with anything else (the LogoutResponse for the SP that
        started), or shows a page that goes nowhere.
        """
        by_slo = {sp.slo_url: sp for sp in sps}
        for _ in range(MAX_HOPS):
            response = self.follow(response)
            if is_redirect(response):
                location = response.headers["Location"]
                answered = self._answer_at_sp(location, by_slo)
                if answered is None:
                    return LogoutEnd(response, location)
                response = answered
                continue
            if response.status_int != 200 or "html" not in (
                response.content_type or ""
            ):
                return LogoutEnd(response, None)
            for frame in response.html.select("iframe[src]"):
                self._load_frame(frame["src"], by_slo)
            refresh = meta_refresh(response)
            if refresh is None:
                return LogoutEnd(response, None)
            if refresh == "":
                response = self.get(response.request.path_qs)
            elif at_idp(refresh):
                response = self.get(idp_path(refresh))
            else:
                return LogoutEnd(response, refresh)
        raise AssertionError(f"more than {MAX_HOPS} hops: {self.trail[-MAX_HOPS:]}")

    def _answer_at_sp(self, location: str, by_slo) -> webtest.TestResponse | None:
        """An SP answers the LogoutRequest at ``location``; None if there is none."""
        parts = urlsplit(location)
        sp = by_slo.get(f"{parts.scheme}://{parts.netloc}{parts.path}")
        if sp is None or "SAMLRequest" not in query_of(location):
            return None
        return self.get(sp.answer_logout_request(location))

    def _load_frame(self, src: str, by_slo) -> webtest.TestResponse:
        """A frame of an IdP page: its own trip to an SP and back."""
        response = self.follow(self.get(idp_path(src)))
        while is_redirect(response):
            answered = self._answer_at_sp(response.headers["Location"], by_slo)
            if answered is None:
                break
            response = self.follow(answered)
        return response


@dataclass(frozen=True)
class LogoutEnd:
    """Where a single logout left the browser.

    ``page`` is the last response from the IdP; ``sp_url`` the address at an
    SP it finally sent the browser to (by redirect or refresh), if any.
    """

    page: webtest.TestResponse
    sp_url: str | None


def meta_refresh(response: webtest.TestResponse) -> str | None:
    """The target of a page's refresh: None without one, "" for the page itself."""
    for meta in response.html.select("meta[http-equiv]"):
        if meta["http-equiv"].lower() != "refresh":
            continue
        _, _, target = (meta.get("content") or "").partition(";")
        target = target.strip()
        if target.lower().startswith("url="):
            target = target[4:].strip().strip("'\"")
        return target
    return None
