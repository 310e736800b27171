"""Requests get one class, made at start-up (``idp.config.bake_request_properties``).

Pyramid would make a new request subclass per request to carry the
``add_request_method`` properties; the app makes it once. What must still
hold: every property is there, a reified value belongs to its own request,
and the class still provides ``IRequest`` (views and subscribers are found
by it).
"""

from __future__ import annotations

from pyramid.interfaces import IRequest, IRequestExtensions, IRequestFactory

from tests.app import TEST_HOST, app_request

PROPERTIES = ("dbsession", "tm", "csp", "client_addr", "reference", "static")


def _request(app, address: str):
    return app_request(app.registry, HTTP_HOST=TEST_HOST, REMOTE_ADDR=address)


def test_every_request_is_of_the_one_class_made_at_start_up(app):
    first, second = _request(app, "192.0.2.1"), _request(app, "192.0.2.2")
    assert type(first) is type(second)
    assert type(first) is app.registry.queryUtility(IRequestFactory)
    # Nothing is left for Pyramid to apply per request.
    assert app.registry.queryUtility(IRequestExtensions).descriptors == {}
    assert IRequest.providedBy(first)


def test_reified_properties_still_belong_to_their_own_request(app):
    first, second = _request(app, "192.0.2.1"), _request(app, "192.0.2.2")
    for name in PROPERTIES:
        assert hasattr(first, name), name
    assert first.csp is first.csp  # reified: made once per request
    assert first.csp is not second.csp
    assert first.reference != second.reference
    assert (first.client_addr, second.client_addr) == ("192.0.2.1", "192.0.2.2")
    # Set on one request, a reified value is that request's alone.
    first.csp.add("img-src", "https://cdn.example.my")
    assert "cdn.example.my" not in str(second.csp)


def test_a_request_method_added_afterwards_still_works(app, settings, db_engine):
    """A property added after start-up (as a test's include would) is applied
    Pyramid's way, on top of the baked class."""
    from idp.config import configure

    config = configure({**settings, "idp.dbengine": db_engine})
    config.add_request_method(lambda request: "added", "added_later", reify=True)
    config.commit()
    late = config.make_wsgi_app()
    request = _request(late, "192.0.2.3")
    assert request.added_later == "added"
    assert request.csp is request.csp
