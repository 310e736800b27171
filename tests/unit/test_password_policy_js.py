"""The password hint's rules (idp/static/js/password-policy.js), run in Node.js.

The script shows a reason before the form is sent; the server decides. Here
its ``passwordPolicyCheck`` runs on the weak passwords of issue 11 and on
real passphrases, and must give the reason the server gives wherever the
server's reason is one the script checks (AUTH-32). Node.js is a Debian
package that ``scripts/setup test`` installs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from idp.services import passwords

SCRIPT = Path(passwords.__file__).resolve().parent.parent / (
    "static/js/password-policy.js"
)
WORDS = sorted(passwords.SERVICE_WORDS | {"kementerian", "pendidikan", "malaysia"})
CASES = {
    "pendek": "too_short",
    "aaaaaaaaaaaa": "repetition",
    "abcabcabcabc": "repetition",
    "kucingkucing": "repetition",
    "123456789012": "sequence",
    "abcdefghijkl": "sequence",
    "zyxwvutsrqpo": "sequence",
    "qwertyuiopasdf": "keyboard",
    "1qaz2wsx3edc": "keyboard",
    "qwertyuiop12": "keyboard",
    "idme12345678": "service_name",
    "KPM@2024!idme": "service_name",
    # Rules only the server checks: the script says nothing.
    "password1234": None,
    "010120102010": None,
    # Real passphrases: nothing to say.
    "gajah biru minum kopi susu": None,
    "lantern oyster gravel violet": None,
    "Payung merah bawah hujan 1987": None,
    "kpm sekolah di hujung bukit": None,
}
RUNNER = """
const vm = require("vm");
const fs = require("fs");
const [script, words, cases] = process.argv.slice(1);
const sandbox = {};
sandbox.globalThis = sandbox;
vm.runInNewContext(fs.readFileSync(script, "utf8"), sandbox);
const out = {};
for (const password of JSON.parse(cases)) {
  out[password] = sandbox.passwordPolicyCheck(password, 12, JSON.parse(words));
}
process.stdout.write(JSON.stringify(out));
"""


@pytest.fixture(scope="module")
def browser_says():
    node = shutil.which("node") or shutil.which("nodejs")
    assert node, "Node.js is missing: run scripts/setup test"
    result = subprocess.run(
        [node, "-e", RUNNER, str(SCRIPT), json.dumps(WORDS), json.dumps(list(CASES))],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout)


def test_auth_32_the_hint_gives_the_servers_reason(browser_says):
    """AUTH-32: the browser names the rule the server will name."""
    expected = {
        password: code.replace("_", "-") if code else None
        for password, code in CASES.items()
    }
    assert browser_says == expected


def test_the_hint_agrees_with_the_server_on_every_case(browser_says):
    service = passwords.BcryptPasswordService(rounds=4, service_words=WORDS)
    for password, code in CASES.items():
        server = [v.code for v in service.check_policy(password)]
        if code is None:
            # The script is silent; the server may still refuse (breached,
            # date), never for a rule the script checks.
            assert not set(server) & set(passwords.CLIENT_RULES), password
        else:
            assert code in server, (password, server)
