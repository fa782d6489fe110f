#!/usr/bin/env bash
# cellpay and PostgreSQL side by side, in one invocation on this machine (issue 5).
#
#   bench/side-by-side.sh [--seconds 40] [--accounts 10000] [--clients 64] [--batch 1000]
#                         [--batch-clients 16] [--shards 8] [--bin PATH] [--out DIR] [--smoke]
#
# 1. PostgreSQL (Debian's, installed if missing) in a temporary directory on a loopback port,
#    fsync and synchronous_commit on; the same accounts and funding as cellpay's bench; pgbench
#    runs bench/transfer.sql (debit with a balance check, credit, a row per transfer) from
#    --clients clients for --seconds; money is checked conserved; torn down.
# 2. cellpay: a 3-node cluster of --shards shards (`cellpay cluster new`; each shard one Raft
#    group on all three nodes) on loopback, fsync on; `cellpay bench` sends single transfers
#    (one per request) from --clients clients for --seconds, then batches of --batch from
#    --batch-clients clients (--batch 0 skips them); each run checks conservation; torn down.
# 3. A table with the ratio, and everything as JSON in DIR/side-by-side.json.
#
# --bin uses a built cellpay instead of `cargo build --release`; --smoke is a short run (5 s,
# 1000 accounts) that checks the machinery, not the figures. Everything runs on this machine:
# the load generators share the cores with the servers, for both systems alike.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
caller="$(pwd)"
root="$(dirname "$here")"

seconds=40 accounts=10000 clients=64 batch=1000 batch_clients=16 shards=8 bin="" out="$root/bench/out" smoke=0
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --accounts) accounts="$2"; shift 2 ;;
    --clients) clients="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    --batch-clients) batch_clients="$2"; shift 2 ;;
    --shards) shards="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --smoke) smoke=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$smoke" = 1 ]; then seconds=5 accounts=1000 batch=100; fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"

work="$(mktemp -d /tmp/cellpay-sbs-XXXXXX)"
chmod 755 "$work"
# PostgreSQL runs as its own user, who may not read this checkout: everything it reads is
# copied under $work, and every command runs from there.
cd "$work"
pg_pid_file="" node_pids=()
cleanup() {
  set +e
  for pid in "${node_pids[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${node_pids[@]}"; do wait "$pid" 2>/dev/null; done
  if [ -n "$pg_pid_file" ] && [ -f "$pg_pid_file" ]; then
    as_pg "$pgbin/pg_ctl" -D "$work/pg/data" -m fast stop >/dev/null 2>&1
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# A free loopback port at or above $1 (and, with $2 > 0, $2 more after it).
free_port() {
  python3 - "$1" "${2:-0}" <<'PY'
import socket, sys
start, extra = int(sys.argv[1]), int(sys.argv[2])
def free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port)); return True
        except OSError:
            return False
port = start
while not all(free(port + k) and free(port + k + 1000) for k in range(extra + 1)):
    port += 7
print(port)
PY
}

echo "== cellpay binary"
if [ -z "$bin" ]; then
  (cd "$root" && cargo build --release --bin cellpay)
  bin="$root/target/release/cellpay"
fi
case "$bin" in /*) ;; *) bin="$caller/$bin" ;; esac
[ -x "$bin" ] || { echo "no cellpay binary at $bin" >&2; exit 1; }

echo "== PostgreSQL"
pgbin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
if [ -z "$pgbin" ] || [ ! -x "$pgbin/postgres" ] || [ ! -x "$pgbin/pgbench" ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-contrib >/dev/null
  pgbin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
fi
# initdb and postgres refuse to run as root: run them as the `postgres` user then.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
mkdir -p "$work/pg"
cp "$here/schema.sql" "$here/transfer.sql" "$work/pg/"
[ "$(id -u)" = 0 ] && chown -R postgres "$work/pg"
pg_port="$(free_port 55432)"
as_pg "$pgbin/initdb" -D "$work/pg/data" -A trust -U bench --no-sync >/dev/null
pg_pid_file="$work/pg/data/postmaster.pid"
as_pg "$pgbin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w start -o \
  "-p $pg_port -k $work/pg -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on \
   -c max_connections=$((clients + 20)) -c shared_buffers=256MB" >/dev/null
pg_version="$("$pgbin/postgres" --version)"
psql_() { as_pg "$pgbin/psql" -X -q -h 127.0.0.1 -p "$pg_port" -U bench "$@"; }
psql_ -d postgres -c "CREATE DATABASE bench" >/dev/null
psql_ -d bench -v ON_ERROR_STOP=1 -v naccounts="$accounts" -f "$work/pg/schema.sql" >/dev/null
mkdir -p "$work/pg/logs"
[ "$(id -u)" = 0 ] && chown postgres "$work/pg/logs"
pg_cmd="pgbench -n -c $clients -j 2 -T $seconds -f bench/transfer.sql -D naccounts=$accounts --max-tries=10 -l"
echo "$pg_cmd"
(cd "$work/pg/logs" && as_pg "$pgbin/pgbench" -h 127.0.0.1 -p "$pg_port" -U bench -n -c "$clients" -j 2 \
  -T "$seconds" -P 5 -f "$work/pg/transfer.sql" -D naccounts="$accounts" --max-tries=10 \
  -l --log-prefix="$work/pg/logs/tx" bench) | tee "$work/pg/pgbench.out"
pg_sum="$(psql_ -d bench -At -c "SELECT sum(balance) FROM accounts")"
pg_rows="$(psql_ -d bench -At -c "SELECT count(*) FROM transfers")"
as_pg "$pgbin/pg_ctl" -D "$work/pg/data" -m fast stop >/dev/null
pg_pid_file=""

echo "== cellpay: 3 nodes, $shards shards"
http_port="$(free_port 41080 2)"
token="sidebyside-$(date +%s)-token"
"$bin" cluster new --nodes 3 --shards "$shards" --data "$work/cp" --http-port "$http_port" --token "$token" >/dev/null
for k in 1 2 3; do
  "$bin" node --config "$work/cp/node-$k/config.toml" >"$work/cp/node-$k.log" 2>&1 &
  node_pids+=("$!")
done
targets="http://127.0.0.1:$http_port,http://127.0.0.1:$((http_port + 1)),http://127.0.0.1:$((http_port + 2))"
for _ in $(seq 1 120); do
  ready=1
  for k in 0 1 2; do
    body="$(curl -fsS "http://127.0.0.1:$((http_port + k))/health" 2>/dev/null || true)"
    case "$body" in *'"ok"'*|*'ok'*) ;; *) ready=0 ;; esac
  done
  [ "$ready" = 1 ] && break
  sleep 0.5
done
cp_cmd="cellpay bench --target <3 nodes, $shards shards> --accounts $accounts --duration ${seconds}s --concurrency $clients"
echo "$cp_cmd"
"$bin" bench --target "$targets" --token "$token" --accounts "$accounts" --duration "${seconds}s" \
  --concurrency "$clients" --json "$work/cellpay-single.json"
if [ "$batch" -gt 1 ]; then
  cp_batch_cmd="cellpay bench --target <3 nodes, $shards shards> --accounts $accounts --duration ${seconds}s --concurrency $batch_clients --batch $batch"
  echo "$cp_batch_cmd"
  "$bin" bench --target "$targets" --token "$token" --accounts "$accounts" --duration "${seconds}s" \
    --concurrency "$batch_clients" --batch "$batch" --json "$work/cellpay-batch.json"
else
  cp_batch_cmd=""
fi

echo "== results"
python3 "$here/report.py" \
  --pgbench-out "$work/pg/pgbench.out" --pgbench-logs "$work/pg/logs" \
  --pg-sum "$pg_sum" --pg-rows "$pg_rows" --pg-expected-sum "$((accounts * 1000000))" \
  --pg-version "$pg_version" --pg-cmd "$pg_cmd" \
  --cellpay-single "$work/cellpay-single.json" --cellpay-cmd "$cp_cmd" \
  --cellpay-batch "$work/cellpay-batch.json" --cellpay-batch-cmd "$cp_batch_cmd" \
  --seconds "$seconds" --accounts "$accounts" --clients "$clients" --shards "$shards" \
  --json "$out/side-by-side.json"
