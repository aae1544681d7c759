package compiler_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/strata-build/strata/compiler"
	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/lang"
)

// BenchmarkCompile loads and compiles a workspace written by bench/gen: the one in
// $STRATA_BENCH_WS when set, else a generated one of $STRATA_BENCH_N images
// (default 100). Profile it with
//
//	go test -run '^$' -bench Compile -cpuprofile cpu.out ./compiler/
func BenchmarkCompile(b *testing.B) {
	dir := os.Getenv("STRATA_BENCH_WS")
	if dir == "" {
		n := 100
		if s := os.Getenv("STRATA_BENCH_N"); s != "" {
			var err error
			if n, err = strconv.Atoi(s); err != nil {
				b.Fatal(err)
			}
		}
		dir = filepath.Join(b.TempDir(), "ws")
		cmd := exec.Command("go", "run", "../bench/gen", "-n", strconv.Itoa(n), "-o", dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("generate workspace: %v\n%s", err, out)
		}
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		ws, err := lang.Load(ctx, dir)
		if err != nil {
			b.Fatal(err)
		}
		p, err := compiler.Compile(ctx, ws, compiler.Options{Host: plan.Host{OS: "bench", Arch: "amd64"}})
		if err != nil {
			b.Fatal(err)
		}
		if err := p.Encode(discard{}); err != nil {
			b.Fatal(err)
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
