"""Weak passwords of at least 12 characters, with the reason the policy gives.

Issue 11, item 18: each was accepted at the 12-character minimum. The unit
tests (tests/unit/test_passwords.py) ask the policy about them among others;
the functional tests (tests/functional/test_password_policy.py) send them
through the change-password page in both languages.
"""

from __future__ import annotations

# (password, the code of the first rule it breaks)
ISSUE_11 = [
    ("password1234", "common_word"),
    ("123456789012", "sequence"),
    ("aaaaaaaaaaaa", "repetition"),
    ("iloveyou1234", "common_word"),
    ("malaysia1234", "common_word"),
    ("qwertyuiopasdf", "keyboard"),
    ("abcdefghijkl", "sequence"),
    ("abcabcabcabc", "repetition"),
    ("1qaz2wsx3edc", "keyboard"),
    ("010120102010", "date"),
]
# The two of issue 11 built from the service's own names.
ISSUE_11_SERVICE_NAMES = [
    ("idme12345678", "service_name"),
    ("kpm2024kpm2024", "service_name"),
]
