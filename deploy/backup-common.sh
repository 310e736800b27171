# What deploy/backup and deploy/restore share (sourced, not run).
#
# idMe's code is reached through the installed idp-admin: IDP_ADMIN, else the
# one on PATH, else the virtualenv beside this directory (/opt/idme/.venv for
# /opt/idme/deploy). The ini is read by the Python that runs it (IDME_PYTHON
# overrides), with backup_helper.py beside this file.

die() {
    echo "${0##*/}: $*" >&2
    exit 1
}

need() {
    command -v "$1" >/dev/null 2>&1 || die "$1 not found (apt-get install postgresql-client-15 tar coreutils)"
}

first_line() {
    local line
    line=$(grep -m1 -v '^\s*$' "$1" || true)
    echo "${line:-no message}"
}

# Finds idp-admin and the Python that runs it (after the options are read,
# so --help works anywhere).
find_idme() {
    idp_admin=${IDP_ADMIN:-$(command -v idp-admin || true)}
    if [ -z "$idp_admin" ] && [ -x "$here/../.venv/bin/idp-admin" ]; then
        idp_admin=$(cd "$here/.." && pwd)/.venv/bin/idp-admin
    fi
    [ -n "$idp_admin" ] && [ -x "$idp_admin" ] || die "idp-admin not found: put idMe's bin/ on PATH or set IDP_ADMIN"
    if [ -z "${IDME_PYTHON:-}" ]; then
        # pip writes the interpreter's absolute path on the console script's first line.
        IDME_PYTHON=$(head -n1 "$idp_admin" | sed -n 's/^#!\s*//p' | cut -d' ' -f1)
    fi
    [ -n "$IDME_PYTHON" ] && [ -x "$IDME_PYTHON" ] || die "cannot tell which Python runs $idp_admin: set IDME_PYTHON"
}

usage_text() {
    # The script's header comment, without its first line.
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
}

helper() {
    "$IDME_PYTHON" "$here/backup_helper.py" "$@"
}

# Sets PG* (exported, for pg_dump, pg_restore and psql only: a password on
# a command line is visible to every user in ps), CERTS_DIR and HMAC_DIGEST.
load_settings() {
    local assignments
    assignments=$(helper settings "$1" "$2") || exit 1
    local line
    while IFS= read -r line; do
        # NAME='value' lines, quoted by Python's shlex.quote.
        [[ $line =~ ^[A-Z_]+= ]] || die "unexpected output from backup_helper.py"
        eval "export $line"
    done <<<"$assignments"
    export PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-10}
    # An empty PG* variable means libpq's default, as in the URL.
    local name
    for name in PGHOST PGPORT PGUSER PGPASSWORD; do
        [ -n "${!name}" ] || unset "$name"
    done
}

# One value from the database; a connection failure ends the script.
sql() {
    local out status=0
    out=$(psql --no-psqlrc --no-password --quiet --tuples-only --no-align \
        --set ON_ERROR_STOP=1 --command "$1" 2>&1) || status=$?
    if [ $status -ne 0 ]; then
        die "database $PGDATABASE: $(head -n1 <<<"$out" | sed 's/^psql: //')"
    fi
    echo "$out"
}

# The database's migration revision; empty when it has no idMe schema.
revision() {
    local exists
    exists=$(sql "SELECT to_regclass('public.alembic_version') IS NOT NULL")
    if [ "$exists" = "t" ]; then
        sql "SELECT version_num FROM alembic_version"
    fi
}
