#!/bin/bash
# One open-loop latency run: starts BIN on a fresh data dir, sends single records with oha at
# RATE requests/s from 64 connections for SECS seconds (default 20), latency counted from each
# request's scheduled send time, and prints oha's rate, p50 and p99 and the server's CPU time.
#   bash bench/oha-p99.sh target/release/provledger 10000      (needs oha: cargo install oha --locked)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$1; RATE=$2; SECS=${3:-20}
D=${OHA_DIR:-/tmp/provledger-oha}
PORT=${PORT:-18291}
. bench/fresh-server.sh
ticks() { awk '{print $14 + $15}' /proc/$PID/stat; }
c0=$(ticks)
out=$(oha --no-tui -z "${SECS}s" -c 64 -q "$RATE" --latency-correction -m POST \
  -H "Authorization: Bearer $PROVLEDGER_TOKEN" -T application/json -D bench/record.json $URL/v1/records)
c1=$(ticks)
echo "$BIN at $RATE/s: $(echo "$out" | grep -E 'Requests/sec|50.00%|99.00%' | tr -s ' \n\t' ' ')server CPU $(( (c1 - c0) * 1000 / $(getconf CLK_TCK) )) ms"
