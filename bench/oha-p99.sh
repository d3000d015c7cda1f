#!/bin/bash
# One open-loop latency run: starts BIN on a fresh data dir, sends single records with oha at
# RATE requests/s from 64 connections for SECS seconds (default 20), latency counted from each
# request's scheduled send time, and prints oha's rate, p50 and p99, the server's CPU time, and
# the server's own view from its /metrics histograms: how many requests took over 10 and 20 ms
# inside the server (from its headers read to its receipt ready) and how many commits over
# 5 and 10 ms. A p99 far above what the server counts was spent outside its handlers: in the
# sockets, in waiting for a CPU, or in the load generator itself.
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
# Counts above a bucket's bound: the histogram's total minus the bucket's cumulative count.
server=$(curl -sf -H "Authorization: Bearer $PROVLEDGER_TOKEN" $URL/metrics | awk '
  /^provledger_http_request_seconds_bucket\{route="\/v1\/records"/ { split($1, a, "le=\""); r[substr(a[2], 1, index(a[2], "\"") - 1)] = $2 }
  /^provledger_commit_seconds_bucket/ { split($1, a, "le=\""); c[substr(a[2], 1, index(a[2], "\"") - 1)] = $2 }
  END { printf "server: %d of %d requests over 10 ms, %d over 20 ms; %d of %d commits over 5 ms, %d over 10 ms",
        r["+Inf"] - r["0.01"], r["+Inf"], r["+Inf"] - r["0.02"], c["+Inf"] - c["0.005"], c["+Inf"], c["+Inf"] - c["0.01"] }') \
  || server="server: /metrics did not answer"
echo "$BIN at $RATE/s: $(echo "$out" | grep -E 'Requests/sec|50.00%|99.00%' | tr -s ' \n\t' ' ')server CPU $(( (c1 - c0) * 1000 / $(getconf CLK_TCK) )) ms; $server"
