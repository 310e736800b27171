"""idMe IdP: the identity provider and SAML 2.0 single sign-on."""

import gc
import sys


def main(global_config, **settings):
    """The Paste app factory named ``idp:main`` in the ini files."""
    from idp.config import configure
    from idp.dbfaults import install_log_filter
    from idp.logmask import install
    from idp.saml.keys import KeyPairError
    from idp.saml.selftest import VerifierSelfTestError
    from idp.settings import SettingsError

    install()  # pserve has configured logging by now: mask what it writes
    # An outage's failed ROLLBACK: one line (the 503's), not a traceback.
    install_log_filter()

    try:
        app = configure(settings).make_wsgi_app()
    except (SettingsError, KeyPairError, VerifierSelfTestError) as exc:
        # One line an operator can act on, not a traceback.
        print(f"idp: cannot start: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    freeze_start_up()
    return app


def freeze_start_up() -> None:
    """Move what start-up built out of the garbage collector's sight.

    Called once per process at the end of the app factory, which pserve
    (and any server loading the ini) runs before the first request: the
    Pyramid registry, routes and views, settings, the Jinja2 environment,
    SQLAlchemy's mappers and engine, pysaml2's configuration, the keys and
    the verifier self-test's objects all exist by then and live as long
    as the process. ``gc.freeze()`` puts them in the permanent
    generation, so a full (generation 2) collection no longer walks them:
    each one is shorter, which is what a request caught behind it waits
    (bench/bench_gc.py measures the pauses). Start-up's own garbage is
    collected first, or it would be frozen for good. Not in
    :func:`idp.config.configure`, which tests and benchmarks call for
    many apps in one process.
    """
    gc.collect()
    gc.freeze()
