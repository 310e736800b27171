"""The help page in Chromium: accessible, its pictures and videos load, and it
prints as the PDF manual.

With ``IDP_E2E_HELP_MEDIA`` set (scripts/build-help-media) the printed
manual is written into that folder as ``manual.<lang>.pdf``; otherwise into
a temporary one, and checked all the same.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from idp.views.help import FIGURES, LANGUAGES, VIDEOS, manual_path
from tests.e2e import harness, media
from tests.e2e.conftest import E2E, HELP_MEDIA_ENV

SIZES = [(1280, 800), (360, 740)]

pytestmark = E2E


def fetch(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (127.0.0.1)
        return response.status, response.headers["Content-Type"], response.read()


@pytest.fixture
def page(world, driver):
    driver.delete_all_cookies()
    return harness.Browser(driver, world["captcha_dir"])


@pytest.mark.parametrize("lang", LANGUAGES)
def test_help_page_pictures_videos_and_printed_manual(world, page, lang):
    idp = world["idp"]
    for width, height in SIZES:
        page.size(width, height)
        page.get(f"{idp}/help?lang={lang}")
        page.check(f"help {lang} {width}x{height}")

    # Every picture is the language's own screenshot, and it loads.
    images = page.driver.execute_script(
        """return Array.from(document.querySelectorAll('.help-figure img'), img => {
             img.loading = 'eager';
             return img.getAttribute('src');
           })"""
    )
    assert len(images) == len(FIGURES)
    assert all(src.endswith(f".{lang}.png") for src in images), images
    for src in images:
        status, kind, body = fetch(idp + src)
        assert (status, kind) == (200, "image/png") and body[:4] == b"\x89PNG", src

    # A video per flow, served by idMe, with captions in both languages.
    videos = page.driver.execute_script(
        """return Array.from(document.querySelectorAll('.help-video video'), v => ({
             src: v.querySelector('source').getAttribute('src'),
             tracks: Array.from(v.querySelectorAll('track'),
                                t => [t.srclang, t.getAttribute('src'), t.default])}))"""
    )
    assert len(videos) == len(VIDEOS)
    for video in videos:
        assert video["src"].endswith(f".{lang}.webm")
        status, kind, body = fetch(idp + video["src"])
        assert (status, kind) == (200, "video/webm") and body[:4] == b"\x1aE\xdf\xa3"
        assert [track[0] for track in video["tracks"]] == list(LANGUAGES)
        assert [track[0] for track in video["tracks"] if track[2]] == [lang]
        for _, src, _ in video["tracks"]:
            status, _, body = fetch(idp + src)
            assert status == 200 and body.startswith(b"WEBVTT")

    # The manual: the page printed, linked from the page.
    link = page.driver.execute_script(
        "return document.querySelector('.help-manual a').getAttribute('href')"
    )
    assert link.endswith(manual_path(lang))
    page.size(1280, 800)
    page.get(f"{idp}/help?lang={lang}")
    page.driver.execute_script(
        "document.querySelectorAll('img').forEach(img => img.loading = 'eager')"
    )
    page.driver.execute_async_script(
        """const done = arguments[arguments.length - 1];
           Promise.all(Array.from(document.images, img => img.decode().catch(() => null)))
             .then(() => done(true));"""
    )
    wanted = os.environ.get(HELP_MEDIA_ENV)
    folder = Path(wanted) if wanted else world["tmp"]
    target = folder / Path(manual_path(lang)).name
    media.print_pdf(page.driver, target)
    pdf = target.read_bytes()
    assert pdf.startswith(b"%PDF-")
    assert pdf.count(b"/Type /Page\n") + pdf.count(b"/Type/Page") >= 5


# Pages a person meets off the main paths: signed out home, a mistyped
# address, a used or broken reset link, a service's malformed request, the
# footer's pages.
OTHER_PAGES = [
    ("/", 200),
    ("/no-such-page", 404),
    ("/password/reset/not-a-real-link", None),
    ("/saml/sso/redirect", 400),
    ("/login/not-my-image", None),
    # The footer's pages (issue 12 item 12) and the developers page (item 11).
    ("/privacy", 200),
    ("/security", 200),
    ("/accessibility", 200),
    ("/helpdesk", 200),
    ("/developers", 200),
]


@pytest.mark.parametrize("lang", LANGUAGES)
def test_other_pages_accessible(world, page, lang):
    idp = world["idp"]
    page.get(f"{idp}/?lang={lang}")
    for width, height in SIZES:
        page.size(width, height)
        for path, status in OTHER_PAGES:
            if status is not None:
                try:
                    code = fetch(idp + path)[0]
                except urllib.error.HTTPError as exc:
                    code = exc.code
                assert code == status, path
            page.get(idp + path)
            assert (
                page.driver.execute_script("return document.documentElement.lang")
                == lang
            )
            page.check(f"{path} {lang} {width}x{height}")
