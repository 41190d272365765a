#!/usr/bin/env bash
# Installs everything edge-gw's tests and demo need on Debian 12 / Raspberry Pi OS: apt packages, the Python
# package with its test extra, the MicroPython WebAssembly runtime from npm, and the jars of an Apache Kafka broker
# from Maven Central (with a JDK and Maven). Safe to run again: it installs only
# what is missing. Services installed from apt are not started (the tests and the demo run private instances).
# `--demo`: only what `make demo` needs (the two servers, and the package with its gateway and cloud extras).
# `--demo --kafka`: that, plus Java and the Kafka broker's jars (`make demo KAFKA=1`).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

DEMO=0
KAFKA=0
for arg in "$@"; do
  case "$arg" in
    --demo) DEMO=1 ;;
    --kafka) KAFKA=1 ;;
    *) echo "usage: $0 [--demo [--kafka]]" >&2; exit 2 ;;
  esac
done
[ "$DEMO" = 0 ] && KAFKA=1
if [ "$DEMO" = 1 ]; then
  APT_PACKAGES=(python3-venv mosquitto mosquitto-clients influxdb influxdb-client)
else
  APT_PACKAGES=(python3-venv mosquitto mosquitto-clients influxdb influxdb-client victoria-metrics dbus openssl
                gcc python3-dev make cmake clang libclang-rt-14-dev nodejs npm debootstrap systemd)
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

# The receiver's optional C code (speedups/, docs/cloud-ingest.md "Speed-ups"): the tests hold it to the Python code,
# so they need it; the demo takes it when a C compiler and Python's headers are there, and runs without it otherwise.
if [ "$DEMO" = 0 ] || { command -v gcc >/dev/null && "$VENV/bin/python" -c \
    'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; }; then
  echo "== pip install ./speedups into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check ./speedups
  rm -rf speedups/build speedups/*.egg-info
else
  echo "== speedups/ not built (no gcc or no Python headers: apt install gcc python3-dev); cloud-ingest runs its Python code"
fi

if [ "$DEMO" = 0 ] && [ -f tests/micropython/package-lock.json ]; then
  echo "== npm ci (MicroPython WebAssembly runtime)"
  npm ci --prefix tests/micropython --no-audit --no-fund --loglevel=error
fi

# Apache Kafka 4.x for the tests (tests/kafka_server.py): a JDK (17 or newer, Kafka 4's minimum) and the broker's jars
# from Maven Central, copied by Maven from tests/kafka/pom.xml into a cache folder outside the repo (about 55 MB, plus
# about 80 MB in ~/.m2). A stamp of the pom's digest marks a complete copy: a changed pom copies again.
if [ "$KAFKA" = 1 ]; then
  java_major() { java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1; }
  need=()
  if ! command -v java >/dev/null || [ "$(java_major)" -lt 17 ] 2>/dev/null; then need+=(openjdk-17-jre-headless); fi
  command -v mvn >/dev/null || need+=(maven)
  if [ "${#need[@]}" -gt 0 ]; then
    echo "== apt-get install ${need[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
  fi
  KAFKA_JARS=${EDGE_GW_KAFKA_JARS:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-gw/kafka-jars}
  digest=$(sha256sum tests/kafka/pom.xml | cut -d' ' -f1)
  if [ "$(cat "$KAFKA_JARS/.pom-sha256" 2>/dev/null)" != "$digest" ]; then
    echo "== mvn dependency:copy-dependencies (Kafka broker jars) into $KAFKA_JARS"
    rm -rf "$KAFKA_JARS"
    mkdir -p "$KAFKA_JARS"
    mvn -B -q -f tests/kafka/pom.xml org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$KAFKA_JARS" -Dstyle.color=never
    echo "$digest" > "$KAFKA_JARS/.pom-sha256"
  fi
fi
