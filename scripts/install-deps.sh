#!/usr/bin/env bash
# Installs everything edge-gw's tests and demo need on Debian 12 / Raspberry Pi OS: apt packages, the Python
# package with its test extra, and the MicroPython WebAssembly runtime from npm. Safe to run again: it installs only
# what is missing. Services installed from apt are not started (the tests and the demo run private instances).
# `--demo`: only what `make demo` needs (the two servers, and the package with its gateway and cloud extras).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

DEMO=0
[ "${1:-}" = "--demo" ] && DEMO=1
if [ "$DEMO" = 1 ]; then
  APT_PACKAGES=(python3-venv mosquitto mosquitto-clients influxdb influxdb-client)
else
  APT_PACKAGES=(python3-venv mosquitto mosquitto-clients influxdb influxdb-client victoria-metrics dbus openssl
                gcc make cmake clang libclang-rt-14-dev nodejs npm debootstrap systemd)
fi
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node may come from outside apt (NodeSource, nvm): then don't ask apt for it.
if command -v node >/dev/null && command -v npm >/dev/null; then
  filtered=(); for p in "${missing[@]}"; do [[ "$p" == nodejs || "$p" == npm ]] || filtered+=("$p"); done
  missing=("${filtered[@]+"${filtered[@]}"}")
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "== apt-get install ${missing[*]}"
  created_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    # Keep the packages' own system services from starting: tests run private instances on free ports.
    printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
    as_root chmod +x /usr/sbin/policy-rc.d
    created_policy=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  [ "$created_policy" = 0 ] || as_root rm -f /usr/sbin/policy-rc.d
fi

# A project virtual environment: Debian's own python3 refuses pip installs outside one (PEP 668).
BASE_PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "== $BASE_PY -m venv $VENV"
  "$BASE_PY" -m venv "$VENV"
fi
EXTRAS=test
[ "$DEMO" = 1 ] && EXTRAS=gateway,cloud
echo "== pip install -e .[$EXTRAS] into $VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[$EXTRAS]"

if [ "$DEMO" = 0 ] && [ -f tests/micropython/package-lock.json ]; then
  echo "== npm ci (MicroPython WebAssembly runtime)"
  npm ci --prefix tests/micropython --no-audit --no-fund --loglevel=error
fi
