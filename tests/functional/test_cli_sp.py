"""idp-admin sp ...: the SP registry from the shell, as an operator runs it.

Each command runs through ``idp.cli.main`` (``tests.cli.admin``), exactly as
the console script calls it, on a real ini and a scratch SQLite database;
every failure is one line on stderr and exit status 1, never a traceback.
What only a real process shows (start-up imports, exit status of the console
script, a closed pipe) is in test_cli_startup.py and test_cli.py.
"""

from __future__ import annotations

import datetime as dt

from tests.cli import admin, assert_refused, rows
from tests.saml_metadata import (
    SP_ENTITY_ID,
    deeply_nested,
    make_sp_metadata,
    metadata_with,
)

OTHER_SP = "https://other.example.org/sp"


def test_import_list_show_disable_enable_remove(ini, database, tmp_path):
    signed = tmp_path / "sp.xml"
    signed.write_bytes(
        make_sp_metadata(signed_requests=True, encryption=True, name_id_formats=())
    )
    plain = tmp_path / "other.xml"
    plain.write_bytes(make_sp_metadata(OTHER_SP))

    result = admin(ini, "sp", "import", signed, "--module", "emis")
    assert result.returncode == 0, result.stderr
    assert f"registered {SP_ENTITY_ID} (module emis, enabled)" in result.stdout
    result = admin(ini, "sp", "import", plain, "--disabled")
    assert result.returncode == 0, result.stderr
    assert f"registered {OTHER_SP} (module -, disabled)" in result.stdout
    assert rows(database)[SP_ENTITY_ID].encrypt_assertion is True
    assert rows(database)[OTHER_SP].enabled is False

    # Re-importing the same file changes nothing and adds no row.
    result = admin(ini, "sp", "import", signed)
    assert result.returncode == 0, result.stderr
    assert f"unchanged {SP_ENTITY_ID} (module emis, enabled)" in result.stdout
    assert len(rows(database)) == 2

    result = admin(ini, "sp", "list")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"{OTHER_SP}\t-\tdisabled\t1 ACS\tsp import",
        f"{SP_ENTITY_ID}\temis\tenabled\t1 ACS\tsp import",
    ]

    result = admin(ini, "sp", "show", SP_ENTITY_ID)
    assert result.returncode == 0, result.stderr
    for line in (
        "module:               emis",
        "encrypt assertion:    yes",
        "signed requests:      yes (AuthnRequestsSigned)",
        "NameID format:        urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
        "name:                 Sistem Contoh (ms), Example System (en)",
        "ACS [1]: urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST "
        "https://sp.example.org/acs",
        "SLO: urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect "
        "https://sp.example.org/slo",
    ):
        assert line in result.stdout

    result = admin(ini, "sp", "disable", SP_ENTITY_ID)
    assert (result.returncode, result.stdout) == (0, f"disabled {SP_ENTITY_ID}\n")
    assert rows(database)[SP_ENTITY_ID].enabled is False
    result = admin(ini, "sp", "enable", SP_ENTITY_ID)
    assert (result.returncode, result.stdout) == (0, f"enabled {SP_ENTITY_ID}\n")
    assert rows(database)[SP_ENTITY_ID].enabled is True

    result = admin(ini, "sp", "remove", OTHER_SP, "--yes")
    assert (result.returncode, result.stdout) == (
        0,
        f"removed the registration of {OTHER_SP} (module -, disabled) and its policy\n",
    )
    assert list(rows(database)) == [SP_ENTITY_ID]


def test_errors_are_one_line_without_traceback(ini, database, tmp_path):
    good = tmp_path / "sp.xml"
    good.write_bytes(make_sp_metadata())
    bad = tmp_path / "bad.xml"
    bad.write_bytes(b"<md:EntityDescriptor")
    http = tmp_path / "http.xml"
    http.write_bytes(make_sp_metadata(acs="http://sp.example.org/acs"))

    assert_refused(
        admin(ini, "sp", "import", tmp_path / "missing.xml"),
        "cannot read",
    )
    assert_refused(admin(ini, "sp", "import", bad), "not well-formed XML")
    assert_refused(admin(ini, "sp", "import", http), "use https")
    assert_refused(
        admin(ini, "sp", "import", good, "--module", "nope"),
        "no module has the code 'nope'",
    )
    assert rows(database) == {}
    for action in ("show", "remove", "enable", "disable"):
        assert_refused(
            admin(ini, "sp", action, "https://unknown.example.org/sp"),
            "no SP is registered as 'https://unknown.example.org/sp'",
        )
    result = admin(ini, "sp", "list")
    assert (result.returncode, result.stdout) == (0, "no SP is registered\n")
    # The control: the same file imports once the module exists.
    result = admin(ini, "sp", "import", good, "--module", "emis")
    assert result.returncode == 0, result.stderr


def test_a_database_without_tables_is_one_line(ini):
    assert_refused(admin(ini, "sp", "list"), "run 'idp-admin CONFIG db upgrade' first")


def test_saml_27_expired_metadata_is_refused_by_the_cli(ini, database, tmp_path):
    """SAML-27: metadata whose validUntil has passed: exit 1, nothing written."""
    now = dt.datetime.now(dt.UTC)
    expired = tmp_path / "expired.xml"
    expired.write_bytes(make_sp_metadata(valid_until=now - dt.timedelta(minutes=1)))
    current = tmp_path / "current.xml"
    current.write_bytes(make_sp_metadata(valid_until=now + dt.timedelta(days=1)))
    assert_refused(admin(ini, "sp", "import", expired), "metadata expired at")
    assert rows(database) == {}
    result = admin(ini, "sp", "import", current)
    assert result.returncode == 0, result.stderr
    assert rows(database)[SP_ENTITY_ID].metadata_valid_until is not None


def test_ops_03_oversized_file_is_refused_by_the_cli(ini, database, tmp_path):
    """OPS-03: a metadata file over 5 MiB: exit 1, the limit named."""
    from idp.saml.sp_metadata import MAX_METADATA_BYTES
    from tests.saml_metadata import padded

    data = make_sp_metadata()
    big = tmp_path / "big.xml"
    big.write_bytes(padded(data, MAX_METADATA_BYTES + 1))
    assert_refused(
        admin(ini, "sp", "import", big),
        f"{big} is 5 MiB (5,242,881 bytes, 1 over); the limit is 5 MiB",
    )
    # The size reported is the file's, though only the limit + 1 byte is read.
    big.write_bytes(padded(data, 20 * 1024 * 1024))
    assert_refused(admin(ini, "sp", "import", big), "is 20 MiB; the limit is 5 MiB")
    assert rows(database) == {}
    big.write_bytes(padded(data, MAX_METADATA_BYTES))
    result = admin(ini, "sp", "import", big)
    assert result.returncode == 0, result.stderr


def test_saml_30_replacing_keys_or_endpoints_needs_replace(ini, database, tmp_path):
    """SAML-30: the CLI refuses a silent takeover and audits an explicit one."""
    first = tmp_path / "first.xml"
    first.write_bytes(make_sp_metadata())
    assert admin(ini, "sp", "import", first).returncode == 0
    takeover = tmp_path / "takeover.xml"
    takeover.write_bytes(make_sp_metadata(acs="https://sp.example.org/evil-acs"))
    refused = admin(ini, "sp", "import", takeover)
    assert refused.returncode == 1
    assert "--replace" in refused.stderr
    assert "evil-acs" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert "evil-acs" not in admin(ini, "sp", "show", SP_ENTITY_ID).stdout
    accepted = admin(ini, "sp", "import", takeover, "--replace")
    assert accepted.returncode == 0, accepted.stderr
    assert (
        "replaced: AssertionConsumerService added: https://sp.example.org/evil-acs"
        in (accepted.stdout)
    )
    assert "sp.replaced" in admin(ini, "audit", "tail").stdout


def test_saml_36_import_names_the_hostile_url_and_why(ini, database, tmp_path):
    """SAML-36: the operator sees which endpoint and which rule, on one line."""
    hostile = tmp_path / "hostile.xml"
    hostile.write_bytes(metadata_with("http://evil.example\\@127.0.0.1/acs", None))
    assert_refused(
        admin(ini, "sp", "import", hostile),
        "AssertionConsumerService 'http://evil.example\\\\@127.0.0.1/acs' "
        "contains a backslash",
    )
    crlf = tmp_path / "crlf.xml"
    crlf.write_bytes(metadata_with(None, "https://sp.example.org/slo\r\nX: 1"))
    assert_refused(admin(ini, "sp", "import", crlf), "whitespace or a control")
    assert rows(database) == {}
    # Control: development accepts plain http to this machine.
    local = tmp_path / "local.xml"
    local.write_bytes(metadata_with("http://127.0.0.1:8000/acs", None))
    result = admin(ini, "sp", "import", local)
    assert result.returncode == 0, result.stderr


def test_saml_37_requests_are_shown_never_released_and_a_change_needs_replace(
    ini,
    database,
    tmp_path,
):
    """SAML-37/38: show lists what metadata asks; a new ask is a trust change."""
    from tests.functional.test_sso_responses import with_subject_id_req

    first = tmp_path / "first.xml"
    first.write_bytes(make_sp_metadata())
    assert admin(ini, "sp", "import", first).returncode == 0
    asking = tmp_path / "asking.xml"
    asking.write_bytes(with_subject_id_req(make_sp_metadata(), "subject-id"))
    refused = admin(ini, "sp", "import", asking)
    assert_refused(refused, "subject-id:req added: subject-id")
    assert "--replace" in refused.stderr
    accepted = admin(ini, "sp", "import", asking, "--replace")
    assert accepted.returncode == 0, accepted.stderr
    assert "replaced: subject-id:req added: subject-id" in accepted.stdout
    assert "sp.replaced" in admin(ini, "audit", "tail").stdout
    shown = admin(ini, "sp", "show", SP_ENTITY_ID).stdout
    assert "attributes released:  uid, isMemberOf" in shown
    assert "(subject-id:req subject-id) (not released" in shown
    assert "uid:                  for this SP only" in shown
    # SAML-38 control: the global uid only when the operator says so.
    result = admin(ini, "sp", "policy", SP_ENTITY_ID, "--global-uid", "yes")
    assert result.returncode == 0, result.stderr
    assert "uid:                  global (the same at every SP)" in result.stdout
    assert rows(database)[SP_ENTITY_ID].global_uid is True


def test_saml_39_import_refuses_what_the_saml_server_cannot_load(
    ini,
    database,
    tmp_path,
):
    """SAML-39: not "registered" and then missing: refused, the reason named."""
    deep = tmp_path / "deep.xml"
    deep.write_bytes(deeply_nested(200_000))
    assert_refused(admin(ini, "sp", "import", deep), "nests elements more than 64 deep")
    assert rows(database) == {}
    shallow = tmp_path / "shallow.xml"
    shallow.write_bytes(deeply_nested(8))
    result = admin(ini, "sp", "import", shallow)
    assert result.returncode == 0, result.stderr
    assert f"registered {SP_ENTITY_ID}" in result.stdout
