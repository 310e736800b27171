"""An account made by ``idp-admin user add``: its owner chooses image and phrase.

Issue 11 item 4 (c), issue 12 item 2. The operator's account has no image or
phrase; before its owner signs in, the identifier step shows the number's
decoy, exactly as for a number nobody registered (anything else would tell
that the number is registered). At the forced first change the owner
chooses their own image and phrase with the password; from then on the
sign-in pages show those.
"""

from __future__ import annotations

import re

import pytest
import webtest
from sqlalchemy import select
from sqlalchemy.orm import Session

from idp.models import AuditEvent
from idp.services.security_image import decoy
from tests.app import TEST_BASE_URL, TEST_HOST, base_settings, make_app
from tests.cli import NUMBER, add_user, delivered, text_of, user_row
from tests.factories import NEW_PASSWORD

pytestmark = pytest.mark.slow

# The fixtures ini, db and engine (tests/conftest.py): the scratch ini and
# database of idp-admin, so the account is made exactly as an operator makes it.


@pytest.fixture
def site(db, engine, tmp_path):
    """The app on the CLI's database, and the operator-made account's password."""
    result = add_user(db, "--locale", "en")
    assert result.returncode == 0, result.stderr
    (message,) = delivered(db, tmp_path)
    password = re.search(r"Your temporary password: (\S+)", text_of(message))[1]
    settings = {
        **base_settings(tmp_path),
        "sqlalchemy.url": str(engine.url),
        "idp.auto_create_keys": "true",
    }
    return make_app(settings, engine), password


def browser(app, address="192.0.2.10"):
    return webtest.TestApp(
        app,
        extra_environ={
            "HTTP_HOST": TEST_HOST,
            "HTTP_ORIGIN": TEST_BASE_URL,
            "wsgi.url_scheme": "https",
            "REMOTE_ADDR": address,
        },
    )


def image_page(client, number: str):
    form = client.get("/login?lang=en").forms["login-form"]
    form["identifier"] = number
    return form.submit(status=303).follow()


def shown(page) -> tuple[str, str]:
    image = page.html.select_one("#security-image img")["src"]
    phrase = page.html.select_one("#security-phrase").get_text()
    return image.rsplit("/", 1)[-1].removesuffix(".svg"), phrase


def shape(page, number: str) -> str:
    text = page.text.replace(number, "NUMBER")
    text = re.sub(r'name="csrf_token" value="[^"]+"', "", text)
    return re.sub(r"<figure.*?</figure>", "FIGURE", text, flags=re.S)


def to_first_change(client, password: str):
    form = image_page(client, NUMBER).forms["image-form"]
    form["confirm"] = True
    form = form.submit(status=303).follow().forms["password-form"]
    form["password"] = password
    assert form.submit(status=303).location.endswith("/password/new")
    return client.get("/password/new?lang=en")


def test_operator_made_account_shows_its_decoy_like_any_unregistered_number(site):
    app, _ = site
    secret = app.registry.settings["idp.hmac_key"]
    made = image_page(browser(app), NUMBER)
    nobody = image_page(browser(app), "900101-14-5679")
    image, phrase = decoy(secret, "900101145678")
    assert shown(made) == (image.id, phrase)
    assert shape(made, NUMBER) == shape(nobody, "900101-14-5679")
    # The page says honestly what to do without a chosen picture.
    assert "have not chosen a picture and phrase yet" in made.text


def test_first_sign_in_asks_for_image_and_phrase_and_then_shows_them(site, engine):
    app, password = site
    client = browser(app)
    page = to_first_change(client, password)
    form = page.forms["new-password-form"]
    suggested = form["security_phrase"].value
    assert 3 <= len(suggested) <= 40
    assert len(page.html.select("input[name=security_image]")) > 10

    # Without an image: refused, nothing saved, still a first change.
    form["password"] = form["password_confirm"] = NEW_PASSWORD
    form["security_phrase"] = "Kucing saya Oyen"
    refused = form.submit(status=400)
    assert "Choose your security image." in refused.text
    row = user_row(engine)
    assert (row.must_change_password, row.security_image) == (True, None)

    form = refused.forms["new-password-form"]
    form["password"] = form["password_confirm"] = NEW_PASSWORD
    form["security_image"] = "umbrella"
    assert form.submit(status=303).location.endswith("/")
    row = user_row(engine)
    assert (row.must_change_password, row.security_image, row.security_phrase) == (
        False,
        "umbrella",
        "Kucing saya Oyen",
    )
    with Session(engine) as session:
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.event == "security_image.changed")
        ).one()
        assert event.detail == {"changed": ["image", "phrase"], "how": "first sign-in"}

    # Next time, their own choice, not the decoy.
    assert shown(image_page(browser(app), NUMBER)) == ("umbrella", "Kucing saya Oyen")


def test_first_sign_in_keeps_the_suggested_phrase_when_taken(site, engine):
    app, password = site
    form = to_first_change(browser(app), password).forms["new-password-form"]
    suggested = form["security_phrase"].value
    form["password"] = form["password_confirm"] = NEW_PASSWORD
    form["security_image"] = "cat"
    form.submit(status=303)
    assert user_row(engine).security_phrase == suggested
