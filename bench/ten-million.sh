#!/bin/bash
# The 10-million-entry figures of issue 2, on a fresh data dir: ingest over HTTP with wrk
# (4 connections x 500 records), RSS while ingesting and at rest, restart to ready after SIGTERM
# and after SIGKILL, then inclusion-proof latency in process.
#   cargo build --release --bin provledger && \
#   cargo build --release -p provledger-ledger --example proof_latency && bash bench/ten-million.sh [DIR]
# Needs wrk, curl and bc; about 5 minutes of ingest on 2 cores and ~3 GB of disk.
# ENTRIES (default 9800000) sets where ingest stops and WRK_SECONDS (default 40) how long each
# wrk run lasts; small values try the script out.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/provledger}
D=${1:-/tmp/provledger-10m}
PORT=${PORT:-18285}
ENTRIES=${ENTRIES:-9800000}
URL=http://127.0.0.1:$PORT
rm -rf "$D"
start() {
  local t0
  t0=$(date +%s.%N)
  "$BIN" serve --data-dir "$D" --listen 127.0.0.1:$PORT >> "$D.server.log" 2>&1 &
  PID=$!
  until curl -sf $URL/healthz >/dev/null; do sleep 0.005; done
  echo "ready after $(echo "$(date +%s.%N) - $t0" | bc) s"
}
size() { curl -s $URL/checkpoint | sed -n 2p; }
rss() { echo "$1: $(grep -E 'VmRSS|VmHWM' /proc/$PID/status | tr -s ' \n' ' ')"; }
start
export PROVLEDGER_TOKEN
PROVLEDGER_TOKEN=$(cat "$D/admin.token")
( while kill -0 $PID 2>/dev/null; do sleep 20; rss "during ingest, size $(size)"; done ) &
SAMPLER=$!
while [ "$(size)" -lt "$ENTRIES" ]; do
  RECORDS=500 wrk -t2 -c4 -d${WRK_SECONDS:-40}s --latency -s bench/wrk-records.lua $URL | grep "acknowledged"
done
kill $SAMPLER
rss "ingest done, size $(size)"
sleep 10; rss "10 s after"
sleep 50; rss "60 s after"
# Where the memory at rest goes, as the server reports it (fjall's parts, per partition).
curl -s -H "Authorization: Bearer $PROVLEDGER_TOKEN" $URL/metrics \
  | grep -E '^(process_resident|provledger_store_(write_buffer|block_cache|bloom|segments))' \
  | grep -v ' 0$'
du -sh "$D"
kill $PID; wait $PID || true
echo "restart after SIGTERM:"; start; rss "after restart"
sleep 5; rss "5 s after restart"
kill -9 $PID; wait $PID 2>/dev/null || true
echo "restart after SIGKILL:"; start; rss "after restart"
kill $PID; wait $PID || true
target/release/examples/proof_latency "$D" 200000
