#!/usr/bin/env bash
# Build benchmark (BENCH.md, "the comparison workload against BuildStream"):
# `strata build -j 2` vs `bst --builders 2 build` (BuildStream 1.6, Debian's
# `buildstream`) on the same generated workload, side by side in one run, at
# N = 10, 50, 100 leaves: a busybox base imported once, N sandboxed leaves on it,
# one node merging their 2N files. Measures cold (fresh cache each run), no-op
# (everything cached, whole process) and incremental (leaf 001's text changed,
# a new text every run, so exactly two nodes rebuild), prints medians and the
# ratios strata/bst; then the per-stage Go benchmarks (sandbox overhead vs bare
# bwrap, staging 100k vs 10 files, commit vs SHA-256).
#
# Environment: BENCH_N="10 50 100" sizes, BENCH_RUNS to force the runs per
# measurement, BENCH_MERGE=copy to merge with one strata.copy stage per leaf
# instead of one stage with every leaf as an input, BENCH_GO=0 to skip the Go benchmarks, BENCH_PROFILE=0 to skip the
# strata profile (event timings of one cold build at the largest N).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
strata=$root/bin/strata
out=$root/bench/out/build
sizes=${BENCH_N:-10 50 100}
jobs=2
merge=${BENCH_MERGE:-run}
mkdir -p "$out"

[ -x "$strata" ] || { echo "bench: $strata missing (run make build)" >&2; exit 1; }

# Tools from Debian: hyperfine, and buildstream (1.6) only if missing.
need=()
command -v hyperfine >/dev/null 2>&1 || need+=(hyperfine)
command -v bst >/dev/null 2>&1 || need+=(buildstream)
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "bench: installing ${need[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null 2>&1 || true
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 || echo "bench: could not install ${need[*]}" >&2
fi
command -v hyperfine >/dev/null 2>&1 || { echo "bench: hyperfine is needed" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "bench: /bin/busybox (Debian busybox-static) is needed" >&2; exit 1; }

# BuildStream runs here as root without network: its user config and cache are
# private to the benchmark (XDG_* below); it stages with bubblewrap. Check that
# it can build at all on a tiny project, and keep the error text if not.
bst_ok=true
bst_reason=""
if ! command -v bst >/dev/null 2>&1; then
	bst_ok=false
	bst_reason="bst not installed"
fi
bst_env() { # bst_env CACHE: the environment prefix of a bst command
	echo "env XDG_CACHE_HOME=$1 XDG_CONFIG_HOME=$out/bst-config XDG_DATA_HOME=$out/bst-data"
}
mkdir -p "$out/bst-config" "$out/bst-data"
if $bst_ok; then
	rm -rf "$out/probe" "$out/probe-cache"
	go run ./bench/genbuild -n 1 -o "$out/probe"
	if ! msg=$($(bst_env "$out/probe-cache") bst -C "$out/probe/bst" --no-interactive --builders $jobs build final.bst 2>&1); then
		bst_ok=false
		bst_reason=$(printf '%s\n' "$msg" | grep -E 'ERROR|Error|error' | head -3 | tr '\n' ' ')
		[ -n "$bst_reason" ] || bst_reason=$(printf '%s\n' "$msg" | tail -3 | tr '\n' ' ')
	fi
	rm -rf "$out/probe" "$out/probe-cache"
fi
$bst_ok || echo "bench: BuildStream could not run: $bst_reason" >&2

runs_for() { # runs_for KIND N: timed runs per measurement
	if [ -n "${BENCH_RUNS:-}" ]; then echo "$BENCH_RUNS"; return; fi
	case $1 in
	cold) echo 3 ;;
	noop) echo 10 ;;
	incr) echo 5 ;;
	esac
}

# hf NAME RUNS PREPARE CMD [WARMUP]: median wall seconds of CMD (hyperfine, no
# shell), PREPARE run through the shell before every run. hyperfine's JSON is
# kept in $out/json/NAME.json.
mkdir -p "$out/json"
hf() {
	local name=$1 runs=$2 prep=$3 cmd=$4 warm=${5:-0} json=$out/json/$1.json args=()
	[ -n "$prep" ] && args+=(--prepare "$prep")
	hyperfine -N --style none --runs "$runs" --warmup "$warm" "${args[@]}" --export-json "$json" "$cmd" >/dev/null 2>"$out/json/$name.err" \
		|| { cat "$out/json/$name.err" >&2; return 1; }
	python3 -c 'import json,sys; print("%.4f" % json.load(open(sys.argv[1]))["results"][0]["median"])' "$json"
}
ratio() { python3 -c 'import sys; print("%.2f" % (float(sys.argv[1]) / float(sys.argv[2])))' "$1" "$2"; }
sec() { python3 -c 'import sys; v=float(sys.argv[1]); print("%.2f s" % v if v >= 1 else "%.0f ms" % (v*1000))' "$1"; }
# verdict STRATA BST GOAL: on the exact ratio, not the rounded one shown.
verdict() { python3 -c 'import sys; print("met" if float(sys.argv[1]) / float(sys.argv[2]) <= float(sys.argv[3]) else "**missed**")' "$1" "$2" "$3"; }

table=$out/build.md
{
	echo "| N | measure | strata | bst | strata/bst | goal |"
	echo "|---:|---|---:|---:|---:|---|"
} >"$table"

# bump FILE: the next text of leaf 001 (revK with a fresh K), for an
# incremental run that must really rebuild. Used in hyperfine's --prepare.
cat >"$out/bump.sh" <<'EOF'
#!/bin/sh
# bump.sh COUNTER STRATA_CUE BST_LEAF: give leaf 001 a text it never had.
k=$(( $(cat "$1" 2>/dev/null || echo 1) + 1 ))
echo "$k" >"$1"
[ -n "$2" ] && sed -i -E "s/(\"leaf-001\", rev: \")rev[0-9]+/\1rev$k/" "$2"
[ -n "$3" ] && sed -i -E "s/(leaf-001 )rev[0-9]+/\1rev$k/" "$3"
exit 0
EOF
chmod +x "$out/bump.sh"

count_files() { find "$1" -type f | wc -l; }

for n in $sizes; do
	d=$out/n$n
	rm -rf "$d"
	go run ./bench/genbuild -n "$n" -merge "$merge" -o "$d/ws"
	sws=$d/ws/strata bws=$d/ws/bst
	sc=$d/strata-cache bc=$d/bst-cache
	echo "bench: N=$n" >&2
	scmd="$strata -C $sws --cache-dir $sc --no-progress build -j $jobs"
	bcmd="$(bst_env "$bc") bst -C $bws --no-interactive --builders $jobs build final.bst"

	# Cold: a brand-new cache directory every run (strata's includes its compile cache).
	st=$(hf "n$n-strata-cold" "$(runs_for cold)" "rm -rf $sc" "$scmd")
	bt=""
	$bst_ok && bt=$(hf "n$n-bst-cold" "$(runs_for cold)" "rm -rf $bc" "$bcmd")

	# Both outputs must hold the 2N merged files.
	got=$(count_files "$sws/out/merged/merged.tree/")
	[ "$got" -eq $((2 * n)) ] || { echo "bench: strata merged tree has $got files, want $((2 * n))" >&2; exit 1; }
	if $bst_ok; then
		rm -rf "$d/bst-checkout"
		$(bst_env "$bc") bst -C "$bws" --no-interactive checkout final.bst "$d/bst-checkout" >/dev/null 2>&1
		got=$(count_files "$d/bst-checkout")
		[ "$got" -eq $((2 * n)) ] || { echo "bench: bst final has $got files, want $((2 * n))" >&2; exit 1; }
	fi

	# No-op: everything cached, the whole process timed.
	sn=$(hf "n$n-strata-noop" "$(runs_for noop)" "" "$scmd" 1)
	bn=""
	$bst_ok && bn=$(hf "n$n-bst-noop" "$(runs_for noop)" "" "$bcmd" 1)

	# Incremental: leaf 001 gets a new text before every run (rev2, rev3, ...),
	# so leaf-001 and the merge rebuild each time, over a warm cache.
	si=$(hf "n$n-strata-incr" "$(runs_for incr)" "$out/bump.sh $d/scount $sws/build.cue ''" "$scmd" 1)
	bi=""
	$bst_ok && bi=$(hf "n$n-bst-incr" "$(runs_for incr)" "$out/bump.sh $d/bcount '' $bws/elements/leaf-001.bst" "$bcmd" 1)

	row() { # row MEASURE STRATA BST GOAL
		if [ -n "$3" ]; then
			local r
			r=$(ratio "$2" "$3")
			printf '| %s | %s | %s | %s | %s× | ≤ %s× %s |\n' "$n" "$1" "$(sec "$2")" "$(sec "$3")" "$r" "$4" "$(verdict "$2" "$3" "$4")"
		else
			printf '| %s | %s | %s | could not run: %s | – | ≤ %s× |\n' "$n" "$1" "$(sec "$2")" "$bst_reason" "$4"
		fi
	}
	{
		row cold "$st" "$bt" 0.3
		row no-op "$sn" "$bn" 0.1
		row incremental "$si" "$bi" 0.2
	} >>"$table"
	last=$n
done

# Profile: where strata's time goes in one cold build at the largest N, from
# `strata build --output json` event timings (per node kind, summed over nodes,
# so with -j 2 the sums exceed the wall time).
prof=$out/profile.md
: >"$prof"
if [ "${BENCH_PROFILE:-1}" != 0 ]; then
	d=$out/n$last
	rm -rf "$d/strata-cache"
	"$strata" -C "$d/ws/strata" --cache-dir "$d/strata-cache" --no-progress --output json build -j $jobs >"$d/events.json" 2>&1
	python3 - "$d/events.json" "$last" >"$prof" <<'EOF'
import json, sys, collections
by = collections.defaultdict(list)
total = None
for line in open(sys.argv[1]):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if e.get("kind") == "done":
        img = e["name"].split(".")[1] if e["name"].startswith("images.") else "?"
        group = "merged" if img == "merged" else ("base" if img == "base" else "leaf")
        by[(group, e.get("node_kind", "?"), e.get("type", "?"))].append(e["elapsed"] / 1e9)
    elif e.get("kind") == "result":
        total = e["elapsed"]
print("Cold strata build, N=%s, -j 2: %.2f s wall. Node time by kind (`--output json` events):" % (sys.argv[2], total or 0))
print()
print("| nodes | kind | type | count | sum | median |")
print("|---|---|---|---:|---:|---:|")
for (g, k, t), v in sorted(by.items()):
    v.sort()
    print("| %s | %s | %s | %d | %.2f s | %.0f ms |" % (g, k, t, len(v), sum(v), v[len(v) // 2] * 1000))
EOF
	# The same workload with the merge written as one strata.copy stage per
	# leaf (a chain of N stages: a changed leaf 001 rebuilds all N of them).
	if [ "$merge" = run ]; then
		c=$out/copy$last
		rm -rf "$c"
		go run ./bench/genbuild -n "$last" -merge copy -o "$c/ws"
		ccmd="$strata -C $c/ws/strata --cache-dir $c/cache --no-progress build -j $jobs"
		cc=$(hf "copy$last-strata-cold" 2 "rm -rf $c/cache" "$ccmd")
		ci=$(hf "copy$last-strata-incr" 3 "$out/bump.sh $c/count $c/ws/strata/build.cue ''" "$ccmd" 1)
		{
			echo
			echo "Merge as $last strata.copy stages instead of one stage (BENCH_MERGE=copy), N=$last: cold $(sec "$cc"), incremental $(sec "$ci") (median of 2 and 3 runs)."
		} >>"$prof"
	fi
fi

# Go benchmarks: per-stage sandbox overhead, staging, commit throughput.
gob=$out/gobench.md
: >"$gob"
if [ "${BENCH_GO:-1}" != 0 ]; then
	go test -run '^$' -bench 'TrueStage|BareBwrap|Staging|SandboxOverhead' -benchtime 20x ./executor/sandbox/ >"$out/gobench-sandbox.txt" 2>&1 || true
	go test -run '^$' -bench 'LinkFile|SHA256' ./executor/store/ >"$out/gobench-store.txt" 2>&1 || true
	python3 - "$out/gobench-sandbox.txt" "$out/gobench-store.txt" >"$gob" <<'EOF'
import re, sys
ns, mbs = {}, {}
for f in sys.argv[1:]:
    for line in open(f):
        m = re.match(r"Benchmark(\S+?)(-\d+)?\s+\d+\s+([\d.]+) ns/op(?:\s+([\d.]+) MB/s)?", line)
        if m:
            ns[m.group(1)] = float(m.group(3))
            if m.group(4):
                mbs[m.group(1)] = float(m.group(4))
def r(a, b, goal, le=True):
    if a not in ns or b not in ns:
        return "| %s / %s | not measured | | |" % (a, b)
    x = ns[a] / ns[b]
    ok = x <= goal if le else x >= goal
    return "| %s / %s | %.2f ms / %.2f ms | %.2f× | %s %s× %s |" % (a, b, ns[a] / 1e6, ns[b] / 1e6, x, "≤" if le else "≥", goal, "met" if ok else "**missed**")
print("| benchmark | medians | ratio | goal |")
print("|---|---:|---:|---|")
print(r("TrueStage", "BareBwrap", 1.5))
print(r("TrueStageHostRoot", "BareBwrap", 1.5))
print(r("Staging100k", "Staging10", 2.0))
for line in open(sys.argv[1]):
    m = re.match(r"BenchmarkSandboxOverhead\S*\s.*?([\d.]+) bwrap-ms/op\s+([\d.]+) ratio\s+([\d.]+) stage-ms/op", line)
    if m:
        x = float(m.group(2))
        print("| SandboxOverhead (interleaved) | %s ms / %s ms | %.2f× | ≤ 1.5× %s |" % (m.group(3), m.group(1), x, "met" if x <= 1.5 else "**missed**"))
if "LinkFile" in mbs and "SHA256" in mbs:
    x = mbs["LinkFile"] / mbs["SHA256"]
    print("| LinkFile / SHA256 (throughput) | %.0f MB/s / %.0f MB/s | %.0f%% | ≥ 70%% %s |" % (mbs["LinkFile"], mbs["SHA256"], x * 100, "met" if x >= 0.7 else "**missed**"))
    if "LinkFileKnown" in mbs:
        print("| LinkFileKnown / SHA256 (throughput) | %.0f MB/s / %.0f MB/s | %.0f%% | (hashing only) |" % (mbs["LinkFileKnown"], mbs["SHA256"], mbs["LinkFileKnown"] / mbs["SHA256"] * 100))
EOF
fi

echo
echo "strata build vs BuildStream — $(date -u +%Y-%m-%d), $(nproc) cores, strata $("$strata" version 2>/dev/null | head -1), bst $(bst --version 2>/dev/null || echo none), $(hyperfine --version)"
echo "-j $jobs / --builders $jobs, strata merge: $merge; hyperfine medians (cold $(runs_for cold), no-op $(runs_for noop), incremental $(runs_for incr) runs)"
echo
cat "$table"
if [ -s "$prof" ]; then
	echo
	cat "$prof"
fi
if [ -s "$gob" ]; then
	echo
	cat "$gob"
fi
