"""The IdP against python3-saml (OneLogin), strict mode.

OneLogin shares no code with pysaml2, on which the IdP is built, so it
catches what a pysaml2 SP would forgive: schema violations, a Destination or
Recipient off by a character, a signature over the wrong element. The suite
is written once, as :class:`SsoSuite` in ``test_pysaml2_sp.py``.
"""

from __future__ import annotations

import pytest

from tests.interop.sps import OneLoginSP, Pysaml2SP
from tests.interop.test_pysaml2_sp import SsoSuite

pytestmark = pytest.mark.interop


class TestOneLoginSP(SsoSuite):
    """The contract with python3-saml as the SP."""

    sp_class = OneLoginSP
    other_class = Pysaml2SP
