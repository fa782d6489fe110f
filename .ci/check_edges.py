#!/usr/bin/env python3
"""Fails when a workspace crate depends on another in a direction STYLE.md forbids."""
import json
import subprocess
import sys

ALLOWED = {
    "ledger": set(),
    "consensus": {"ledger"},
    "cluster": {"consensus", "ledger"},
    "actors": {"consensus", "cluster", "ledger"},
    "gateway": {"ledger"},
    "node": {"ledger", "consensus", "cluster", "actors", "gateway"},
    "chaos-tests": {"node", "ledger", "consensus", "cluster", "actors", "gateway"},
}

meta = json.loads(subprocess.check_output(["cargo", "metadata", "--format-version", "1", "--no-deps"]))
members = {p["name"] for p in meta["packages"]}
bad = []
for package in meta["packages"]:
    name = package["name"]
    allowed = ALLOWED.get(name)
    if allowed is None:
        bad.append(f"{name}: not in the edge table of .ci/check_edges.py")
        continue
    for dep in package["dependencies"]:
        if dep["name"] in members and dep["name"] not in allowed:
            bad.append(f"{name} -> {dep['name']} is not an allowed edge")
for line in bad:
    print("crate edge violation:", line)
sys.exit(1 if bad else 0)
