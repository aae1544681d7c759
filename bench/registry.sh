#!/usr/bin/env bash
# Registry benchmark: strata push/pull (the registry package) against a plain
# oras-go client (oras.Copy, bench/registry/main.go) and crane, side by side
# on one in-process reference registry on 127.0.0.1: one 256 MiB output and
# 500 outputs of 4 KiB; push, pull, and re-push of unchanged content. Prints
# a Markdown table of medians (BENCH_RUNS runs, default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x bin/crane ] || { echo "bench: bin/crane missing (run make setup)" >&2; exit 1; }
go run ./bench/registry -runs "${BENCH_RUNS:-3}" -crane bin/crane
