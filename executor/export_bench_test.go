package executor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/strata-build/strata/executor/output"
	"github.com/strata-build/strata/executor/store"
)

// BenchmarkReexportTree200 re-exports a 200-file tree output of which one
// file changed, as the merge image of the BuildStream workload does after a
// one-leaf change: 199 files are linked from the earlier export, one is
// written, and the old directory is swapped out and removed.
func BenchmarkReexportTree200(b *testing.B) {
	ctx := context.Background()
	st, err := store.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	items := make([]exportItem, 2)
	for v := range items {
		dir := b.TempDir()
		os.Mkdir(filepath.Join(dir, "out"), 0o755)
		for i := range 200 {
			content := fmt.Sprintf("leaf %d\n", i)
			if i == 0 {
				content = fmt.Sprintf("leaf 0 rev%d\n", v)
			}
			if err := os.WriteFile(filepath.Join(dir, "out", fmt.Sprint("f", i)), []byte(content), 0o644); err != nil {
				b.Fatal(err)
			}
		}
		_, d, err := st.CommitDir(ctx, dir)
		if err != nil {
			b.Fatal(err)
		}
		desc, err := (&LocalRunner{st: st}).treeDesc(d)
		if err != nil {
			b.Fatal(err)
		}
		items[v] = exportItem{image: "img", name: "img.tree", format: output.Format("tree"),
			result: Result{Tree: desc, Outputs: map[string]ocispec.Descriptor{"img.tree": desc}}}
	}
	root, err := os.OpenRoot(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	x := &exporter{st: st, root: root, euid: os.Geteuid()}
	defer x.close()
	if _, err := x.exportImage(ctx, "img", items[:1], true); err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		i++
		states, err := x.exportImage(ctx, "img", items[i%2:i%2+1], true)
		if err != nil || states["img.tree"] != ArtifactExported {
			b.Fatal(states, err)
		}
	}
}
