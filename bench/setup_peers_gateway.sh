#!/bin/sh
# Installs the peer gateways that bench/bench_peers_gateway.py compares edge-gw with, each into its own venv in a
# cache folder (nothing of theirs is committed): Theengs Gateway (+ TheengsDecoder) and ruuvitag-sensor (+ paho-mqtt).
#   sh bench/setup_peers_gateway.sh            # installs into ~/.cache/edge-gw-bench/{theengs,ruuvitag}
# EDGE_GW_BENCH_CACHE moves the cache folder; THEENGS_VERSION and RUUVITAG_VERSION pin other releases
# (check what exists with `pip index versions TheengsGateway`). Re-running it is a no-op once both are installed.
set -eu
CACHE="${EDGE_GW_BENCH_CACHE:-$HOME/.cache/edge-gw-bench}"
THEENGS_VERSION="${THEENGS_VERSION:-1.8.0}"
RUUVITAG_VERSION="${RUUVITAG_VERSION:-4.1.0}"
PYTHON="${PYTHON:-python3}"

install() {  # install VENV REQUIREMENT...
    venv="$CACHE/$1"; shift
    [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
}

mkdir -p "$CACHE"
install theengs "TheengsGateway==$THEENGS_VERSION"
install ruuvitag "ruuvitag-sensor==$RUUVITAG_VERSION" "paho-mqtt>=2,<3"
"$CACHE/theengs/bin/python" -c "import importlib.metadata as m; print('TheengsGateway', m.version('TheengsGateway'), \
'TheengsDecoder', m.version('TheengsDecoder'), 'bleak', m.version('bleak'), 'paho-mqtt', m.version('paho-mqtt'))"
"$CACHE/ruuvitag/bin/python" -c "import importlib.metadata as m; print('ruuvitag-sensor', m.version('ruuvitag-sensor'), \
'bleak', m.version('bleak'), 'paho-mqtt', m.version('paho-mqtt'))"
