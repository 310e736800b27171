"""``idp-admin`` as an operator runs it: a scratch ini and a real process.

``scratch_ini`` copies development.ini with every path it writes (database,
keys, metadata, mail) moved into a scratch folder and the slow settings
turned down; the ``ini`` fixture (tests/conftest.py) gives each test one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.app import DEVELOPMENT_INI

IDP_ADMIN = Path(sys.executable).parent / "idp-admin"


def scratch_ini(folder: Path) -> Path:
    """development.ini pointed at scratch folders under ``folder``."""
    text = DEVELOPMENT_INI.read_text()
    text = text.replace("%(here)s/var/idp.sqlite", str(folder / "idp.sqlite"))
    text = text.replace("%(here)s/certs", str(folder / "certs"))
    text = text.replace("%(here)s/metadata", str(folder / "metadata"))
    text = text.replace("%(here)s/var/mail", str(folder / "mail"))
    text = text.replace("idp.key_size = 3072", "idp.key_size = 2048")
    text = text.replace("idp.bcrypt_rounds = 12", "idp.bcrypt_rounds = 4")
    path = folder / "test.ini"
    path.write_text(text)
    return path


def run(*args, env=None) -> subprocess.CompletedProcess:
    """``idp-admin ARGS`` in its own process; ``env`` adds to the environment."""
    return subprocess.run(
        [str(IDP_ADMIN), *map(str, args)],
        capture_output=True,
        stdin=subprocess.DEVNULL,  # a command that asks gets end of input
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
        timeout=120,
    )
