#!/usr/bin/env bash
# The main job, end to end on loopback: build, make dev certificates and an admin token, start
# the launcher (orly-db, orly-relay, orly-sync-negentropy with mTLS), start a second relay seeded
# with generated events, run a client-mode `orly sync --dir both` through the secured service,
# run it again (zero work), verify the audit chain, and stop everything it started.
#
# Uses the default addresses of the ORLY documents (db 127.0.0.1:50051, relay 127.0.0.1:7777,
# sync 127.0.0.1:50064); override with ORLY_DB_LISTEN, ORLY_RELAY_LISTEN and
# ORLY_LAUNCHER_SYNC_NEGENTROPY_LISTEN. ORLY_DEMO_DIR keeps the demo's files (default: a temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked --bins
# Where cargo put them: CARGO_TARGET_DIR when set (relative to here, as cargo reads it).
target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$PWD/$target" ;; esac
BIN="$target/debug"
DEMO="${ORLY_DEMO_DIR:-$(mktemp -d -t orly-demo.XXXXXX)}"
mkdir -p "$DEMO"
export ORLY_DB_LISTEN="${ORLY_DB_LISTEN:-127.0.0.1:50051}"
export ORLY_RELAY_LISTEN="${ORLY_RELAY_LISTEN:-127.0.0.1:7777}"
export ORLY_LAUNCHER_SYNC_NEGENTROPY_LISTEN="${ORLY_LAUNCHER_SYNC_NEGENTROPY_LISTEN:-127.0.0.1:50064}"
SYNC_ADDR="$ORLY_LAUNCHER_SYNC_NEGENTROPY_LISTEN"

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }

step "dev PKI, admin token (in $DEMO)"
"$BIN/orly" certs init "$DEMO/pki" --admin demo --force
"$BIN/orly" token mint --admin demo --ttl 1h --key "$DEMO/pki/token.key" --cert "$DEMO/pki/demo.pem" --out "$DEMO/demo.token"

step "seed: our store and a second relay's store, 2 000 shared events, 1 000 only on each side"
rm -rf "$DEMO/main-data" "$DEMO/peer-data" "$DEMO/audit"
"$BIN/orly" gen --count 2000 --seed 100 > "$DEMO/shared.jsonl"
"$BIN/orly" gen --count 1000 --seed 101 --kinds 1,7 > "$DEMO/ours.jsonl"
"$BIN/orly" gen --count 1000 --seed 102 --kinds 1,7 > "$DEMO/theirs.jsonl"
cat "$DEMO/shared.jsonl" "$DEMO/ours.jsonl" | "$BIN/orly" import --data-dir "$DEMO/main-data"
cat "$DEMO/shared.jsonl" "$DEMO/theirs.jsonl" | "$BIN/orly" import --data-dir "$DEMO/peer-data"

step "second relay (the peer) on a free loopback port"
"$BIN/orly-relay" --data-dir "$DEMO/peer-data" --listen 127.0.0.1:0 > "$DEMO/peer.out" 2> "$DEMO/peer.err" &
PIDS+=($!)
for _ in $(seq 50); do [ -s "$DEMO/peer.out" ] && break; sleep 0.1; done
PEER="ws://$(head -n1 "$DEMO/peer.out" | awk '{print $NF}')"
echo "peer relay: $PEER"

step "launcher: orly-db, orly-relay, orly-sync-negentropy (mTLS, tokens, policy, audit)"
ORLY_DATA_DIR="$DEMO/main-data" \
ORLY_LAUNCHER_SYNC_NEGENTROPY_ENABLED=true \
ORLY_TLS_CERT="$DEMO/pki/server.pem" ORLY_TLS_KEY="$DEMO/pki/server.key" \
ORLY_TLS_CLIENT_CA="$DEMO/pki/ca.pem" ORLY_POLICY="$DEMO/pki/policy.toml" \
ORLY_TOKEN_KEYS="$DEMO/pki/token.pub" ORLY_AUDIT_DIR="$DEMO/audit" ORLY_AUDIT_KEY="$DEMO/pki/audit.key" \
ORLY_LAUNCHER_HEALTH_CERT="$DEMO/pki/demo.pem" ORLY_LAUNCHER_HEALTH_KEY="$DEMO/pki/demo.key" \
  "$BIN/orly-launcher" > "$DEMO/launcher.log" 2>&1 &
LAUNCHER=$!
PIDS=("$LAUNCHER" "${PIDS[@]}")
for _ in $(seq 150); do
  grep -q "all services ready" "$DEMO/launcher.log" && break
  if ! kill -0 "$LAUNCHER" 2>/dev/null; then cat "$DEMO/launcher.log"; echo "launcher failed"; exit 1; fi
  sleep 0.2
done
grep -q "all services ready" "$DEMO/launcher.log" || { cat "$DEMO/launcher.log"; echo "launcher not ready"; exit 1; }
grep -E "listening on|ready" "$DEMO/launcher.log" | sed 's/^/  /'

SYNC=("$BIN/orly" sync "$PEER" --server "$SYNC_ADDR" --dir both
      --ca "$DEMO/pki/ca.pem" --cert "$DEMO/pki/demo.pem" --key "$DEMO/pki/demo.key" --token-file "$DEMO/demo.token")

step "client-mode sync through the secured service: ${SYNC[*]:1}"
"${SYNC[@]}"

step "again: nothing left to move"
"${SYNC[@]}" --json | tail -n1

step "stop everything (the sync service seals the audit log with a signed checkpoint)"
cleanup
trap - EXIT

step "audit chain"
"$BIN/orly" audit verify "$DEMO/audit" --pubkey "$DEMO/pki/audit.pub"
step "store after the sync (direct read, services stopped)"
"$BIN/orly" stats --data-dir "$DEMO/main-data" | head -n 3
echo
echo "demo files: $DEMO"
