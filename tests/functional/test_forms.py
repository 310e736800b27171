"""The forms as a person on a phone or a screen reader meets them.

Attributes reach the browser as written (issue 12 item 4); labels say what
is required and what is not, and the server agrees with them (item 5);
every form that comes back with errors names them above the form, linked to
their fields, and every page starts with a skip link (item 6); and the
password step warns before the lock, alike for every number (item 6).
"""

from __future__ import annotations

import datetime as dt
import html as html_module
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import idp
from idp.forms.register import CATEGORIES, NEEDS_INSTITUTION
from idp.services.security_image import decoy
from tests.app import browser, make_app
from tests.factories import PASSWORD, display, make_user
from tests.registration import fill, open_form
from tests.signin import shown, to_password_page

ATTRIBUTE_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
UNKNOWN = "900101-14-5678"


def attributes(page):
    """(tag, name, value) for every attribute of every element on the page."""
    for tag in page.html.find_all(True):
        for name, value in tag.attrs.items():
            for one in value if isinstance(value, list) else [value]:
                yield tag.name, name, one


def assert_attributes_written_once(page, where: str):
    for tag, name, value in attributes(page):
        assert ATTRIBUTE_NAME.match(name), (where, tag, name)
        # Escaped twice, a value arrives wrapped in quotes or holding an
        # entity; quotes inside prose (an alt text quoting a button) are fine.
        quoted = len(value) > 1 and value[0] == value[-1] == '"'
        assert not quoted and "&#" not in value and "&amp;" not in value, (
            where,
            tag,
            name,
            value,
        )


# Item 4: attributes as written

ACCOUNT_FORMS = {
    "/account/password": "account-password-form",
    "/account/security": "account-security-form",
    "/account/email": "account-email-form",
}


def test_phones_get_the_number_pad_for_mykad_and_captcha(captcha_testapp):
    """inputmode reaches the browser as inputmode="numeric", not escaped twice."""
    register_page = captcha_testapp.get("/register?lang=ms")
    forgot_page = captcha_testapp.get("/password/forgot?lang=ms")
    for page, field in (
        (register_page, "mykad"),
        (register_page, "captcha_answer"),
        (forgot_page, "captcha_answer"),
    ):
        control = page.html.select_one(f"input#{field}")
        assert control["inputmode"] == "numeric", field
        assert 'inputmode="numeric"' in page.text
    # The control: a field that takes letters does not ask for the number pad.
    assert not register_page.html.select_one("input#passport_number").get("inputmode")


@pytest.mark.parametrize("lang", ["ms", "en"])
def test_every_attribute_every_form_page_renders_is_written_once(
    captcha_testapp, dbsession, lang
):
    """No attribute of any form page holds a quote or an entity left over."""
    user = make_user(dbsession)
    pages = {
        url: captcha_testapp.get(f"{url}?lang={lang}")
        for url in ("/", "/register", "/login", "/password/forgot", "/help")
    }
    # With errors: the refused registration re-renders every field.
    form = fill(open_form(captcha_testapp, lang), mykad="", institution="")
    pages["register refused"] = form.submit(expect_errors=True)
    pages["password step"] = to_password_page(captcha_testapp, display(user), lang)
    form = pages["password step"].forms["password-form"]
    form["password"] = PASSWORD
    form.submit(status=303)
    # Signed in: Akaun saya's forms, and each of them refused.
    for url, form_id in ACCOUNT_FORMS.items():
        page = captcha_testapp.get(url)
        pages[url] = page
        pages[f"{url} refused"] = page.forms[form_id].submit(status=400)
    for where, page in pages.items():
        assert_attributes_written_once(page, where)


# Item 5: labels that tell the truth


def rendered_fields(page):
    """Each text input and select a person sees for the chosen document."""
    chosen = page.html.select_one('input[name="id_type"][checked]')["value"]
    for control in page.html.select(
        "#register-form input[type=text], #register-form input[type=email], "
        "#register-form input[type=tel], #register-form select"
    ):
        group = control.find_parent(class_="id-group")
        if group is not None and group["data-id-type"] != chosen:
            continue
        if control["name"] == "captcha_answer":
            continue
        label = page.html.select_one(f'label[for="{control["id"]}"]')
        mark = label.select_one(".optional-mark")
        marked_optional = mark is not None and not mark.has_attr("hidden")
        failed = page.html.select_one(f"#{control['id']}-field .field-errors")
        if control.name == "select":
            chosen_option = control.select_one("option[selected]")
            value = chosen_option["value"] if chosen_option else ""
        else:
            value = control.get("value", "")
        required = control.has_attr("required")
        yield control["name"], marked_optional, required, failed, value


@pytest.mark.parametrize("id_type", ["mykad", "passport"])
@pytest.mark.parametrize("category", sorted(CATEGORIES))
def test_labels_mark_required_exactly_what_the_server_requires(
    testapp, category, id_type
):
    """Every field sent empty: an error exactly where the label did not say optional."""
    form = open_form(testapp, "ms")
    form["category"] = category
    form["id_type"] = id_type
    form["security_phrase"] = ""
    page = form.submit(expect_errors=True)
    assert page.status_int == 400
    seen = set()
    for name, marked_optional, required, failed, value in rendered_fields(page):
        seen.add(name)
        assert marked_optional != required, name
        if value:
            assert name in ("category", "email_confirm"), name
        elif marked_optional:
            assert failed is None, f"{name} is marked optional but was refused"
        else:
            assert failed is not None, f"{name} is marked required but was accepted"
        if name in ("mykad", "passport_number"):
            assert "(pilihan)" not in page.html.select_one(f'label[for="{name}"]').text
    assert "institution" in seen
    optional = {field[0]: field[1] for field in rendered_fields(page)}
    assert optional["institution"] == (category not in NEEDS_INSTITUTION)


@pytest.mark.parametrize(
    ("category", "accepted"),
    [("parent", True), ("public", True), ("student", False), ("agency", False)],
)
def test_institution_left_empty_by_category(testapp, category, accepted):
    """A parent registers without one; a student is asked for it, in Malay."""
    form = fill(open_form(testapp, "ms"), category=category, institution="")
    page = form.submit(expect_errors=True)
    assert (page.status_int == 303) is accepted
    if not accepted:
        errors = page.html.select_one("#institution-field .field-errors").get_text()
        assert "Ruangan ini wajib diisi" in errors
        link = page.html.select_one('#form-errors a[href="#institution"]')
        assert link is not None


def test_the_form_marks_the_institution_for_the_category_shown(testapp):
    """Before a category is chosen it is marked required, as for most people."""
    page = testapp.get("/register?lang=ms")
    control = page.html.select_one("input#institution")
    assert control.has_attr("required")
    assert control["data-optional-for"] == "parent public"
    label = page.html.select_one('label[for="institution"] .optional-mark')
    assert label.has_attr("hidden")


# Item 6: the error summary, its links, and the skip link


def summary_links(page) -> list[str]:
    summary = page.html.select_one("[data-error-summary]")
    assert summary is not None, "no error summary"
    assert summary["id"] == "form-errors"
    assert summary["tabindex"] == "-1"
    assert summary["role"] == "alert"
    return [a["href"][1:] for a in summary.select("a[href^='#']")]


def assert_links_reach_their_fields(page, expected: set[str]):
    """Each field with an error has a link whose target holds its control."""
    targets = summary_links(page)
    for target in targets:
        element = page.html.find(id=target)
        assert element is not None, f"#{target} is not on the page"
        control = (
            element
            if element.name in ("input", "select", "textarea")
            else element.select_one("input, select, textarea")
        )
        assert control is not None, target
        assert control.get("aria-invalid") == "true" or element.name == "div", target
    named = {t.removesuffix("-field") for t in targets}
    assert named == expected
    script = page.html.select_one("script[src*='js/form-errors.js']")
    assert script is not None and script.has_attr("defer")


def signed_in(testapp, dbsession, lang="ms"):
    user = make_user(dbsession)
    form = to_password_page(testapp, display(user), lang).forms["password-form"]
    form["password"] = PASSWORD
    assert form.submit().status_int == 303
    return user


@pytest.mark.parametrize("lang", ["ms", "en"])
def test_every_sign_in_step_links_its_errors_to_the_fields(testapp, dbsession, lang):
    user = make_user(dbsession)
    page = testapp.get(f"/login?lang={lang}").forms["login-form"].submit(status=400)
    assert_links_reach_their_fields(page, {"identifier"})
    form = page.forms["login-form"]
    form["identifier"] = display(user)
    image = form.submit(status=303).follow()
    assert image.html.select_one("[data-error-summary]") is None  # the control
    page = image.forms["image-form"].submit(status=400)
    assert_links_reach_their_fields(page, {"confirm"})
    form = page.forms["image-form"]
    form["confirm"] = True
    password_page = form.submit(status=303).follow()
    assert password_page.html.select_one("[data-error-summary]") is None
    page = password_page.forms["password-form"].submit(status=400)
    assert_links_reach_their_fields(page, {"password"})
    form = page.forms["password-form"]
    form["password"] = "not the password at all"
    wrong = form.submit(status=400)
    assert summary_links(wrong) == []
    assert wrong.html.select_one("#form-errors #login-message")


@pytest.mark.parametrize("lang", ["ms", "en"])
def test_forgot_and_account_forms_link_their_errors(testapp, dbsession, lang):
    form = testapp.get(f"/password/forgot?lang={lang}").forms["reset-request-form"]
    form["email"] = "not an email"
    assert_links_reach_their_fields(form.submit(status=400), {"email"})
    signed_in(testapp, dbsession, lang)
    form = testapp.get("/account/password").forms["account-password-form"]
    form["password"], form["password_confirm"] = "one long password", "another one"
    page = form.submit(status=400)
    assert_links_reach_their_fields(page, {"current_password", "password_confirm"})
    form = testapp.get("/account/security").forms["account-security-form"]
    form["security_phrase"] = ""
    page = form.submit(status=400)
    assert_links_reach_their_fields(page, {"security_phrase", "current_password"})
    form = testapp.get("/account/email").forms["account-email-form"]
    form["email"], form["email_confirm"] = "new@example.com.my", "neu@example.com.my"
    page = form.submit(status=400)
    assert_links_reach_their_fields(page, {"email_confirm", "current_password"})
    form = page.forms["account-email-form"]
    form["email"] = "not an email"
    page = form.submit(status=400)
    assert_links_reach_their_fields(page, {"email", "current_password"})


def test_forced_change_and_reset_link_their_errors(testapp, dbsession, mailbox):
    user = make_user(dbsession, must_change_password=True)
    form = to_password_page(testapp, display(user), "ms").forms["password-form"]
    form["password"] = PASSWORD
    change = form.submit(status=303).follow()
    form = change.forms["new-password-form"]
    form["password"] = "teh tarik kurang manis di kedai mamak"
    page = form.submit(status=400)
    assert_links_reach_their_fields(page, {"password_confirm"})
    testapp.reset()
    form = testapp.get("/password/forgot?lang=ms").forms["reset-request-form"]
    form["email"] = user.email
    form.submit(status=303)
    body = mailbox(user.email)[-1].get_body(("plain",)).get_content()
    link = re.search(r"https://\S+(/password/reset/[A-Za-z0-9_-]+)", body)[1]
    verify = testapp.get(link).follow()
    form = verify.forms["reset-verify-form"]
    assert_links_reach_their_fields(form.submit(status=400), {"email", "identifier"})
    form["email"], form["identifier"] = user.email, display(user)
    new = form.submit(status=303).follow()
    form = new.forms["reset-new-form"]
    form["password"] = form["password_confirm"] = "pendek"
    assert_links_reach_their_fields(form.submit(status=400), {"password"})


@pytest.mark.parametrize(
    "url", ["/", "/login", "/register", "/password/forgot", "/help", "/no-such-page"]
)
def test_every_page_starts_with_a_skip_link_to_the_content(testapp, url):
    page = testapp.get(url + "?lang=ms", expect_errors=True)
    first = page.html.body.find(["a", "button", "input", "select", "textarea"])
    assert first["href"] == "#content"
    assert first.get_text(strip=True) == "Langkau ke kandungan utama"
    main = page.html.find(id="content")
    assert main.name == "main" and main["tabindex"] == "-1"


# Item 6: the warning before the lock


def warning(page) -> str:
    block = page.html.select_one("#form-note")
    return block.get_text(" ", strip=True) if block else ""


def fail(client, number: str, times: int, lang: str = "ms"):
    """Type ``times`` wrong passwords on one password page, as a guesser does."""
    page = to_password_page(client, number, lang)
    for attempt in range(times):
        form = page.forms["password-form"]
        form["password"] = f"wrong guess number {attempt}"
        page = form.submit(status=400)
    return page


def shape(page, number: str) -> str:
    """The page without what differs by design: number, image, phrase, tokens."""
    text = page.text.replace(number, "NUMBER")
    text = re.sub(r'name="csrf_token" value="[^"]+"', "", text)
    return re.sub(r"<figure.*?</figure>", "FIGURE", text, flags=re.S)


@pytest.mark.parametrize(
    ("lang", "text"),
    [
        ("ms", "Tinggal 3 percubaan lagi sebelum akaun dikunci selama 15 minit."),
        ("en", "3 attempts left before the account is locked for 15 minutes."),
    ],
)
def test_auth_01_the_lock_warning_is_the_same_for_unknown_numbers(
    app, tm, dbsession, lang, text
):
    """AUTH-01: registered and unknown numbers get one warning on one page."""
    user = make_user(dbsession)
    known, unknown = browser(app, tm, dbsession), browser(app, tm, dbsession)
    # The control: with many tries left, no warning at all.
    assert warning(fail(known, display(user), 6, lang)) == ""
    assert warning(fail(unknown, UNKNOWN, 6, lang)) == ""
    known_page = fail(known, display(user), 1, lang)
    unknown_page = fail(unknown, UNKNOWN, 1, lang)
    assert text in warning(known_page)
    assert warning(known_page) == warning(unknown_page)
    assert known_page.status_int == unknown_page.status_int == 400
    assert shape(known_page, display(user)) == shape(unknown_page, UNKNOWN)
    secret = app.registry.settings["idp.hmac_key"]
    assert shown(unknown_page) == (
        decoy(secret, "900101145678")[0].id,
        decoy(secret, "900101145678")[1],
    )
    # The step itself, opened again, still warns.
    again = to_password_page(known, display(user), lang)
    assert warning(again) == warning(known_page)
    last = fail(unknown, UNKNOWN, 2, lang)
    one = {"ms": "Tinggal 1 percubaan", "en": "1 attempt left"}[lang]
    assert one in warning(last)
    assert warning(last) == warning(fail(known, display(user), 2, lang))


@pytest.fixture(scope="module")
def short_app(settings, db_engine):
    """Four failures in five seconds lock a number: a lock, then its window passes."""
    return make_app({**settings, "ratelimit.login.identifier": "4/5"}, db_engine)


@pytest.mark.slow
def test_auth_01_the_next_locks_length_does_not_tell_who_is_registered(
    short_app, tm, dbsession
):
    """AUTH-01: after a lock the warning names the longer next lock, for every number."""
    user = make_user(dbsession)
    known, unknown = (
        browser(short_app, tm, dbsession),
        browser(short_app, tm, dbsession),
    )
    for client, number in ((known, display(user)), (unknown, UNKNOWN)):
        page = fail(client, number, 4, "en")
        assert page.status_int == 400
        refused = page.forms["password-form"]
        refused["password"] = PASSWORD
        assert refused.submit(status=429)  # the limit is reached: a lock counted
    dbsession.refresh(user)
    assert user.locked_until is not None
    time.sleep(10.2)  # two windows: the failures are forgotten, the lock is not
    known_page = fail(known, display(user), 1, "en")
    unknown_page = fail(unknown, UNKNOWN, 1, "en")
    assert "locked for 1 hour" in warning(known_page)
    assert warning(known_page) == warning(unknown_page)
    assert shape(known_page, display(user)) == shape(unknown_page, UNKNOWN)


# The scripts, run in Chromium on the pages the app rendered

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
STATIC = Path(idp.__file__).resolve().parent / "static"
PROBE = """
var out = {loaded: document.activeElement ? document.activeElement.id : ""};
var category = document.getElementById("category");
var institution = document.getElementById("institution");
function institutionState() {
  var mark = document.querySelector('label[for="institution"] .optional-mark');
  return {required: institution.required, markHidden: mark.hidden};
}
if (institution) {
  out.before = institutionState();
  category.value = "parent";
  category.dispatchEvent(new Event("change"));
  out.parent = institutionState();
  category.value = "educator";
  category.dispatchEvent(new Event("change"));
  out.educator = institutionState();
}
var link = document.querySelector("[data-error-summary] a");
if (link) {
  link.click();
  out.clicked = document.activeElement ? document.activeElement.id : "";
}
document.body.setAttribute("data-probe", JSON.stringify(out));
"""


def in_chromium(page, folder: Path) -> dict:
    """Open ``page`` with its own scripts in headless Chromium; what the probe saw.

    The probe runs after the page's deferred scripts, as a person's first
    action would; its findings come back in the dumped DOM.
    """
    html = re.sub(
        r'src="/static/([^"]+)"',
        lambda m: f'src="{(STATIC / m[1]).as_uri()}"',
        page.text,
    )
    (folder / "probe.js").write_text(PROBE)
    html = html.replace("</body>", '<script src="probe.js" defer></script></body>')
    (folder / "page.html").write_text(html)
    dumped = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--dump-dom",
            # Its own profile: Chromiums started at once (parallel workers,
            # other checkouts) must not share the default one.
            f"--user-data-dir={folder / 'profile'}",
            (folder / "page.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    probe = re.search(r'data-probe="([^"]*)"', dumped)
    assert probe, "the probe did not run"
    return json.loads(html_module.unescape(probe[1]))


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")
def test_in_a_browser_errors_take_the_focus_and_links_reach_the_fields(
    testapp, tmp_path
):
    page = testapp.get("/login?lang=ms").forms["login-form"].submit(status=400)
    seen = in_chromium(page, tmp_path)
    assert seen["loaded"] == "form-errors"
    assert seen["clicked"] == "identifier"
    # The control: a page without errors leaves the focus alone.
    assert in_chromium(testapp.get("/login?lang=ms"), tmp_path)["loaded"] == ""


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")
def test_in_a_browser_the_institution_mark_follows_the_category(testapp, tmp_path):
    form = fill(open_form(testapp, "ms"), category="student", institution="")
    seen = in_chromium(form.submit(status=400), tmp_path)
    assert seen["loaded"] == "form-errors"
    assert seen["clicked"] == "institution"
    assert seen["before"] == {"required": True, "markHidden": True}
    assert seen["parent"] == {"required": False, "markHidden": False}
    assert seen["educator"] == {"required": True, "markHidden": True}


@pytest.mark.postgresql
def test_two_requests_reaching_the_limit_at_once_count_one_lock(app, db_engine):
    """The second of two simultaneous limit reaches makes no second lock."""
    import threading

    from sqlalchemy import delete
    from sqlalchemy.orm import Session

    from idp.db import utcnow
    from idp.models import NumberLock, ThrottleCounter
    from tests.functional.test_lockout import signin_service

    if db_engine.dialect.name != "postgresql":
        pytest.skip("SQLite runs one writer at a time: there is no race to lose")
    number, now = "900101145699", utcnow()
    first, second = Session(db_engine), Session(db_engine)
    try:
        winner = signin_service(app, first, lambda: now)._lock_mark(number, now)
        assert winner is not None
        first.flush()  # the row exists, not yet committed
        seen = []
        racer = threading.Thread(
            target=lambda: seen.append(
                signin_service(app, second, lambda: now)._lock_mark(number, now)
            )
        )
        racer.start()
        racer.join(0.5)
        assert racer.is_alive(), "the second request waits for the first"
        winner.until = now + dt.timedelta(minutes=15)
        first.commit()
        racer.join(10)
        assert seen == [None]
        second.rollback()
        # The control: once that lock has ended, the next reach counts again.
        later = now + dt.timedelta(minutes=16)
        again = signin_service(app, second, lambda: later)._lock_mark(number, later)
        assert again is not None
        second.rollback()
    finally:
        first.rollback()
        second.rollback()
        with db_engine.begin() as conn:
            conn.execute(delete(NumberLock))
            conn.execute(delete(ThrottleCounter))
        first.close()
        second.close()
