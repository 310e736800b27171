"""idMe's keys as the rollover tests handle them: nodes' certs/, metadata's keys.

A "node" is an app with its own ``certs/`` (a copy of the session's signing
pair), as two servers behind a load balancer have; ``copy_key`` is the
operator copying a prepared key to another node. ``published`` reads which
certificates a metadata document lists for which use, by fingerprint.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
from pathlib import Path

from lxml import etree
from saml2.sigver import SignatureError

from idp.saml.crypto import XmlsecBackend
from idp.saml.keys import KeyPair

MD = "urn:oasis:names:tc:SAML:2.0:metadata"
DS = "http://www.w3.org/2000/09/xmldsig#"
SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
RESPONSE_NODE = f"{SAMLP}:Response"


def node_certs(folder: Path, keypair: KeyPair) -> Path:
    """A node's ``certs/`` holding only the install's first pair, ``signing.*``."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for path in (keypair.key_file, keypair.cert_file):
        shutil.copy2(path, folder / path.name)
    return folder


def copy_key(source: Path, target: Path, kid: str) -> None:
    """What the operator does after ``prepare``: copy ``<kid>.key/.crt`` to a node."""
    for suffix in (".key", ".crt"):
        shutil.copy2(source / f"{kid}{suffix}", target / f"{kid}{suffix}")


def published(xml: bytes) -> list[tuple[str, str]]:
    """(use, SHA-256 fingerprint) of each KeyDescriptor, in document order."""
    root = etree.fromstring(xml)
    keys = []
    for descriptor in root.iter(f"{{{MD}}}KeyDescriptor"):
        text = descriptor.findtext(f".//{{{DS}}}X509Certificate")
        der = base64.b64decode("".join(text.split()))
        keys.append((descriptor.get("use"), hashlib.sha256(der).hexdigest()))
    return keys


def signed_by(xml: bytes, cert_file: Path) -> bool:
    """Whether the Response's signature verifies with ``cert_file`` alone."""
    root = etree.fromstring(xml)
    try:
        return XmlsecBackend().validate_signature(
            xml, str(cert_file), "pem", RESPONSE_NODE, root.get("ID")
        )
    except SignatureError:
        return False
