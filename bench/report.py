#!/usr/bin/env python3
"""Prints the side-by-side table (cellpay vs PostgreSQL) and writes it as JSON.

Reads pgbench's summary and per-transaction logs (latency percentiles come from the logs: every
transaction's time in microseconds, failed ones counted apart) and the JSON reports of
`cellpay bench --json`. Exits non-zero when a run lost or created money.
"""
import argparse
import datetime
import glob
import json
import os
import platform
import re
import sys


def percentile(sorted_values, per_mille):
    """Nearest rank, as `cellpay bench` computes it."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * per_mille // 1000))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def pgbench_result(out_path, logs_dir, seconds):
    text = open(out_path).read()
    tps = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", text)
    processed = re.search(r"number of transactions actually processed: (\d+)", text)
    failed = re.search(r"number of failed transactions: (\d+)", text)
    retried = re.search(r"number of transactions retried: (\d+)", text)
    latencies = []
    log_failed = 0
    for path in glob.glob(os.path.join(logs_dir, "tx*")):
        for line in open(path):
            fields = line.split()
            if len(fields) < 3:
                continue
            if fields[2] == "failed":
                log_failed += 1
                continue
            latencies.append(int(fields[2]))
    latencies.sort()
    ms = lambda per_mille: round(percentile(latencies, per_mille) / 1000.0, 3)
    return {
        "transfers_per_s": float(tps.group(1)) if tps else None,
        "transfers": int(processed.group(1)) if processed else len(latencies),
        "failed": int(failed.group(1)) if failed else log_failed,
        "retried": int(retried.group(1)) if retried else 0,
        "latency_ms": {
            "p50": ms(500),
            "p99": ms(990),
            "p999": ms(999),
            "max": round(latencies[-1] / 1000.0, 3) if latencies else 0.0,
        },
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--pgbench-out", required=True)
    p.add_argument("--pgbench-logs", required=True)
    p.add_argument("--pg-sum", type=int, required=True)
    p.add_argument("--pg-rows", type=int, required=True)
    p.add_argument("--pg-expected-sum", type=int, required=True)
    p.add_argument("--pg-version", required=True)
    p.add_argument("--pg-cmd", required=True)
    p.add_argument("--cellpay-single", required=True)
    p.add_argument("--cellpay-cmd", required=True)
    p.add_argument("--cellpay-batch")
    p.add_argument("--cellpay-batch-cmd", default="")
    p.add_argument("--seconds", type=int, required=True)
    p.add_argument("--accounts", type=int, required=True)
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--json", required=True)
    a = p.parse_args()

    pg = pgbench_result(a.pgbench_out, a.pgbench_logs, a.seconds)
    pg["system"] = a.pg_version + " (1 server, fsync on, synchronous_commit=on)"
    pg["command"] = a.pg_cmd
    pg["conservation_ok"] = a.pg_sum == a.pg_expected_sum
    pg["rows"] = a.pg_rows
    single = json.load(open(a.cellpay_single))
    single["system"] = f"cellpay (3 nodes, {a.shards} shards, fsync on)"
    single["command"] = a.cellpay_cmd
    rows = [("PostgreSQL", pg), ("cellpay single", single)]
    batch = None
    if a.cellpay_batch and os.path.exists(a.cellpay_batch):
        batch = json.load(open(a.cellpay_batch))
        batch["system"] = single["system"]
        batch["command"] = a.cellpay_batch_cmd
        rows.append(("cellpay batch", batch))
    ratio = None
    if pg["transfers_per_s"]:
        ratio = round(single["transfers_per_s"] / pg["transfers_per_s"], 2)

    print()
    print(f"{'run':<16}{'transfers/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'p999 ms':>10}"
          f"{'max ms':>10}  money")
    for name, r in rows:
        lat = r["latency_ms"]
        money = "conserved" if r["conservation_ok"] else "WRONG"
        print(f"{name:<16}{r['transfers_per_s']:>12.1f}{lat['p50']:>10.2f}{lat['p99']:>10.2f}"
              f"{lat['p999']:>10.2f}{lat['max']:>10.2f}  {money}")
    print()
    print(f"cellpay single / PostgreSQL: {ratio}x  (targets: 4x = 12,000/s at p99 <= 20 ms; "
          f"batch 100,000/s at p99 <= 250 ms)")
    for name, r in rows:
        print(f"  {name}: {r['command']}")

    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
        },
        "seconds": a.seconds,
        "accounts": a.accounts,
        "clients": a.clients,
        "shards": a.shards,
        "postgres": pg,
        "cellpay_single": single,
        "cellpay_batch": batch,
        "ratio_single_vs_postgres": ratio,
    }
    with open(a.json, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\nJSON: {a.json}")
    if not all(r["conservation_ok"] for _, r in rows):
        print("a run did not conserve money", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
