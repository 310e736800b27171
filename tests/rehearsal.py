"""What ``deploy/rehearse`` needs beyond the document's commands: a partner and a person.

``python -m tests.rehearsal COMMAND ...``, run by the script with the
checkout on ``PYTHONPATH``:

``ports N``
    N free ports on 127.0.0.1, one a line.
``smtp-sink --port P --dir D --cert C --key K``
    The ministry's relay: STARTTLS and AUTH (``tests.smtp``), each message
    written to ``D`` as an ``.eml`` file; runs until SIGTERM.
``sp-metadata --idp URL --ca FILE OUT``
    The partner's SP metadata (a pysaml2 ``Saml2Client``, ``PARTNER``).
``sso --idp URL --ca FILE --mail-dir D --number N``
    The account's owner: reads the temporary password from the delivered
    email, starts at the partner's SP, signs in through the pages (number,
    image, password), chooses a password, image and phrase at the forced
    change, and hands the Response the IdP posts to the SP, which validates
    it (signature, audience, destination, ``InResponseTo``). Prints one line.

Each failure is one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import re
import signal
import socket
import sys
import threading
import time
from email import message_from_bytes, policy
from pathlib import Path
from urllib.parse import urljoin, urlsplit

PARTNER = "https://sp.partner.example/saml/metadata"
NEW_PASSWORD = "Rehearsal passphrase for idMe 2026"
PHRASE = "Kucing oren di tingkap"
SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"


class RehearsalError(Exception):
    pass


def ports(count: int) -> list[int]:
    """Free ports, all held open until every one is chosen (so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def smtp_sink(port: int, folder: Path, cert: Path, key: Path) -> None:
    from tests.smtp import SMTPServer

    folder.mkdir(parents=True, exist_ok=True)
    server = SMTPServer(cert, key, implicit_tls=False)
    server.port = port
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    written = 0
    try:
        while not stop.wait(0.1):
            with server.lock:
                new = server.messages[written:]
            for message in new:
                written += 1
                (folder / f"{written:04d}.eml").write_bytes(message.as_bytes())
    finally:
        server.stop()


def _session(ca: Path):
    import requests

    session = requests.Session()
    # Not the environment's CA bundle or proxies (REQUESTS_CA_BUNDLE would
    # override verify): only the site's certificate is trusted.
    session.trust_env = False
    session.verify = str(ca)
    return session


def _idp_metadata(idp: str, ca: Path) -> bytes:
    answer = _session(ca).get(f"{idp}/saml/metadata", timeout=30)
    if answer.status_code != 200:
        raise RehearsalError(f"{idp}/saml/metadata answered {answer.status_code}")
    return answer.content


def partner_sp(idp: str, ca: Path):
    from tests.interop.sps import Pysaml2SP

    # No encryption key and unsigned requests: the SP made here to write its
    # metadata and the one that later takes the Response are two processes
    # with two throwaway keys, and neither key is used.
    return Pysaml2SP(PARTNER, _idp_metadata(idp, ca), encryption=False)


def temporary_password(folder: Path, deadline: float) -> str:
    while time.monotonic() < deadline:
        for path in sorted(folder.glob("*.eml")):
            message = message_from_bytes(path.read_bytes(), policy=policy.default)
            for part in message.walk():
                if part.get_content_type() == "text/plain":
                    found = re.search(
                        r"(?:temporary password|kata laluan sementara)[^:]*:\s*(\S+)",
                        part.get_content(),
                        re.IGNORECASE,
                    )
                    if found:
                        return found.group(1)
        time.sleep(0.2)
    raise RehearsalError(f"no temporary password was delivered to {folder}")


def _form(page, form_id: str):
    import lxml.html

    document = lxml.html.fromstring(page.content, base_url=page.url)
    found = document.get_element_by_id(form_id, None)
    if found is None:
        raise RehearsalError(
            f"{page.url}: no form {form_id} (status {page.status_code})"
        )
    return found


def _submit(session, page, form_id: str, values: dict, origin: str):
    """Send ``form_id`` of ``page`` as a browser does; follow same-site 303s."""
    from tests.signin import fill

    form = fill(_form(page, form_id), values)
    action = urljoin(page.url, form.get("action") or page.url)
    answer = session.post(
        action,
        data=dict(form.form_values()),
        headers={"Origin": origin},
        allow_redirects=False,
        timeout=60,
    )
    return _follow(session, answer, origin)


def _follow(session, answer, origin: str):
    while answer.status_code in (302, 303) and answer.headers["Location"].startswith(
        (origin, "/")
    ):
        answer = session.get(
            urljoin(answer.url, answer.headers["Location"]),
            allow_redirects=False,
            timeout=60,
        )
    return answer


def sso(idp: str, ca: Path, mail_dir: Path, number: str) -> str:
    password = temporary_password(mail_dir, time.monotonic() + 60)
    sp = partner_sp(idp, ca)
    session = _session(ca)
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(idp))
    path, request_id = sp.redirect_request()
    page = _follow(
        session,
        session.get(origin + path, allow_redirects=False, timeout=60),
        origin,
    )
    page = _submit(session, page, "login-form", {"identifier": number}, origin)
    page = _submit(session, page, "image-form", {"confirm": True}, origin)
    page = _submit(session, page, "password-form", {"password": password}, origin)
    form = _form(page, "new-password-form")
    images = [i.get("value") for i in form.inputs if i.get("name") == "security_image"]
    if not images:
        raise RehearsalError(f"{page.url}: no security image to choose")
    page = _submit(
        session,
        page,
        "new-password-form",
        {
            "password": NEW_PASSWORD,
            "password_confirm": NEW_PASSWORD,
            "security_image": images[0],
            "security_phrase": PHRASE,
        },
        origin,
    )
    import lxml.html

    document = lxml.html.fromstring(page.content)
    posts = [f for f in document.forms if f.get("action") == sp.acs_url]
    if not posts:
        raise RehearsalError(
            f"{page.url} (status {page.status_code}) posts nothing to {sp.acs_url}"
        )
    login = sp.consume(dict(posts[0].form_values()), request_id)
    if login.status != SUCCESS or not login.name_id:
        raise RehearsalError(
            f"the SP got status {login.status}, NameID {login.name_id}"
        )
    return (
        f"sso ok: {PARTNER} accepted a signed Response for request {request_id} "
        f"(NameID {login.name_id[:8]}..., {len(login.attributes)} attributes)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.rehearsal")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("ports")
    p.add_argument("count", type=int)
    p = commands.add_parser("smtp-sink")
    for name in ("--port",):
        p.add_argument(name, type=int, required=True)
    for name in ("--dir", "--cert", "--key"):
        p.add_argument(name, type=Path, required=True)
    p = commands.add_parser("sp-metadata")
    p.add_argument("--idp", required=True)
    p.add_argument("--ca", type=Path, required=True)
    p.add_argument("out", type=Path)
    p = commands.add_parser("sso")
    p.add_argument("--idp", required=True)
    p.add_argument("--ca", type=Path, required=True)
    p.add_argument("--mail-dir", type=Path, required=True)
    p.add_argument("--number", required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "ports":
            print("\n".join(map(str, ports(args.count))))
        elif args.command == "smtp-sink":
            smtp_sink(args.port, args.dir, args.cert, args.key)
        elif args.command == "sp-metadata":
            args.out.write_bytes(partner_sp(args.idp, args.ca).metadata())
        else:
            print(sso(args.idp, args.ca, args.mail_dir, args.number))
    except Exception as exc:  # one line for the script's log, whatever it was
        print(f"rehearsal {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
