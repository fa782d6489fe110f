#!/usr/bin/env bash
# Idle accounts and restart (issue 5): memory per idle account on a node, and a node's restart
# to serving with that data.
#
#   bench/idle-restart.sh [--accounts 10000000] [--settle 40] [--bin PATH]
#
# A 3-node, 8-shard cluster (`cellpay cluster new`) on loopback ports 43080-43082 in a temporary
# directory; `cellpay bench --open-only` opens the accounts through POST /v1/accounts/batch; after
# --settle seconds (the quiet-rule snapshots) node 1's resident memory (VmRSS) gives the bytes per
# account; node 1 is stopped (SIGTERM) and started again, timed from its start to /health
# answering 200 (every group on it knows its leader); then its resident memory and its peak
# during the restart (VmHWM). Node 1's start log is copied to OUT/idle-restart-node1.log (its
# `databases opened`, `snapshot loaded` and `state machines loaded` lines time the parts).
# Ten million accounts need about 8 GB of memory for the three nodes and take ~5 minutes.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
accounts=10000000 settle=40 bin="" out="$root/bench/out" port=43080
while [ $# -gt 0 ]; do
  case "$1" in
    --accounts) accounts="$2"; shift 2 ;;
    --settle) settle="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
if [ -z "$bin" ]; then
  (cd "$root" && cargo build --release -p node)
  bin="$root/target/release/cellpay"
fi
mkdir -p "$out"
token=idle-restart-token-0123456789
dir="$(mktemp -d /tmp/cellpay-idle-XXXX)"
pids=()
cleanup() { kill -TERM "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

healthy() { # port
  for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$1/health" > /dev/null && return 0
    sleep 0.05
  done
  echo "node on port $1 never became healthy" >&2
  return 1
}
rss_kb() { awk "/^$2:/{print \$2}" "/proc/$1/status"; }

"$bin" cluster new --nodes 3 --data "$dir" --http-port "$port" --token "$token" > /dev/null
for k in 1 2 3; do
  "$bin" node --config "$dir/node-$k/config.toml" > "$dir/node-$k.log" 2>&1 &
  pids+=($!)
done
for k in 0 1 2; do healthy $((port + k)); done
before=$(rss_kb "${pids[0]}" VmRSS)
targets="http://127.0.0.1:$port,http://127.0.0.1:$((port + 1)),http://127.0.0.1:$((port + 2))"
"$bin" bench --target "$targets" --token "$token" --accounts "$accounts" --open-only | tail -1
sleep "$settle"
live=$(rss_kb "${pids[0]}" VmRSS)

kill -TERM "${pids[0]}"
wait "${pids[0]}" || true
started=$(date +%s.%N)
"$bin" node --config "$dir/node-1/config.toml" > "$dir/node-1-restart.log" 2>&1 &
pids[0]=$!
healthy "$port"
serving=$(date +%s.%N)
sleep 3
after=$(rss_kb "${pids[0]}" VmRSS)
peak=$(rss_kb "${pids[0]}" VmHWM)
cp "$dir/node-1-restart.log" "$out/idle-restart-node1.log"

python3 - "$accounts" "$before" "$live" "$after" "$peak" "$started" "$serving" <<'PY'
import sys
accounts, before, live, after, peak = (int(x) for x in sys.argv[1:6])
started, serving = float(sys.argv[6]), float(sys.argv[7])
print(f"accounts on the node:            {accounts:,}")
print(f"bytes per idle account, live:    {(live - before) * 1024 // accounts}")
print(f"restart to serving:              {serving - started:.2f} s")
print(f"bytes per account, restarted:    {after * 1024 // accounts}")
print(f"peak resident during restart:    {peak / 1024 / 1024:.2f} GB")
PY
