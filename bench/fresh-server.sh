# Sourced by bench/ab.sh and bench/oha-p99.sh: starts $BIN on a fresh data dir $D listening on
# 127.0.0.1:$PORT, waits until it is ready, sets PID, URL and PROVLEDGER_TOKEN (the admin
# token), and stops the server when the script exits.
URL=http://127.0.0.1:$PORT
rm -rf "$D"
"$BIN" serve --data-dir "$D" --listen 127.0.0.1:$PORT > "$D.server.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null || true' EXIT
until curl -sf $URL/healthz >/dev/null; do sleep 0.05; done
export PROVLEDGER_TOKEN
PROVLEDGER_TOKEN=$(cat "$D/admin.token")
