#!/usr/bin/env bash
# The main job on the embedded defaults: validate, compile and build
# examples/minimal, and show where the results are.
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
echo "== strata build ($ws)"
bin/strata -C "$ws" --no-progress build --out-dir "$out" > "$out/outputs.txt"
echo
echo "plan:    $out/plan.json"
echo "graph:   $out/plan.dot"
while IFS=$'\t' read -r path digest; do
	printf 'output:  %s  %s\n' "$path" "$digest"
done < "$out/outputs.txt"
echo
echo "== strata push ($ws, into the local OCI layout in the store)"
bin/strata -C "$ws" --no-progress push > "$out/pushed.txt"
while IFS=$'\t' read -r ref digest; do
	printf 'pushed:  %s  %s\n' "$ref" "$digest"
done < "$out/pushed.txt"
repo=$(head -n1 "$out/pushed.txt" | cut -f1)
repo=${repo%:*}
bin/strata versions "$repo"
echo "== strata install $repo (A/B slots in $out/device)"
bin/strata install "$repo" --device-type qemu/x86_64 --target "$out/device" --allow-downgrade
printf 'device:  %s -> %s\n' "$out/device/current" "$(readlink "$out/device/current")"
ls -l "$out/device/current/"
