#!/usr/bin/env bash
# Make the secrets docker-compose.yml mounts (once): deploy/secrets/password (the servers'
# password, for the gears nodes), deploy/secrets/valkey-auth.conf (the same password as
# requirepass/masterauth, the servers' config file) and deploy/secrets/peer.secret (the
# gears nodes' peer secret). Every file is created with mode 0600; existing ones are kept.
# Usage: bash deploy/make-secrets.sh [DIR]   (DIR default: deploy/secrets)
set -euo pipefail
umask 077
mkdir -p "${1:-$(dirname "$0")/secrets}"
cd "${1:-$(dirname "$0")/secrets}"
random() { python3 -c "import secrets; print(secrets.token_hex($1))"; }
[ -s peer.secret ] || random 32 > peer.secret
[ -s password ] || random 24 > password
password="$(cat password)"
printf 'requirepass "%s"\nmasterauth "%s"\n' "$password" "$password" > valkey-auth.conf
echo "secrets in $(pwd): password, peer.secret, valkey-auth.conf"
