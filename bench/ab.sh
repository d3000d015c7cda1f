#!/bin/bash
# One A/B run: starts BIN on a fresh data dir, drives it with wrk for SECS seconds, and prints
# records/s, wrk's latency percentiles and the server's CPU time per 1,000 records appended
# (utime + stime from /proc/PID/stat, in µs). CPU per record drifts less with the machine's
# speed than throughput does; alternate two builds and compare runs side by side.
#   bash bench/ab.sh BIN RECORDS CONNS SECS     e.g. bash bench/ab.sh target/release/provledger 1 64 15
# REFS=N: each record cites N earlier records by entity name (appended before the timing).
# Needs wrk and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$1; RECORDS=$2; CONNS=$3; SECS=$4
D=${AB_DIR:-/tmp/provledger-ab}
PORT=${PORT:-18284}
. bench/fresh-server.sh
if [ "${REFS:-0}" -gt 0 ]; then
  # The entities the records cite (bench/wrk-records.lua), before the timing.
  seed=$(for k in $(seq 0 999); do
    printf '{"kind":"input","entity":"scale:%d","actor":{"type":"system","id":"crm"}},' "$k"
  done)
  curl -sf -o /dev/null -H "Authorization: Bearer $PROVLEDGER_TOKEN" -H 'Content-Type: application/json' \
    --data-binary "[${seed%,}]" $URL/v1/records
fi
ticks() { awk '{print $14 + $15}' /proc/$PID/stat; }
size() { curl -s $URL/checkpoint | sed -n 2p; }
c0=$(ticks); n0=$(size)
out=$(RECORDS=$RECORDS wrk -t2 -c"$CONNS" -d"${SECS}"s --latency -s bench/wrk-records.lua $URL | grep acknowledged)
c1=$(ticks); n1=$(size)
hz=$(getconf CLK_TCK)
echo "$BIN ${RECORDS}x$CONNS refs ${REFS:-0}: $out; server CPU $(( (c1 - c0) * 1000000000 / hz / (n1 - n0) )) µs per 1,000 records"
