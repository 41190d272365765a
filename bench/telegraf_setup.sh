#!/usr/bin/env bash
# Build a custom Telegraf (only the plugins bench/bench_telegraf.py uses) from the Go module proxy into the bench
# cache. Nothing of Telegraf is committed here: the binary lives in $EDGE_GW_BENCH_CACHE/bin (default
# ~/.cache/edge-gw-bench). About 5-10 min and 1-2 GB of Go module/build cache the first time; a no-op after.
#
#   bash bench/telegraf_setup.sh            # builds the pinned version
#   TELEGRAF_VERSION=v1.39.3 bash bench/telegraf_setup.sh
set -euo pipefail

CACHE=${EDGE_GW_BENCH_CACHE:-$HOME/.cache/edge-gw-bench}
# The proxy's version list here stops at 1.37.2 but serves the exact tag; v1.39.x declares go 1.26.0.
VERSION=${TELEGRAF_VERSION:-v1.39.3}
TAGS="custom,inputs.mqtt_consumer,outputs.influxdb,parsers.json_v2,parsers.influx"
BIN="$CACHE/bin/telegraf"

if [ -x "$BIN" ] && [ "$(cat "$CACHE/telegraf.version" 2>/dev/null)" = "$VERSION $TAGS" ]; then
    echo "telegraf $VERSION already built: $BIN"
    exit 0
fi
command -v go >/dev/null || { echo "telegraf_setup: go is not installed (needs Go >= 1.26)" >&2; exit 1; }
go version
mkdir -p "$CACHE/bin"
CGO_ENABLED=0 GOBIN="$CACHE/bin" go install \
    -ldflags "-s -w -X github.com/influxdata/telegraf/internal.Version=${VERSION#v}" \
    -tags "$TAGS" "github.com/influxdata/telegraf/cmd/telegraf@$VERSION"
echo "$VERSION $TAGS" > "$CACHE/telegraf.version"
"$BIN" --version
