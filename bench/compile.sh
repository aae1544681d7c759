#!/usr/bin/env bash
# Compile benchmark (BENCH.md): `strata compile` vs upstream `cue export` of the
# same generated workspace, side by side, at N = 100, 1000, 3000 images × 8
# stages (plus a template over N records), and an unchanged second compile (a
# compile-cache hit) at the largest N. Prints wall time (median) and peak RSS,
# and the ratios strata/cue. Run through `make bench` (which builds bin/strata
# and installs bin/cue). Environment: BENCH_N="100 1000 3000" to choose sizes,
# BENCH_RUNS to force the number of timed runs per command.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
strata=$root/bin/strata
cue=$root/bin/cue
out=$root/bench/out
sizes=${BENCH_N:-100 1000 3000}
mkdir -p "$out"

for b in "$strata" "$cue"; do
	[ -x "$b" ] || { echo "bench: $b missing (run make setup build)" >&2; exit 1; }
done

# Tools: hyperfine for timing, GNU time for peak RSS (Debian packages).
need=()
command -v hyperfine >/dev/null 2>&1 || need+=(hyperfine)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "bench: installing ${need[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null 2>&1 || true
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 || echo "bench: could not install ${need[*]}" >&2
fi
[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time (Debian package time) is needed for peak RSS" >&2; exit 1; }
have_hyperfine=false
command -v hyperfine >/dev/null 2>&1 && have_hyperfine=true

runs_for() { # timed runs per command at size N: fewer for the slow sizes
	if [ -n "${BENCH_RUNS:-}" ]; then echo "$BENCH_RUNS"; return; fi
	if [ "$1" -le 100 ]; then echo 10; elif [ "$1" -le 1000 ]; then echo 5; else echo 3; fi
}

# median_time RUNS CMD: median wall seconds of RUNS runs of the shell command CMD.
median_time() {
	local runs=$1 cmd=$2 json
	if $have_hyperfine; then
		json=$(mktemp)
		hyperfine -N --style none --warmup 1 --runs "$runs" --export-json "$json" "$cmd" >/dev/null 2>&1 \
			|| hyperfine --style none --warmup 1 --runs "$runs" --export-json "$json" "$cmd" >/dev/null
		python3 -c 'import json,sys; print("%.4f" % json.load(open(sys.argv[1]))["results"][0]["median"])' "$json"
		rm -f "$json"
	else
		local ts=() i
		sh -c "$cmd" >/dev/null 2>&1 # warm-up
		for ((i = 0; i < runs; i++)); do
			ts+=("$(/usr/bin/time -f %e sh -c "$cmd" 2>&1 >/dev/null | tail -1)")
		done
		printf '%s\n' "${ts[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
	fi
}

# peak_rss RUNS CMD...: median peak RSS in MB of RUNS runs (one process, no shell).
peak_rss() {
	local runs=$1 i
	shift
	for ((i = 0; i < runs; i++)); do
		/usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1
	done | sort -g | awk '{a[NR]=$1} END {printf "%.0f\n", a[int((NR+1)/2)]/1024}'
}

ratio() { python3 -c 'import sys; print("%.2f" % (float(sys.argv[1]) / float(sys.argv[2])))' "$1" "$2"; }

table=$out/compile.md
{
	echo "| N images | strata compile (cold) | cue export | time ratio | strata RSS | cue RSS | RSS ratio |"
	echo "|---:|---:|---:|---:|---:|---:|---:|"
} >"$table"

last=""
for n in $sizes; do
	ws=$out/ws-$n
	rm -rf "$ws"
	go run ./bench/gen -n "$n" -o "$ws"
	"$strata" -C "$ws" mod vendor >/dev/null
	runs=$(runs_for "$n")
	cache=$(mktemp -d)
	echo "bench: N=$n ($runs runs each)" >&2
	# Cold: a fresh compile cache every run, so each run evaluates and stores.
	strata_cmd="sh -c 'rm -rf $cache/state/compile && exec $strata -C $ws --cache-dir $cache compile -o /dev/null 2>/dev/null'"
	# The reference: upstream cue evaluating the same package, with the schema
	# embedded (strata.#Workspace), exporting every concrete section. (A bare
	# `cue export` of the package fails: user stage modules and templates are
	# schemas, incomplete by design.)
	cue_cmd="sh -c 'cd $ws && exec $cue export -e images -e resources -e hooks >/dev/null'"
	st=$(median_time "$runs" "$strata_cmd")
	ct=$(median_time "$runs" "$cue_cmd")
	rss_runs=$(( runs > 3 ? 3 : runs ))
	sm=$(peak_rss "$rss_runs" "$strata" -C "$ws" --cache-dir "$cache" compile --no-cache -o /dev/null)
	cm=$(cd "$ws" && peak_rss "$rss_runs" "$cue" export -e images -e resources -e hooks)
	printf '| %s | %.2f s | %.2f s | %s× | %s MB | %s MB | %s× |\n' "$n" "$st" "$ct" "$(ratio "$st" "$ct")" "$sm" "$cm" "$(ratio "$sm" "$cm")" >>"$table"
	rm -rf "$cache"
	last=$n
done

# Cache hit: an unchanged second compile at the largest N.
ws=$out/ws-$last
cache=$(mktemp -d)
"$strata" -C "$ws" --cache-dir "$cache" compile -o /dev/null 2>/dev/null
hit=$(median_time 20 "$strata -C $ws --cache-dir $cache compile -o /dev/null")
hit_rss=$(peak_rss 3 "$strata" -C "$ws" --cache-dir "$cache" compile -o /dev/null)
rm -rf "$cache"
{
	echo
	printf 'Unchanged second compile (cache hit), N=%s: %.1f ms, %s MB peak RSS (goal < 50 ms).\n' "$last" "$(python3 -c "print(float('$hit')*1000)")" "$hit_rss"
} >>"$table"

echo
echo "strata compile vs cue export — $(date -u +%Y-%m-%d), $(nproc) cores, $("$strata" version), $("$cue" version | head -1)"
echo "timing: $($have_hyperfine && hyperfine --version || echo '/usr/bin/time loop'), median; goal: ratios <= 1.20"
echo
cat "$table"
