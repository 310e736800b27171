"""idMe IdP: the identity provider and SAML 2.0 single sign-on."""

import sys


def main(global_config, **settings):
    """The Paste app factory named ``idp:main`` in the ini files."""
    from idp.config import configure
    from idp.logmask import install
    from idp.saml.keys import KeyPairError
    from idp.saml.selftest import VerifierSelfTestError
    from idp.settings import SettingsError

    install()  # pserve has configured logging by now: mask what it writes

    try:
        return configure(settings).make_wsgi_app()
    except (SettingsError, KeyPairError, VerifierSelfTestError) as exc:
        # One line an operator can act on, not a traceback.
        print(f"idp: cannot start: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
