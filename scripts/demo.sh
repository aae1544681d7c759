#!/usr/bin/env bash
# The main job on the embedded defaults: validate and compile examples/minimal and
# show where the results are.
set -euo pipefail
cd "$(dirname "$0")/.."
ws=examples/minimal
out=out/demo
mkdir -p "$out"
echo "== strata vet ($ws)"
bin/strata -C "$ws" vet
echo "== strata compile ($ws)"
bin/strata -C "$ws" compile -o "$out/plan.json"
bin/strata -C "$ws" graph --format dot > "$out/plan.dot"
echo "== plan nodes"
bin/strata -C "$ws" graph --format json | python3 -c 'import json,sys; g=json.load(sys.stdin); [print("  %-10s %-34s %s" % (n["kind"], n["name"], n["id"][:16])) for n in g["nodes"]]'
echo
echo "plan:  $out/plan.json"
echo "graph: $out/plan.dot"
