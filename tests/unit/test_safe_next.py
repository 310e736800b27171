"""idp.redirects.safe_next: where a user may be sent after signing in."""

from __future__ import annotations

import pytest

from idp.redirects import MAX_LENGTH, safe_next


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/。/x", "/%E3%80%82/x"),
        ("/akaun saya", "/akaun%20saya"),
        ("/help?q=kopi o&lang=en", "/help?q=kopi%20o&lang=en"),
        ('/a"<b>', "/a%22%3Cb%3E"),
        ("/😀", "/%F0%9F%98%80"),
    ],
)
def test_ops_09_next_outside_ascii_is_percent_encoded(value, expected):
    """OPS-09: what goes into the Location header is ASCII (Latin-1 on the wire)."""
    assert safe_next(value) == expected
    assert safe_next(expected) == expected  # a second pass changes nothing


@pytest.mark.parametrize(
    "value", ["/help", "/account?tab=1", "/saml/sso/continue?r=abc_-~.", "/a%2Fb"]
)
def test_ascii_paths_are_unchanged(value):
    assert safe_next(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "/\ud800",  # a lone surrogate: no UTF-8 form at all
        "/" + "。" * (MAX_LENGTH // 9 + 1),  # short enough raw, too long encoded
        "//evil.example/",
        "/\\evil.example",
        "https://evil.example/",
        "/a\r\nSet-Cookie: x=1",
    ],
)
def test_unusable_next_is_refused(value):
    assert safe_next(value) is None
