"""The browser tests' world: the IdP and a SAML service on 127.0.0.1, Chromium.

:class:`Server` runs a WSGI app under waitress in a thread on a free port of
127.0.0.1. :func:`idp_settings` is development.ini with a temporary SQLite
database, mail written as ``.eml`` files into a temporary folder by the
in-process delivery thread, and the real image captcha, whose answers the
test hook (``captcha.test_answers_dir``) writes where :class:`Browser` reads
them. :class:`ServiceApp` is a pysaml2 SP (``tests/interop/sps.py``) behind
a small web page: a person starts sign-in there and lands back there.

:class:`Browser` drives Chromium through chromedriver, keyboard only: it
reaches every field with Tab, types into it, picks radios with the arrow
keys and submits with Enter, so a form that a keyboard cannot work fails
the test. It runs axe-core on every page state it is asked to check.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import html
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl

import waitress.server
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from tests.interop.sps import Pysaml2SP

E2E_DIR = Path(__file__).resolve().parent
ROOT = E2E_DIR.parent.parent
AXE_JS = E2E_DIR / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
FAILING_IMPACTS = ("serious", "critical")
# Bounds for every wait and key loop: a broken page fails, it never hangs.
PAGE_SECONDS = 15
# How long a keyboard scroll (animated by Chromium) may take to move a region.
SCROLL_SECONDS = 3
MAIL_SECONDS = 20
MAX_TABS = 250
MAX_ARROWS = 80

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # as root in a container there is no user namespace
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-features=Translate,OptimizationHints,MediaRouter",
    "--password-store=basic",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)


def missing_tools() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for path, package in (
        (CHROMIUM, "chromium"),
        (CHROMEDRIVER, "chromium-driver"),
    ):
        if not path.exists():
            return f"{path} is missing (apt-get install {package}; scripts/setup test)"
    if not AXE_JS.exists():
        return f"{AXE_JS} is missing (npm ci in tests/e2e; scripts/setup test)"
    return None


class LazyApp:
    """A WSGI app set after the server knows its port (the app needs its URL)."""

    def __init__(self) -> None:
        self.app = None

    def __call__(self, environ, start_response):
        return self.app(environ, start_response)


class Server:
    """A WSGI app under waitress on 127.0.0.1, in a daemon thread."""

    def __init__(self, app) -> None:
        self.server = waitress.server.create_server(
            app, host="127.0.0.1", port=0, threads=4, clear_untrusted_proxy_headers=True
        )
        self.port = self.server.effective_port
        self.origin = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> Server:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.close()
        self.server.task_dispatcher.shutdown()
        self.thread.join(5)


def idp_settings(base: dict, origin: str, tmp: Path) -> dict:
    """development.ini's settings for an IdP at ``origin`` with state in ``tmp``."""
    host = origin.split("://", 1)[1]
    return {
        **base,
        "idp.base_url": origin,
        "idp.allowed_hosts": host,
        "idp.bcrypt_rounds": "4",
        "idp.certs_dir": str(tmp / "certs"),
        "idp.metadata_dir": str(tmp / "metadata"),
        "idp.auto_create_keys": "true",
        "idp.key_size": "2048",
        "sqlalchemy.url": f"sqlite:///{tmp / 'idp.sqlite'}",
        "mail.backend": "idp.services.delivery.FileSender",
        "mail.directory": str(tmp / "mail"),
        "mail.deliver_in_process": "true",
        "mail.poll_seconds": "1",
        "captcha.enabled": "true",
        "captcha.backend": "image",
        "captcha.test_answers_dir": str(tmp / "captcha"),
        "pyramid.reload_templates": "false",
    }


class Mailbox:
    """The ``.eml`` files the IdP's FileSender writes, read as a person would."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.seen: set[Path] = set()

    def wait_for(
        self, recipient: str, contains: str = ""
    ) -> email.message.EmailMessage:
        """The next unseen message to ``recipient`` whose text has ``contains``.

        Waits for the delivery run; messages passed over stay unseen.
        """
        deadline = time.monotonic() + MAIL_SECONDS
        while time.monotonic() < deadline:
            for path in sorted(self.directory.glob("*.eml")):
                if path in self.seen:
                    continue
                message = email.message_from_bytes(
                    path.read_bytes(), policy=email.policy.default
                )
                if recipient.lower() in str(message["To"]).lower() and (
                    contains in text_of(message)
                ):
                    self.seen.add(path)
                    return message
            time.sleep(0.2)
        raise AssertionError(f"no email to {recipient} within {MAIL_SECONDS} s")


def text_of(message: email.message.EmailMessage) -> str:
    return message.get_body(("plain",)).get_content()


# -- the service provider --------------------------------------------------------


class BrowserSP(Pysaml2SP):
    """The interop pysaml2 SP with its endpoints on a real http origin.

    The interop SP puts its ACS and SLO at ``https://<host>/``; a browser
    needs them where this SP listens, so both are fixed at construction.
    """

    def __init__(self, origin: str, idp_metadata: bytes) -> None:
        self._origin = origin
        super().__init__(f"{origin}/sp", idp_metadata, encryption=False)

    @property
    def acs_url(self) -> str:
        return f"{self._origin}/acs"

    @acs_url.setter
    def acs_url(self, value: str) -> None:
        """The base class sets an https URL; this SP's own stands."""

    @property
    def slo_url(self) -> str:
        return f"{self._origin}/slo"

    @slo_url.setter
    def slo_url(self, value: str) -> None:
        """As for ``acs_url``."""


SP_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>
<body><main><h1>{title}</h1>{body}</main></body></html>"""


@dataclass
class ServiceApp:
    """A module's web page in front of :class:`BrowserSP`.

    ``/start`` sends an AuthnRequest (HTTP-Redirect); ``/acs`` checks the
    Response with pysaml2 and shows who signed in; ``/slo`` answers the
    IdP's LogoutRequest. ``logins`` and ``logouts`` record what it accepted.
    """

    idp_origin: str
    sp: BrowserSP | None = None
    pending: list[str] = field(default_factory=list)
    logins: list = field(default_factory=list)
    logouts: list[str] = field(default_factory=list)

    def __call__(self, environ, start_response):
        path = environ["PATH_INFO"]
        try:
            if path == "/start":
                location, request_id = self.sp.redirect_request(relay_state="/")
                self.pending.append(request_id)
                return self._redirect(start_response, self.idp_origin + location)
            if path == "/acs" and environ["REQUEST_METHOD"] == "POST":
                length = int(environ.get("CONTENT_LENGTH") or 0)
                fields = dict(
                    parse_qsl(environ["wsgi.input"].read(length).decode("ascii"))
                )
                login = self.sp.consume(fields, self.pending[-1])
                self.logins.append(login)
                body = (
                    f'<p id="sp-signed-in">Signed in as '
                    f"{html.escape(login.name_id or '')}</p>"
                )
                return self._page(start_response, "Test service", body)
            if path == "/slo":
                url = f"{self.sp.slo_url}?{environ['QUERY_STRING']}"
                location = self.sp.answer_logout_request(url)
                self.logouts.append(url)
                return self._redirect(start_response, self.idp_origin + location)
        except Exception as exc:  # shown to the test, which fails on it
            start_response("500 SP Error", [("Content-Type", "text/plain")])
            return [f"SP refused: {exc!r}".encode()]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]

    @staticmethod
    def _redirect(start_response, location: str):
        start_response("303 See Other", [("Location", location)])
        return [b""]

    @staticmethod
    def _page(start_response, title: str, body: str):
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [SP_PAGE.format(title=title, body=body).encode()]


# -- the browser -----------------------------------------------------------------


class AccessibilityError(AssertionError):
    """axe-core found a serious or critical violation, or could not run."""


def chromium(profile: Path) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    # Network only on this machine: everything else resolves nowhere.
    options.add_argument("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
    options.add_argument("--lang=ms")
    service = ChromeService(executable_path=str(CHROMEDRIVER))
    return webdriver.Chrome(options=options, service=service)


class Browser:
    """One person at a keyboard, and the checks made on every page they see."""

    def __init__(self, driver, captcha_dir: Path, shots: Callable | None = None):
        self.driver = driver
        self.captcha_dir = captcha_dir
        self.axe_source = AXE_JS.read_text()
        self.shots = shots
        self.checked: list[str] = []

    # -- pages --

    def size(self, width: int, height: int) -> None:
        # The window's outer size includes no chrome in headless mode.
        self.driver.set_window_size(width, height)
        inner = self.driver.execute_script("return [innerWidth, innerHeight]")
        if inner != [width, height]:
            self.driver.set_window_size(2 * width - inner[0], 2 * height - inner[1])

    def get(self, url: str) -> None:
        self.driver.get(url)
        self.wait_loaded()

    def wait_loaded(self) -> None:
        WebDriverWait(self.driver, PAGE_SECONDS).until(
            lambda d: d.execute_script("return document.readyState") == "complete"
        )

    def wait_for(self, css: str):
        return WebDriverWait(self.driver, PAGE_SECONDS).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, css)
        )[0]

    def wait_url(self, predicate: Callable[[str], bool]) -> str:
        try:
            WebDriverWait(self.driver, PAGE_SECONDS).until(
                lambda d: predicate(d.current_url)
            )
        except TimeoutException:
            raise AssertionError(
                f"still at {self.url} after {PAGE_SECONDS} s:\n{self.text()}"
            ) from None
        self.wait_loaded()
        return self.driver.current_url

    @property
    def url(self) -> str:
        return self.driver.current_url

    def text(self, css: str = "body") -> str:
        return self.driver.find_element(By.CSS_SELECTOR, css).text

    def has(self, css: str) -> bool:
        return bool(self.driver.find_elements(By.CSS_SELECTOR, css))

    # -- checks --

    def check(self, state: str) -> None:
        """axe-core (WCAG 2.1 A and AA) on the page as it is now.

        Fails on any serious or critical violation, naming the rule, the
        elements and the page state.
        """
        if not self.driver.execute_script("return typeof axe !== 'undefined'"):
            self.driver.execute_script(self.axe_source)
        result = self.driver.execute_async_script(
            """
            const done = arguments[arguments.length - 1];
            axe.run(document, {runOnly: {type: 'tag', values: arguments[0]},
                               resultTypes: ['violations']})
               .then(r => done(JSON.stringify(r.violations)))
               .catch(e => done(JSON.stringify({error: String(e)})));
            """,
            AXE_TAGS,
        )
        violations = json.loads(result)
        if isinstance(violations, dict):
            raise AccessibilityError(f"axe failed on {state}: {violations['error']}")
        bad = [v for v in violations if v.get("impact") in FAILING_IMPACTS]
        self.checked.append(state)
        if bad:
            lines = [
                f"{v['impact']} {v['id']}: {v['help']} -> "
                + "; ".join(" ".join(node["target"]) for node in v["nodes"][:5])
                for v in bad
            ]
            raise AccessibilityError(
                f"axe on {state} ({self.url}):\n  " + "\n  ".join(lines)
            )

    def shot(self, name: str) -> None:
        if self.shots is not None:
            self.shots(self.driver, name)

    # -- keyboard --

    def _keys(self, *keys: str) -> None:
        ActionChains(self.driver).send_keys(*keys).perform()

    def _active(self) -> dict:
        return self.driver.execute_script(
            """const e = document.activeElement;
               return {tag: e.tagName.toLowerCase(), name: e.name || '',
                       type: e.type || '', value: e.value || '', id: e.id || '',
                       form: e.form ? e.form.id : '', role: e.getAttribute('role') || ''}"""
        )

    def start_keyboard(self) -> None:
        """Put the keyboard at the top of the page, as a freshly loaded page has it."""
        self.driver.execute_script(
            "document.activeElement && document.activeElement.blur();"
            "window.getSelection().removeAllRanges(); window.scrollTo(0, 0);"
        )

    def tab_to(self, matches: Callable[[dict], bool], what: str) -> dict:
        """Press Tab until the focused element ``matches``; at most MAX_TABS."""
        for _ in range(MAX_TABS):
            self._keys(Keys.TAB)
            active = self._active()
            if matches(active):
                return active
        raise AssertionError(f"Tab never reaches {what} on {self.url}")

    def tab_to_field(self, form: str, name: str) -> dict:
        return self.tab_to(
            lambda a: a["form"] == form and a["name"] == name, f"{form} {name}"
        )

    def type_into(self, form: str, name: str, value: str) -> None:
        """Tab to the field, select what it holds, type ``value`` over it."""
        self.tab_to_field(form, name)
        keys = ActionChains(self.driver).key_down(Keys.CONTROL).send_keys("a")
        keys.key_up(Keys.CONTROL).send_keys(Keys.DELETE).perform()
        self._keys(value)
        typed = self.driver.execute_script("return document.activeElement.value")
        assert typed == value, f"{name}: typed {value!r}, the field has {typed!r}"

    def choose_radio(self, form: str, name: str, value: str) -> None:
        """Tab into the radio group, then arrow keys until ``value`` is checked."""
        active = self.tab_to_field(form, name)
        for _ in range(MAX_ARROWS):
            if active["value"] == value:
                break
            self._keys(Keys.ARROW_RIGHT)
            active = self._active()
        else:
            raise AssertionError(f"arrow keys never reach {name}={value}")
        checked = "return document.activeElement.checked === true"
        if not self.driver.execute_script(checked):
            # Tab into a group with nothing checked focuses its first radio
            # without checking it; Space does, as a person would press it.
            self._keys(Keys.SPACE)
        assert self.driver.execute_script(checked), (
            f"{name}={value} has focus but is not checked"
        )

    def choose_option(self, form: str, name: str, value: str) -> None:
        """A select: focus it with Tab, then arrow keys to ``value``."""
        active = self.tab_to_field(form, name)
        for _ in range(MAX_ARROWS):
            if active["value"] == value:
                return
            self._keys(Keys.ARROW_DOWN)
            active = self._active()
        raise AssertionError(f"arrow keys never reach {name}={value}")

    def scroll_region_by_keyboard(self, labelled_by: str) -> int:
        """Tab to the scrollable region named by ``labelled_by``, press the
        right arrow; how far it scrolled."""
        self.start_keyboard()
        self.tab_to(
            lambda a: (
                a["role"] == "region"
                and self.driver.execute_script(
                    "return document.activeElement.getAttribute('aria-labelledby')"
                )
                == labelled_by
            ),
            f"the region {labelled_by}",
        )
        for _ in range(10):
            self._keys(Keys.ARROW_RIGHT)
        # Chromium animates a keyboard scroll: read at once, under load, the
        # region may not have moved yet (0), so wait for it to move.
        try:
            return WebDriverWait(self.driver, SCROLL_SECONDS).until(
                lambda d: d.execute_script("return document.activeElement.scrollLeft")
            )
        except TimeoutException:
            return 0

    def tick(self, form: str, name: str) -> None:
        self.tab_to_field(form, name)
        self._keys(Keys.SPACE)

    def captcha(self, form: str) -> None:
        """Read the challenge on the page; type the answer the test hook wrote."""
        token = self.driver.execute_script(
            "return document.forms[arguments[0]].elements['captcha_token'].value",
            form,
        )
        answer = (
            self.captcha_dir / hashlib.sha256(token.encode()).hexdigest()
        ).read_text()
        self.type_into(form, "captcha_answer", answer)

    def submit(self, form: str) -> None:
        """Tab to the form's submit button and press Enter."""
        old = self.driver.execute_script("return performance.timeOrigin")
        self.tab_to(
            lambda a: a["form"] == form and a["type"] == "submit",
            f"the submit button of {form}",
        )
        self._keys(Keys.ENTER)
        WebDriverWait(self.driver, PAGE_SECONDS).until(
            lambda d: d.execute_script("return performance.timeOrigin") != old
        )
        self.wait_loaded()

    def follow_link(self, href_part: str) -> None:
        """Tab to a link whose address contains ``href_part`` and press Enter."""
        old = self.driver.execute_script("return performance.timeOrigin")
        self.start_keyboard()
        self.tab_to(
            lambda a: (
                a["tag"] == "a"
                and href_part
                in self.driver.execute_script(
                    "return document.activeElement.getAttribute('href')"
                )
            ),
            f"a link to {href_part}",
        )
        self._keys(Keys.ENTER)
        WebDriverWait(self.driver, PAGE_SECONDS).until(
            lambda d: d.execute_script("return performance.timeOrigin") != old
        )
        self.wait_loaded()


def new_profile() -> Path:
    return Path(tempfile.mkdtemp(prefix="idp-e2e-chromium-"))


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def chromium_failure(exc: WebDriverException) -> str:
    return f"Chromium did not start: {exc.msg or exc!r}"
