"""The OPS-09 fuzzer: mutated requests, bytes as-is, at a real waitress.

``run()`` builds a scratch world (SQLite in a temporary folder, the test
suite's development-like settings with the captcha on, rate limits out of
the way so requests reach deep code, two SPs, one user), serves the app with
the shipped waitress settings on 127.0.0.1, and sends ``count`` requests
from a few client threads, each with its own seeded generator:

- SAML: AuthnRequests and LogoutRequests over both bindings of both
  endpoints, valid-looking (base64 of deflated XML, some signed with the
  SP's key after mutation, so the mutation is what the IdP reads) with
  mutated dates, IDs and attributes, inserted markup, truncations, flipped
  bits, random bytes, broken base64 and deflate; RelayState, SigAlg and
  Signature mutated too;
- forms: every field of sign-in, registration, reset, forced change and
  "Akaun saya", with boundary lengths, CR/LF, NUL, RTL, emoji and bad UTF-8,
  urlencoded (escaped or raw) or multipart, with live CSRF tokens and
  sessions (anonymous and signed in) and a solved captcha;
- captcha media: live and mutated tokens and locales;
- raw: bad UTF-8 and overlong sequences in the path, query, cookies, other
  headers and body, odd methods and content types, chunked bodies.

Every answer is counted by status; any status >= 500, any connection closed
without an answer, and any body containing "Traceback" is a finding, kept
with the request that caused it, and so is a page that echoes a sent
``<script>`` unescaped. Bounded by ``count`` and ``max_seconds``;
nothing leaves 127.0.0.1. ``bench/fuzz.py`` runs it by hand; a small run is
part of the test suite (tests/functional/test_fuzz.py).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import logging
import random
import re
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote_from_bytes

import webtest
from sqlalchemy.orm import Session

from idp.models import Module, Role
from idp.saml.registry import import_sp
from tests.factories import PASSWORD, make_user
from tests.saml_metadata import make_sp_metadata, sp_key_files
from tests.saml_pages import response_of
from tests.saml_requests import (
    RSA_SHA1,
    RSA_SHA256,
    SAML,
    authn_request,
    logout_request,
    sign_xml,
)
from tests.served import WireProxy, exchange, serve
from tests.signin import sign_in

HOST = "idp.test"
BASE = f"https://{HOST}"
SP1 = "https://sp.example.org/sp"
SP2 = "https://signed.example.org/sp"
RATE_LIMITS = (
    "login.identifier",
    "login.address",
    "login.prefix",
    "login.global",
    "login.locks",
    "reset.address",
    "reset.email",
    "register.address",
    "captcha.address",
)
REFRESH_EVERY = 300  # requests per worker between fresh sessions
# Sent in values (SPECIAL below); a page that shows it unescaped echoes raw input.
RAW_ECHO = b"<script>alert(1)</script>"

# --------------------------------------------------------------------------
# What gets put where

BAD_UTF8 = (
    b"\xff",
    b"\xfe\xff",
    b"\x80",
    b"\xc3",  # truncated two-byte sequence
    b"\xe3\x80",  # truncated three-byte sequence
    b"\xc0\xaf",  # overlong "/"
    b"\xc0\x80",  # overlong NUL
    b"\xe0\x80\xaf",  # overlong "/", three bytes
    b"\xf0\x80\x80\xaf",  # overlong "/", four bytes
    b"\xed\xa0\x80",  # a UTF-16 surrogate
    b"\xf4\x90\x80\x80",  # beyond U+10FFFF
    b"\xf8\x88\x80\x80\x80",  # a five-byte form
)
SPECIAL = (
    b"",
    b"\r\n",
    b"\n",
    b"\r",
    b"\x00",
    b"\t",
    "\u202e".encode(),  # right-to-left override
    "\u200f\u202b".encode(),
    "\ufeff".encode(),
    "😀".encode(),
    "👩🏽‍🏫".encode(),
    "。".encode(),
    "ǅ".encode(),
    "İ".encode(),
    "９".encode(),
    b"%",
    b"%%",
    b"%ZZ",
    b"%00",
    b"&",
    b"=",
    b"+",
    b"'\"<>",
    b"<script>alert(1)</script>",
    b"\\",
    b"../../",
    b"//evil.example/",
    b"javascript:alert(1)",
    b"${7*7}{{7*7}}",
    b"\x1b[31m",
    b"\x7f",
)
LENGTHS = (0, 1, 2, 11, 12, 13, 72, 73, 255, 256, 257, 1024, 1025, 4096, 70000)
DATES = (
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "0000-01-01T00:00:00Z",
    "-0001-01-01T00:00:00Z",
    "99999-01-01T00:00:00Z",
    "2026-02-30T00:00:00Z",
    "2026-13-01T00:00:00Z",
    "2026-12-04T24:00:00Z",
    "2026-12-04T24:00:01Z",
    "2026-12-04T23:59:60Z",
    "2026-12-04T00:00:00+14:01",
    "2026-12-04T00:00:00+99:99",
    "2026-12-04T00:00:00." + "9" * 200 + "Z",
    "2026-12-04",
    "20261204T000000Z",
    "２０２６-12-04T00:00:00Z",
    "",
    " ",
    "now",
    "1e9999",
)
ATTRIBUTES = (
    "ID",
    "Version",
    "IssueInstant",
    "Destination",
    "AssertionConsumerServiceURL",
    "AssertionConsumerServiceIndex",
    "ProtocolBinding",
    "ForceAuthn",
    "IsPassive",
    "Format",
    "AllowCreate",
    "SPNameQualifier",
    "Comparison",
    "NotOnOrAfter",
    "Reason",
)
MARKUP = (
    "<!-- c -->",
    "<?pi x?>",
    "<saml:Issuer>" + SP2 + "</saml:Issuer>",
    "<samlp:Extensions><x/></samlp:Extensions>",
    '<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="/etc/passwd"/>',
    "<ds:Signature xmlns:ds='http://www.w3.org/2000/09/xmldsig#'/>",
    "&lt;&amp;",
    "]]>",
    "<![CDATA[x]]>",
)
PROLOGUES = (
    '<?xml version="1.0" encoding="ISO-8859-1"?>',
    '<?xml version="1.0" encoding="UTF-16"?>',
    '<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>',
    '<!DOCTYPE x SYSTEM "http://127.0.0.1:1/x.dtd">',
    "\ufeff",
)
SIG_ALGS = (
    RSA_SHA256,
    RSA_SHA1,
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
    "http://www.w3.org/2001/04/xmldsig-more#hmac-sha256",
    "http://www.w3.org/2000/09/xmldsig#dsa-sha1",
    "urn:none",
)


def _word(rng: random.Random, *, utf8: bool = False) -> bytes:
    """A value with something hostile in it (``utf8``: but valid UTF-8)."""
    if utf8:
        word = _word(rng)
        while not _is_utf8(word):
            word = _word(rng)
        return word
    pick = rng.random()
    if pick < 0.3:
        return rng.choice(BAD_UTF8) * rng.choice((1, 1, 2, 50))
    if pick < 0.55:
        return rng.choice(SPECIAL)
    if pick < 0.75:
        unit = rng.choice((b"a", b"9", "é".encode(), "😀".encode(), b"\xff"))
        return unit * rng.choice(LENGTHS)
    if pick < 0.9:
        return bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 64)))
    return b"abc" + rng.choice(SPECIAL + BAD_UTF8) + b"def"


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _mutate_text(rng: random.Random, value: bytes) -> bytes:
    """``value`` with a hostile word replacing, prefixing, suffixing or inside it.

    Mostly valid UTF-8, so the value gets past the edge to the form's checks.
    """
    word = _word(rng, utf8=rng.random() < 0.8)
    how = rng.randrange(5)
    if how == 0 or not value:
        return word
    if how == 1:
        return word + value
    if how == 2:
        return value + word
    if how == 3:
        cut = rng.randrange(len(value) + 1)
        return value[:cut] + word + value[cut:]
    return value[: rng.randrange(len(value) + 1)]


def _escape(rng: random.Random, value: bytes) -> bytes:
    """Percent-encoded, or now and then raw bytes on the wire."""
    if rng.random() < 0.1:
        return value.replace(b"&", b"%26").replace(b" ", b"+")
    return quote_from_bytes(value, safe="").encode("ascii")


def _urlencoded(rng: random.Random, fields: list[tuple[bytes, bytes]]) -> bytes:
    return b"&".join(_escape(rng, k) + b"=" + _escape(rng, v) for k, v in fields)


def _multipart(rng: random.Random, fields: list[tuple[bytes, bytes]]) -> tuple:
    boundary = b"fuzz" + str(rng.getrandbits(40)).encode()
    parts = []
    for name, value in fields:
        disposition = b'Content-Disposition: form-data; name="' + name + b'"'
        if rng.random() < 0.1:
            disposition += b'; filename="' + _word(rng) + b'"'
        parts.append(b"--" + boundary + b"\r\n" + disposition + b"\r\n\r\n" + value)
    body = b"\r\n".join(parts) + b"\r\n--" + boundary + b"--\r\n"
    if rng.random() < 0.15:
        body = body[: rng.randrange(len(body))]
    return b"multipart/form-data; boundary=" + boundary, body


# --------------------------------------------------------------------------
# The world and the sessions the requests run in


@dataclass
class Client:
    """One worker's sessions: anonymous and signed in, with their tokens."""

    anonymous: str = ""
    anonymous_csrf: str = ""
    signed_in: str = ""
    signed_in_csrf: str = ""
    captcha_token: str = ""
    captcha_answer: str = ""
    name_id: str = "nobody"
    name_id_format: str = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient"
    session_index: str | None = None
    identifier: str = ""


def _browser(port: int) -> webtest.TestApp:
    return webtest.TestApp(
        WireProxy(port),
        extra_environ={
            "HTTP_HOST": HOST,
            "HTTP_ORIGIN": BASE,
            "wsgi.url_scheme": "https",
        },
    )


def _csrf(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def _fresh_client(port: int, identifier: str, solver) -> Client:
    """Sessions made the way a browser makes them, over the wire."""
    client = Client(identifier=identifier)
    anonymous = _browser(port)
    page = anonymous.get("/register").text
    client.anonymous = anonymous.cookies["idp_session"]
    client.anonymous_csrf = _csrf(page)
    client.captcha_token = re.search(
        r'name="captcha_token" value="([^"]+)"', page
    ).group(1)
    client.captcha_answer = solver.answer(client.captcha_token)
    browser = _browser(port)
    sign_in(browser, SimpleNamespace(identifier=identifier))
    page = browser.get("/").text
    client.signed_in = browser.cookies["idp_session"]
    client.signed_in_csrf = _csrf(browser.get("/account/password").text)
    del page
    query = _redirect_query_for(authn_request(issuer=SP1, acs_url=_acs(SP1)))
    root = response_of(browser.get("/saml/sso/redirect?" + query))
    name_id = next(root.iter(f"{{{SAML}}}NameID"))
    statement = next(root.iter(f"{{{SAML}}}AuthnStatement"))
    client.name_id = name_id.text
    client.name_id_format = name_id.get("Format")
    client.session_index = statement.get("SessionIndex")
    return client


def _acs(entity_id: str) -> str:
    return entity_id.rsplit("/", 1)[0] + "/acs"


def _deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def _redirect_query_for(xml: str) -> str:
    return "SAMLRequest=" + quote_from_bytes(
        base64.b64encode(_deflate(xml.encode())), safe=""
    )


def build_world(folder: Path):
    """The app on a scratch SQLite database, with two SPs and one user."""
    from idp.config import configure
    from idp.db import make_engine
    from idp.saml import keys as keystore
    from tests.app import base_settings
    from tests.conftest import upgrade

    url = f"sqlite:///{folder / 'fuzz.sqlite'}"
    engine = make_engine({"sqlalchemy.url": url})
    upgrade(engine)
    keystore.generate(folder / "certs", HOST, key_size=2048)
    # The test suite's development-like settings, with the captcha on (the
    # fuzzer solves it) and every rate limit out of reach.
    settings = base_settings(folder)
    settings.update(
        {
            "captcha.enabled": "true",
            "sqlalchemy.url": url,
            "idp.dbengine": engine,
            **{f"ratelimit.{name}": "1000000/1" for name in RATE_LIMITS},
        }
    )
    app = configure(settings).make_wsgi_app()
    with Session(engine) as session, session.begin():
        module = Module(code="emis", display_name_ms="EMIS", display_name_en="EMIS")
        role = Role(name="guru", display_name_ms="Guru", display_name_en="Teacher")
        role.modules.append(module)
        session.add_all([module, role])
        session.flush()
        for entity_id, signed in ((SP1, False), (SP2, True)):
            sp = import_sp(
                session,
                make_sp_metadata(entity_id, signed_requests=signed),
                module_code="emis",
            )
            sp.attributes_released = ["uid", "displayName", "mail", "isMemberOf"]
        user = make_user(session, password=PASSWORD)
        user.roles.append(role)
        identifier = user.identifier
    return app, engine, identifier


# --------------------------------------------------------------------------
# Requests


@dataclass
class Case:
    kind: str
    raw: bytes


def _request(
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes = b"",
) -> bytes:
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: " + HOST.encode()]
    lines += [name + b": " + value for name, value in headers]
    if body or method == b"POST":
        lines.append(b"Content-Length: " + str(len(body)).encode())
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _cookie_headers(rng: random.Random, client: Client) -> tuple[list, str]:
    """A Cookie header for no, the anonymous or the signed-in session."""
    pick = rng.random()
    if pick < 0.2:
        return [], ""
    if pick < 0.55:
        value, csrf = client.anonymous, client.anonymous_csrf
    else:
        value, csrf = client.signed_in, client.signed_in_csrf
    cookie = b"idp_session=" + value.encode()
    if rng.random() < 0.1:
        cookie += b"; idp_lang=" + rng.choice((b"en", b"ms", _word(rng)))
    return [(b"Cookie", cookie)], csrf


def _common_headers(rng: random.Random) -> list[tuple[bytes, bytes]]:
    headers = [(b"Origin", BASE.encode())]
    if rng.random() < 0.1:
        headers = [
            (b"Origin", rng.choice((b"null", _word(rng), b"https://evil.example")))
        ]
    if rng.random() < 0.2:
        headers.append((b"Accept-Language", rng.choice((b"en", b"ms-MY", _word(rng)))))
    return headers


def _xml_message(rng: random.Random, client: Client, slo: bool, binding: str) -> str:
    endpoint = f"{BASE}/saml/{'slo' if slo else 'sso'}/{binding}"
    issuer = rng.choice((SP1, SP1, SP2))
    if slo:
        return logout_request(
            name_id=client.name_id,
            name_id_format=client.name_id_format,
            session_index=client.session_index,
            issuer=issuer,
            destination=endpoint,
        )
    return authn_request(
        issuer=issuer,
        destination=endpoint,
        acs_url=_acs(issuer),
        force_authn=rng.choice((None, True, False)),
        is_passive=rng.choice((None, None, True)),
        name_id_format=rng.choice(
            (None, "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent")
        ),
        allow_create=rng.choice((None, True)),
    )


def _mutate_xml(rng: random.Random, xml: str) -> bytes:
    text = xml
    for _ in range(rng.randrange(1, 4)):
        how = rng.randrange(8)
        if how == 0:
            date = rng.choice(DATES)
            text = re.sub(
                r'IssueInstant="[^"]*"',
                lambda _, d=date: f'IssueInstant="{d}"',
                text,
                count=1,
            )
        elif how == 1:
            name = rng.choice(ATTRIBUTES)
            value = _word(rng).decode("utf-8", "replace").replace('"', "&quot;")
            if f'{name}="' in text:
                text = re.sub(
                    f'{name}="[^"]*"',
                    lambda _, n=name, v=value: f'{n}="{v}"',
                    text,
                    count=1,
                )
            else:
                text = text.replace(" ID=", f' {name}="{value}" ID=', 1)
        elif how == 2:
            cut = text.find(">") + 1
            text = text[:cut] + rng.choice(MARKUP) + text[cut:]
        elif how == 3:
            text = rng.choice(PROLOGUES) + text
        elif how == 4:
            text = text.replace(SP1, rng.choice((SP2, "", SP1 + " ", SP1.upper())), 1)
        elif how == 5:
            new_id = rng.choice(("", "x" * 5000, "1abc", "_a b"))
            text = re.sub(r'ID="[^"]*"', lambda _, i=new_id: f'ID="{i}"', text, count=1)
        else:
            # Left for the byte-level mutations below.
            break
    data = text.encode("utf-8")
    pick = rng.random()
    if pick < 0.1:
        data = data[: rng.randrange(len(data))]
    elif pick < 0.2:
        flipped = bytearray(data)
        for _ in range(rng.randrange(1, 8)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        data = bytes(flipped)
    elif pick < 0.25:
        data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 512)))
    elif pick < 0.35:
        cut = rng.randrange(len(data))
        data = data[:cut] + rng.choice(BAD_UTF8) + data[cut:]
    return data


def _encode_saml(rng: random.Random, data: bytes, deflate: bool) -> bytes:
    """base64 (of deflated bytes for Redirect), sometimes broken on purpose."""
    if deflate:
        pick = rng.random()
        if pick < 0.85:
            data = _deflate(data)
        elif pick < 0.9:
            data = zlib.compress(data)  # with a zlib header: not raw deflate
        elif pick < 0.95:
            deflated = _deflate(data)
            data = deflated[: rng.randrange(len(deflated) + 1)]
    encoded = base64.b64encode(data)
    pick = rng.random()
    if pick < 0.05:
        encoded = encoded.rstrip(b"=")
    elif pick < 0.1:
        encoded = base64.urlsafe_b64encode(data)
    elif pick < 0.15:
        cut = rng.randrange(len(encoded) + 1)
        encoded = encoded[:cut] + _word(rng) + encoded[cut:]
    elif pick < 0.18:
        encoded = _word(rng)
    return encoded


def saml_case(rng: random.Random, client: Client) -> Case:
    slo = rng.random() < 0.4
    binding = rng.choice(("redirect", "post"))
    xml = _xml_message(rng, client, slo, binding)
    data = _mutate_xml(rng, xml) if rng.random() < 0.9 else xml.encode()
    sign = slo or rng.random() < 0.3
    if sign and binding == "post" and rng.random() < 0.8:
        # A message mutated beyond what xmlsec can sign goes unsigned.
        with contextlib.suppress(Exception):
            data = sign_xml(data)
    field_name = (
        b"SAMLRequest"
        if rng.random() < 0.95
        else rng.choice((b"SAMLResponse", b"samlrequest", _word(rng)))
    )
    params = [(field_name, _encode_saml(rng, data, binding == "redirect"))]
    if rng.random() < 0.5:
        relay = rng.choice((b"r1", _word(rng), b"x" * 1025, b"https://evil.example/"))
        params.append((b"RelayState", relay))
    if rng.random() < 0.05:
        params.append(params[0])  # the message twice
    headers, _ = _cookie_headers(rng, client)
    headers += _common_headers(rng)
    path = f"/saml/{'slo' if slo else 'sso'}/{binding}".encode()
    if binding == "redirect":
        query = _urlencoded(rng, params)
        if sign:
            query = _signed_query(rng, query)
        return Case("saml", _request(b"GET", path + b"?" + query, headers))
    body = _urlencoded(rng, params)
    headers.append((b"Content-Type", b"application/x-www-form-urlencoded"))
    return Case("saml", _request(b"POST", path, headers, body))


def _signed_query(rng: random.Random, query: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    sig_alg = rng.choice((RSA_SHA256,) * 4 + SIG_ALGS)
    query += b"&SigAlg=" + quote_from_bytes(sig_alg.encode(), safe="").encode()
    key = serialization.load_pem_private_key(Path(sp_key_files()[0]).read_bytes(), None)
    algorithm = hashes.SHA1() if sig_alg == RSA_SHA1 else hashes.SHA256()  # noqa: S303 (an attack)
    signature = base64.b64encode(key.sign(query, padding.PKCS1v15(), algorithm))
    pick = rng.random()
    if pick < 0.1:
        signature = _word(rng)
    elif pick < 0.2:
        signature = signature[: rng.randrange(len(signature) + 1)]
    query += b"&Signature=" + quote_from_bytes(signature, safe="").encode()
    if rng.random() < 0.1:
        cut = rng.randrange(len(query))
        query = query[:cut] + _escape(rng, _word(rng)) + query[cut:]
    return query


PASSWORD_BYTES = PASSWORD.encode()
NEW_PASSWORD = b"teh tarik kurang manis sekali"


def _forms(client: Client) -> dict[str, tuple[bytes, dict[bytes, bytes]]]:
    """Each form: its path and a valid filling."""
    captcha = {
        b"captcha_token": client.captcha_token.encode(),
        b"captcha_answer": client.captcha_answer.encode(),
    }
    identifier = client.identifier.encode()
    return {
        "login": (
            b"/login",
            {b"identifier": identifier, b"country": b"", b"next": b"/help"},
        ),
        "login-image": (b"/login/image", {b"confirm": b"y"}),
        "login-password": (b"/login/password", {b"password": PASSWORD_BYTES}),
        "login-not-mine": (b"/login/not-my-image", {}),
        "register": (
            b"/register",
            {
                b"category": b"student",
                b"id_type": b"mykad",
                b"mykad": b"080512-14-9999",
                b"passport_country": b"",
                b"passport_number": b"",
                b"full_name": b"Nur Aisyah binti Ahmad",
                b"email": b"murid@example.com.my",
                b"email_confirm": b"murid@example.com.my",
                b"phone": b"012-345 6789",
                b"institution": b"SK Taman Melati",
                b"security_image": b"cat",
                b"security_phrase": b"Nasi lemak kegemaran saya",
                b"action": b"register",
                **captcha,
            },
        ),
        "reset-request": (
            b"/password/forgot",
            {b"email": b"murid@example.com.my", **captcha},
        ),
        "reset-verify": (
            b"/password/reset",
            {
                b"email": b"murid@example.com.my",
                b"identifier": identifier,
                b"country": b"",
            },
        ),
        "reset-new": (
            b"/password/reset/new",
            {b"password": NEW_PASSWORD, b"password_confirm": NEW_PASSWORD, **captcha},
        ),
        "reset-link": (b"/password/reset/" + b"A" * 43, {}),
        "password-new": (
            b"/password/new",
            {b"password": NEW_PASSWORD, b"password_confirm": NEW_PASSWORD},
        ),
        "account-password": (
            b"/account/password",
            {
                b"current_password": b"wrong " + PASSWORD_BYTES,
                b"password": NEW_PASSWORD,
                b"password_confirm": NEW_PASSWORD,
            },
        ),
        "account-security": (
            b"/account/security",
            {
                b"current_password": b"wrong " + PASSWORD_BYTES,
                b"security_image": b"cat",
                b"security_phrase": b"Nasi lemak kegemaran saya",
            },
        ),
        "account-sessions": (b"/account/sessions", {b"session": b"x"}),
        "login-code": (b"/login/code", {b"code": b"123456"}),
        "account-two-step-setup": (
            b"/account/two-step/setup",
            {b"step": b"password", b"current_password": b"wrong " + PASSWORD_BYTES},
        ),
        "account-two-step-off": (
            b"/account/two-step/off",
            {b"current_password": b"wrong " + PASSWORD_BYTES, b"code": b"123456"},
        ),
        "sso-continue": (b"/saml/sso/continue", {b"r": b"x"}),
    }


def form_case(rng: random.Random, client: Client) -> Case:
    forms = _forms(client)
    name = rng.choice(sorted(forms))
    path, valid = forms[name]
    headers, csrf = _cookie_headers(rng, client)
    fields = dict(valid)
    if rng.random() < 0.9:
        fields[b"csrf_token"] = csrf.encode()
    names = sorted(fields) or [b"x"]
    for _ in range(rng.randrange(1, 4)):
        target = rng.choice([*names, _word(rng)])
        fields[target] = _mutate_text(rng, fields.get(target, b""))
    pairs = list(fields.items())
    rng.shuffle(pairs)
    headers += _common_headers(rng)
    if rng.random() < 0.8:
        content_type = b"application/x-www-form-urlencoded"
        pick = rng.random()
        if pick < 0.05:
            content_type += b"; charset=" + rng.choice(
                (b"latin-1", b"utf-16", _word(rng))
            )
        body = _urlencoded(rng, pairs)
    else:
        content_type, body = _multipart(rng, pairs)
    headers.append((b"Content-Type", content_type))
    if rng.random() < 0.1:
        # The same form fetched with GET, its fields in the query.
        return Case("form", _request(b"GET", path + b"?" + body[:4000], headers[:-1]))
    return Case("form", _request(b"POST", path, headers, body))


def captcha_case(rng: random.Random, client: Client) -> Case:
    token = client.captcha_token.encode()
    if rng.random() < 0.7:
        token = _escape(rng, _mutate_text(rng, token))
    if rng.random() < 0.5:
        target = b"/captcha/" + token + b".png"
    else:
        locale = rng.choice((b"ms", b"en", b"fr", _escape(rng, _word(rng))))
        target = b"/captcha/" + token + b"." + locale + b".wav"
    if rng.random() < 0.2:
        target += b"?" + _escape(rng, _word(rng)) + b"=" + _escape(rng, _word(rng))
    headers, _ = _cookie_headers(rng, client)
    method = rng.choice((b"GET", b"GET", b"HEAD", b"POST"))
    return Case("captcha", _request(method, target, headers + _common_headers(rng)))


ROUTES = (
    b"/",
    b"/login",
    b"/login/image",
    b"/login/password",
    b"/register",
    b"/register/done",
    b"/help",
    b"/privacy",
    b"/security",
    b"/accessibility",
    b"/helpdesk",
    b"/developers",
    b"/crest",
    b"/account",
    b"/account/password",
    b"/password/forgot",
    b"/password/reset",
    b"/saml/metadata",
    b"/saml/sso/redirect",
    b"/saml/slo/redirect",
    b"/saml/sso/continue",
    b"/saml/slo/next",
    b"/saml/slo/done",
    b"/saml/init/1",
    b"/logout",
    b"/healthz",
    b"/static/css/idp.css",
)


def raw_case(rng: random.Random, client: Client) -> Case:
    path = rng.choice(ROUTES)
    where = rng.randrange(6)
    raw_bytes = rng.random() < 0.3
    bad = rng.choice(BAD_UTF8) if rng.random() < 0.7 else _word(rng)
    escaped = bad if raw_bytes else quote_from_bytes(bad, safe="").encode()
    query = b""
    headers, _ = _cookie_headers(rng, client)
    body = b""
    method = rng.choice(
        (b"GET", b"GET", b"POST", b"HEAD", b"PUT", b"OPTIONS", b"DELETE")
    )
    if where == 0:
        cut = rng.randrange(len(path) + 1)
        path = path[:cut] + escaped + path[cut:]
    elif where == 1:
        query = rng.choice((b"next=", b"lang=", b"SAMLRequest=", b"r=", b"")) + escaped
        if rng.random() < 0.3:
            query = b"lang=en&" + query
    elif where == 2:
        value = rng.choice((b"idp_session=", b"idp_lang=", b"x=", b"")) + bad
        headers = [(b"Cookie", value)]
    elif where == 3:
        name = rng.choice(
            (
                b"Accept-Language",
                b"Referer",
                b"Origin",
                b"User-Agent",
                b"X-Forwarded-For",
                b"X-Forwarded-Proto",
                b"Accept",
                b"If-Modified-Since",
                b"Content-Type",
                b"Authorization",
                b"Range",
            )
        )
        headers.append((name, bad))
    elif where == 4:
        method = b"POST"
        body = rng.choice((b"a=", b"csrf_token=", b"", b"next=")) + bad
        content_type = rng.choice(
            (
                b"application/x-www-form-urlencoded",
                b"application/x-www-form-urlencoded; charset=" + bad,
                b"multipart/form-data; boundary=" + bad,
                b"multipart/form-data",
                b"text/plain",
                b"application/json",
                bad,
            )
        )
        headers.append((b"Content-Type", content_type))
    else:
        method = b"POST"
        chunk = b"a=" + bad
        body = hex(len(chunk))[2:].encode() + b"\r\n" + chunk + b"\r\n0\r\n\r\n"
        if rng.random() < 0.3:
            body = b"zz\r\n" + chunk + b"\r\n0\r\n\r\n"  # a bad chunk size
        headers += [
            (b"Transfer-Encoding", b"chunked"),
            (b"Content-Type", b"application/x-www-form-urlencoded"),
        ]
        target = path + (b"?" + query if query else b"")
        lines = [method + b" " + target + b" HTTP/1.1", b"Host: " + HOST.encode()]
        lines += [n + b": " + v for n, v in headers] + [b"Connection: close"]
        return Case("raw", b"\r\n".join(lines) + b"\r\n\r\n" + body)
    target = path + (b"?" + query if query else b"")
    return Case("raw", _request(method, target, headers + _common_headers(rng), body))


GENERATORS = (
    (0.35, saml_case),
    (0.35, form_case),
    (0.1, captcha_case),
    (0.2, raw_case),
)


def next_case(rng: random.Random, client: Client) -> Case:
    pick = rng.random()
    for weight, generator in GENERATORS:
        if pick < weight:
            return generator(rng, client)
        pick -= weight
    return raw_case(rng, client)


# --------------------------------------------------------------------------
# Running


@dataclass
class Report:
    seed: int
    sent: int = 0
    seconds: float = 0.0
    statuses: collections.Counter = field(default_factory=collections.Counter)
    by_kind: collections.Counter = field(default_factory=collections.Counter)
    kind_status: collections.Counter = field(default_factory=collections.Counter)
    codes: collections.Counter = field(default_factory=collections.Counter)
    findings: list[tuple[str, int, bytes, str]] = field(default_factory=list)
    logged_errors: list[str] = field(default_factory=list)

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def summary(self) -> str:
        lines = [
            f"seed {self.seed}: {self.sent} requests in {self.seconds:.1f} s",
            "by kind: "
            + ", ".join(f"{k} {n}" for k, n in sorted(self.by_kind.items())),
            "statuses: "
            + ", ".join(f"{s} x {n}" for s, n in sorted(self.statuses.items())),
            *(
                f"  {kind}: "
                + ", ".join(
                    f"{s} x {n}"
                    for (k, s), n in sorted(self.kind_status.items())
                    if k == kind
                )
                for kind in sorted(self.by_kind)
            ),
            "error pages by code: "
            + ", ".join(f"{c} {n}" for c, n in self.codes.most_common()),
            f"responses >= 500: {self.server_errors}; "
            f"no answer: {self.statuses.get(0, 0)}; "
            f"with a traceback: {sum(1 for f in self.findings if 'Traceback' in f[3])}; "
            f"raw echoes: {sum(1 for f in self.findings if 'echo' in f[3])}; "
            f"errors logged by the app or waitress: {len(self.logged_errors)}",
        ]
        for kind, status, raw, why in self.findings[:20]:
            lines.append(f"FINDING {kind} {status} {why}: {raw[:300]!r}")
        return "\n".join(lines)


_ERROR_CODE = re.compile(rb'data-error-code="([a-z_]+)"')


class _ErrorLog(logging.Handler):
    """Collects ERROR records: unhandled exceptions in a view or in waitress."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        line = f"{record.name}: {record.getMessage()}"
        if record.exc_info:
            lines = logging.Formatter().formatException(record.exc_info).splitlines()
            line += " | " + " / ".join(lines[-3:])
        self.records.append(line[:600])


def _worker(port, identifier, solver, seed, count, deadline, report, lock):
    try:
        _send(port, identifier, solver, seed, count, deadline, report, lock)
    except Exception as exc:  # a harness failure is a finding too
        with lock:
            report.findings.append(("harness", -1, b"", f"{type(exc).__name__}: {exc}"))


def _send(port, identifier, solver, seed, count, deadline, report, lock):
    rng = random.Random(seed)
    client = _fresh_client(port, identifier, solver)
    for number in range(count):
        if time.monotonic() > deadline:
            return
        if number and number % REFRESH_EVERY == 0:
            client = _fresh_client(port, identifier, solver)
        case = next_case(rng, client)
        answer = exchange(port, case.raw, timeout=30)
        why = ""
        if answer.status >= 500:
            why = "server error"
        elif answer.status == 0:
            why = "no answer"
        if b"Traceback" in answer.body:
            why += " Traceback"
        if RAW_ECHO in answer.body:
            why += " raw echo"
        with lock:
            report.sent += 1
            report.statuses[answer.status] += 1
            report.by_kind[case.kind] += 1
            report.kind_status[case.kind, answer.status] += 1
            code = _ERROR_CODE.search(answer.body)
            if code:
                report.codes[code.group(1).decode()] += 1
            if why:
                report.findings.append((case.kind, answer.status, case.raw, why))


def run(
    count: int,
    *,
    seed: int = 20261204,
    threads: int = 2,
    max_seconds: float = 3600,
    folder: Path | None = None,
) -> Report:
    """Send ``count`` requests (fewer if ``max_seconds`` runs out)."""
    from idp.services.captcha import ImageCaptcha

    errors = _ErrorLog()
    watched = [logging.getLogger(name) for name in ("idp", "waitress")]
    for logger in watched:
        logger.addHandler(errors)
    report = Report(seed)
    with tempfile.TemporaryDirectory() as scratch:
        app, engine, identifier = build_world(folder or Path(scratch))
        solver = ImageCaptcha(
            None, app.registry.settings["idp.hmac_key"], enabled=True, lifetime=60
        )
        try:
            with serve(app) as port:
                started = time.monotonic()
                deadline = started + max_seconds
                lock = threading.Lock()
                share = [
                    count // threads + (i < count % threads) for i in range(threads)
                ]
                workers = [
                    threading.Thread(
                        target=_worker,
                        args=(
                            port,
                            identifier,
                            solver,
                            seed * 1000 + i,
                            n,
                            deadline,
                            report,
                            lock,
                        ),
                        name=f"fuzz-{i}",
                    )
                    for i, n in enumerate(share)
                ]
                for worker in workers:
                    worker.start()
                for worker in workers:
                    worker.join()
                report.seconds = time.monotonic() - started
        finally:
            engine.dispose()
            for logger in watched:
                logger.removeHandler(errors)
    report.logged_errors = errors.records
    return report
