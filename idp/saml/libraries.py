"""The XML security libraries this process runs on, for ``idp-admin doctor``.

Signing and verification run in libxmlsec through the ``xmlsec`` bindings,
on the libxml2 documents lxml builds: both must be linked against one and
the same libxml2, or a document crosses between two copies of the library
(python-xmlsec refuses some, crashes on others). The versions are read
here, where the SAML package alone imports ``xmlsec``.
"""

from __future__ import annotations

import shutil

import lxml.etree
import xmlsec


def _dotted(version) -> str:
    return ".".join(str(part) for part in version)


def versions() -> dict[str, str]:
    """libxmlsec's version, and the libxml2 seen by xmlsec and by lxml."""
    return {
        "libxmlsec": _dotted(xmlsec.get_libxmlsec_version()),  # type: ignore[attr-defined]
        "libxml2 (xmlsec)": _dotted(xmlsec.get_libxml_version()),
        "libxml2 (lxml)": _dotted(lxml.etree.LIBXML_VERSION),
        "python-xmlsec": xmlsec.__version__,  # type: ignore[attr-defined]
    }


def xmlsec1_binary() -> str | None:
    """Where the ``xmlsec1`` program is (the operator's cross-check), or None."""
    return shutil.which("xmlsec1")
