#!/bin/bash
# Sums, per partition, the memtable bytes fjall queued for flushing, from a server log written with
# RUST_LOG=info,fjall=debug. Every byte there also went through the journal. Also counts memtable
# rotations (each seals a journal and starts a new one).
#   RUST_LOG=info,fjall=debug target/release/provledger serve --data-dir D > server.log 2>&1 &
#   … drive it …
#   bash bench/memtable-bytes.sh server.log
set -euo pipefail
sed 's/\x1b\[[0-9;]*m//g' "$1" |
  awk '/Enqueuing [a-z]+:[0-9]+ for flushing/ {
         split($0, a, "Enqueuing "); split(a[2], b, ":"); p = b[1]
         n = a[2]; sub(/.*\(/, "", n); sub(/ B\).*/, "", n)
         bytes[p] += n; flushes[p]++; total += n }
       /Rotating memtable/ { rotations++ }
       END { for (p in bytes) printf "%-12s %4d flushes %8.1f MB\n", p, flushes[p], bytes[p] / 1e6
             printf "%-12s %4s         %8.1f MB; %d memtable rotations\n", "total", "", total / 1e6, rotations }' |
  sort -k4 -g -r
