#!/bin/sh
# SimpleSAMLphp as a benchmark peer for bench/bench_http_sso.py (issue 16).
#
# FOR A BENCHMARK MACHINE ONLY: run as root, it installs Debian packages and
# CHANGES /etc/apache2 (a site on 127.0.0.1:8081, the default site disabled,
# apache2 (re)started) and /etc/simplesamlphp (config.php replaced by an
# overlay of Debian's, authsources.php replaced, IdP/SP metadata and an
# RSA-2048 key pair under cert/). Nothing here is fit for production: the
# password is in this file and the key has no protection.
#
# What it sets up, as issue 16 asks: Debian 12's simplesamlphp package
# (1.19.7) on apache2 + mod_php (prefork), a hosted SAML 2.0 IdP
# authenticating with exampleauth:UserPass (user "bench"), an RSA-2048 key,
# saml20.sign.response and saml20.sign.assertion true, RSA-SHA256, one SP
# (the entity ID, ACS and NameID format of the SP that bench_http_sso.py
# registers with idMe; its requests are unsigned, so its key is not
# needed), a persistent NameID (saml:PersistentNameID over uid, as idMe
# releases a persistent one), the same four attributes, sessions in PHP's
# session files, logging at WARNING to a file. Idempotent: run it again to
# restore the same state.
set -eu

PORT=8081
BASE="http://127.0.0.1:${PORT}/simplesaml/"
SSP=/etc/simplesamlphp
SP_ENTITY_ID="https://sp.example.org/sp"
SP_ACS="https://sp.example.org/acs"

if [ "$(id -u)" != 0 ]; then
    echo "setup.sh: run as root (it installs packages and changes /etc/apache2)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
if ! dpkg -s simplesamlphp libapache2-mod-php >/dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq simplesamlphp php-xml php-mbstring php-curl php-intl \
        apache2 libapache2-mod-php >/dev/null
fi

# The IdP's own key pair: RSA-2048, self-signed, readable by apache only.
install -d -m 0750 -o root -g www-data "$SSP/cert"
if [ ! -s "$SSP/cert/bench-idp.pem" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
        -subj "/CN=127.0.0.1" \
        -keyout "$SSP/cert/bench-idp.pem" -out "$SSP/cert/bench-idp.crt" 2>/dev/null
fi
chgrp www-data "$SSP/cert/bench-idp.pem" "$SSP/cert/bench-idp.crt"
chmod 0640 "$SSP/cert/bench-idp.pem"
chmod 0644 "$SSP/cert/bench-idp.crt"

# config.php: Debian's file, kept as config.php.debian, with our settings on top.
if [ ! -f "$SSP/config.php.debian" ]; then
    cp -p "$SSP/config.php" "$SSP/config.php.debian"
fi
SALT=$(openssl rand -hex 32)
ADMIN=$(openssl rand -hex 16)
cat > "$SSP/config.php" <<PHP
<?php
// Written by idMe's bench/peers/simplesamlphp/setup.sh: a benchmark peer.
require __DIR__ . '/config.php.debian';
\$config = array_replace(\$config, [
    'baseurlpath' => '${BASE}',
    'certdir' => '${SSP}/cert/',
    'metadatadir' => '${SSP}/metadata/',
    'secretsalt' => '${SALT}',
    'auth.adminpassword' => '${ADMIN}',
    'timezone' => 'UTC',
    'technicalcontact_email' => 'bench@example.org',
    'enable.saml20-idp' => true,
    'module.enable' => ['exampleauth' => true, 'core' => true, 'saml' => true],
    'store.type' => 'phpsession',
    'session.cookie.secure' => false,
    'logging.level' => SimpleSAML\\Logger::WARNING,
    'logging.handler' => 'file',
    'logging.logfile' => 'simplesamlphp.log',
    'debug' => ['saml' => false, 'backtraces' => false, 'validatexml' => false],
    'showerrors' => false,
]);
PHP
chmod 0640 "$SSP/config.php"
chgrp www-data "$SSP/config.php"

cat > "$SSP/authsources.php" <<'PHP'
<?php
// Written by idMe's bench/peers/simplesamlphp/setup.sh: a benchmark peer.
$config = [
    'admin' => ['core:AdminPassword'],
    'bench-userpass' => [
        'exampleauth:UserPass',
        'bench:bench-password' => [
            'uid' => ['080512140001'],
            'displayName' => ['Cikgu Bench binti Ujian'],
            'mail' => ['cikgu.bench@example.com.my'],
            'isMemberOf' => ['emis'],
        ],
    ],
];
PHP

install -d -m 0755 "$SSP/metadata"
cat > "$SSP/metadata/saml20-idp-hosted.php" <<PHP
<?php
// Written by idMe's bench/peers/simplesamlphp/setup.sh: a benchmark peer.
\$metadata['__DYNAMIC:1__'] = [
    'host' => '__DEFAULT__',
    'privatekey' => 'bench-idp.pem',
    'certificate' => 'bench-idp.crt',
    'auth' => 'bench-userpass',
    'saml20.sign.response' => true,
    'saml20.sign.assertion' => true,
    'signature.algorithm' => 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256',
];
PHP
cat > "$SSP/metadata/saml20-sp-remote.php" <<PHP
<?php
// Written by idMe's bench/peers/simplesamlphp/setup.sh: a benchmark peer.
\$metadata['${SP_ENTITY_ID}'] = [
    'AssertionConsumerService' => [[
        'Binding' => 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST',
        'Location' => '${SP_ACS}',
        'index' => 0,
    ]],
    'NameIDFormat' => 'urn:oasis:names:tc:SAML:2.0:nameid-format:persistent',
    'attributes' => ['uid', 'displayName', 'mail', 'isMemberOf'],
    'saml20.sign.response' => true,
    'saml20.sign.assertion' => true,
    'signature.algorithm' => 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256',
    'authproc' => [
        10 => [
            'class' => 'saml:PersistentNameID',
            'attribute' => 'uid',
        ],
    ],
];
PHP
install -d -o www-data -g www-data /var/log/simplesamlphp /tmp/simplesaml

# apache2: prefork (mod_php's MPM), one site on 127.0.0.1:8081.
a2dismod -q mpm_event mpm_worker >/dev/null 2>&1 || true
a2enmod -q mpm_prefork php8.2 >/dev/null
cat > /etc/apache2/sites-available/simplesamlphp-bench.conf <<APACHE
# Written by idMe's bench/peers/simplesamlphp/setup.sh: a benchmark peer.
Listen 127.0.0.1:${PORT}
<VirtualHost 127.0.0.1:${PORT}>
    ServerName 127.0.0.1
    SetEnv SIMPLESAMLPHP_CONFIG_DIR ${SSP}
    Alias /simplesaml /usr/share/simplesamlphp/www
    <Directory /usr/share/simplesamlphp/www/>
        Require all granted
    </Directory>
    LogLevel warn
    ErrorLog \${APACHE_LOG_DIR}/simplesamlphp-bench-error.log
</VirtualHost>
APACHE
a2dissite -q 000-default >/dev/null 2>&1 || true
a2ensite -q simplesamlphp-bench >/dev/null
apache2ctl configtest 2>/dev/null || { apache2ctl configtest; exit 1; }
apache2ctl graceful 2>/dev/null  # starts apache2 when it is not running

# It answers: the IdP's metadata is served.
for _ in 1 2 3 4 5 6 7 8 9 10; do
    if curl -fsS -o /dev/null "${BASE}saml2/idp/metadata.php"; then
        echo "SimpleSAMLphp IdP on ${BASE} (certificate $SSP/cert/bench-idp.crt)"
        exit 0
    fi
    sleep 1
done
echo "setup.sh: SimpleSAMLphp does not answer on ${BASE}" >&2
exit 1
