// Command registry benchmarks strata push and pull against a plain oras-go
// client (oras.Copy) and crane, side by side on one loopback registry (the
// reference registry, in-process): one 256 MiB output, and 500 outputs of 4
// KiB. It prints a Markdown table of medians. Run through bench/registry.sh
// (make bench), which passes the crane binary.
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content/file"
	"oras.land/oras-go/v2/content/oci"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/executor"
	"github.com/strata-build/strata/executor/store"
	"github.com/strata-build/strata/internal/regtest"
	"github.com/strata-build/strata/registry"
)

var (
	runs  = flag.Int("runs", 3, "timed runs per measurement (the median is shown)")
	crane = flag.String("crane", "bin/crane", "the crane binary")
	work  = flag.String("work", "", "scratch directory (default a temporary one)")
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type workload struct {
	name  string
	files []string // paths of the files
	total int64
}

func run() error {
	ctx := context.Background()
	dir := *work
	if dir == "" {
		d, err := os.MkdirTemp("", "strata-bench-registry-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	srv, err := regtest.Start(regtest.Options{Dir: filepath.Join(dir, "registry")})
	if err != nil {
		return err
	}
	defer srv.Close()
	big, err := makeFiles(filepath.Join(dir, "big"), 1, 256<<20)
	if err != nil {
		return err
	}
	small, err := makeFiles(filepath.Join(dir, "small"), 500, 4<<10)
	if err != nil {
		return err
	}
	fmt.Printf("| workload | client | push | pull | re-push unchanged |\n|---|---|---:|---:|---:|\n")
	for _, w := range []workload{{"1 × 256 MiB", big, 256 << 20}, {"500 × 4 KiB", small, 500 * 4 << 10}} {
		rows, err := measure(ctx, srv, dir, w)
		if err != nil {
			return fmt.Errorf("%s: %w", w.name, err)
		}
		for _, r := range rows {
			fmt.Printf("| %s | %s | %s | %s | %s |\n", w.name, r.client, r.push.show(w.total), r.pull.show(w.total), r.repush.ms())
		}
	}
	return nil
}

func makeFiles(dir string, n int, size int64) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var out []string
	for i := range n {
		p := filepath.Join(dir, fmt.Sprintf("file%03d.bin", i))
		f, err := os.Create(p)
		if err != nil {
			return nil, err
		}
		_, err = io.CopyN(f, rand.Reader, size)
		f.Close()
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

type timing []time.Duration

func (t timing) median() time.Duration {
	s := slices.Clone(t)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func (t timing) show(bytes int64) string {
	if len(t) == 0 {
		return "n/a"
	}
	m := t.median()
	return fmt.Sprintf("%.0f ms (%.1f MB/s)", float64(m.Microseconds())/1000, float64(bytes)/m.Seconds()/1e6)
}

func (t timing) ms() string {
	if len(t) == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f ms", float64(t.median().Microseconds())/1000)
}

type row struct {
	client             string
	push, pull, repush timing
}

func measure(ctx context.Context, srv *regtest.Server, dir string, w workload) ([]row, error) {
	st, err := store.Open(filepath.Join(dir, "store"))
	if err != nil {
		return nil, err
	}
	defer st.Close()
	req, err := request(ctx, st, w)
	if err != nil {
		return nil, err
	}
	s, o, c := row{client: "strata (registry package)"}, row{client: "plain oras.Copy"}, row{client: "crane"}
	for i := range *runs {
		tag := fmt.Sprintf("r%d", i)
		// strata: a fresh client per run, so nothing is mounted from a
		// repository it pushed before.
		client, err := registry.New(st, registry.Options{DockerConfig: filepath.Join(dir, "none.json")})
		if err != nil {
			return nil, err
		}
		repo := fmt.Sprintf("%s/strata-%d", srv.Host, i)
		if err := client.PublishTo(repo); err != nil {
			return nil, err
		}
		t0 := time.Now()
		if _, err := client.Publish(ctx, req); err != nil {
			return nil, err
		}
		s.push = append(s.push, time.Since(t0))
		t0 = time.Now()
		if _, err := client.Publish(ctx, req); err != nil {
			return nil, err
		}
		s.repush = append(s.repush, time.Since(t0))
		pst, err := store.Open(filepath.Join(dir, "pull-"+tag))
		if err != nil {
			return nil, err
		}
		pc, _ := registry.New(pst, registry.Options{DockerConfig: filepath.Join(dir, "none.json")})
		t0 = time.Now()
		if _, err := pc.Pull(ctx, repo+":1.0.0", registry.PullOptions{}); err != nil {
			return nil, err
		}
		s.pull = append(s.pull, time.Since(t0))
		pst.Close()
		os.RemoveAll(filepath.Join(dir, "pull-"+tag))

		// A plain oras-go client: pack the files, oras.Copy them.
		orepo := fmt.Sprintf("%s/oras-%d", srv.Host, i)
		t0 = time.Now()
		if err := orasPush(ctx, w, orepo, filepath.Join(dir, "oras-src-"+tag)); err != nil {
			return nil, err
		}
		o.push = append(o.push, time.Since(t0))
		t0 = time.Now()
		if err := orasPush(ctx, w, orepo, filepath.Join(dir, "oras-src-"+tag)); err != nil {
			return nil, err
		}
		o.repush = append(o.repush, time.Since(t0))
		layout := filepath.Join(dir, "oras-pull-"+tag)
		t0 = time.Now()
		if err := orasPull(ctx, orepo, layout); err != nil {
			return nil, err
		}
		o.pull = append(o.pull, time.Since(t0))

		// crane: push the layout the plain client pulled, pull it back.
		if _, err := os.Stat(*crane); err == nil {
			crepo := fmt.Sprintf("%s/crane-%d:1.0.0", srv.Host, i)
			t0 = time.Now()
			if err := exec.Command(*crane, "push", "--insecure", layout, crepo).Run(); err != nil {
				return nil, fmt.Errorf("crane push: %w", err)
			}
			c.push = append(c.push, time.Since(t0))
			t0 = time.Now()
			if err := exec.Command(*crane, "push", "--insecure", layout, crepo).Run(); err != nil {
				return nil, fmt.Errorf("crane push: %w", err)
			}
			c.repush = append(c.repush, time.Since(t0))
			out := filepath.Join(dir, "crane-pull-"+tag)
			t0 = time.Now()
			if out, err := exec.Command(*crane, "pull", "--insecure", "--format", "oci", crepo, out).CombinedOutput(); err != nil {
				return nil, fmt.Errorf("crane pull: %w: %s", err, out)
			}
			c.pull = append(c.pull, time.Since(t0))
			os.RemoveAll(out)
		}
		os.RemoveAll(layout)
		os.RemoveAll(filepath.Join(dir, "oras-src-"+tag))
	}
	return []row{s, o, c}, nil
}

// request stores the files as an image's outputs and returns the publish
// request the executor would make.
func request(ctx context.Context, st *store.Store, w workload) (executor.PublishRequest, error) {
	img := &plan.Image{Name: "bench", Version: "1.0.0", Platform: plan.Platform{OS: "linux", Arch: "amd64"}, DeviceTypes: []string{"bench"}}
	req := executor.PublishRequest{Plan: &plan.Plan{Version: plan.Version}, Image: img, Store: st}
	for i, p := range w.files {
		f, err := os.Open(p)
		if err != nil {
			return req, err
		}
		d, n, err := st.PutBlob(ctx, f)
		f.Close()
		if err != nil {
			return req, err
		}
		name := filepath.Base(p) + ".squashfs"
		node := &plan.Node{ID: digest.FromString(name).Encoded(), Kind: plan.KindOutput, Type: "squashfs", Artifact: name,
			Name: fmt.Sprintf("images.bench.outputs[%d]", i), Env: map[string]string{"SOURCE_DATE_EPOCH": "0"}}
		req.Outputs = append(req.Outputs, executor.PublishedOutput{Node: node,
			Result: executor.Result{Outputs: map[string]ocispec.Descriptor{name: {MediaType: "application/vnd.strata.squashfs", Digest: d, Size: n}}}})
	}
	b, _ := json.Marshal(map[string]any{"repository": "bench", "version": "1.0.0"})
	req.Node = &plan.Node{ID: "publish", Kind: plan.KindPublish, Options: b}
	return req, nil
}

// orasPush is what a plain oras-go client does: add the files to a file
// store (hashing them), pack a manifest, oras.Copy to the registry.
func orasPush(ctx context.Context, w workload, ref, scratch string) error {
	fs, err := file.New(scratch)
	if err != nil {
		return err
	}
	defer fs.Close()
	var layers []ocispec.Descriptor
	for _, p := range w.files {
		d, err := fs.Add(ctx, filepath.Base(p), "application/vnd.strata.squashfs", p)
		if err != nil {
			return err
		}
		layers = append(layers, d)
	}
	md, err := oras.PackManifest(ctx, fs, oras.PackManifestVersion1_1, registry.ArtifactType, oras.PackManifestOptions{
		Layers: layers, ManifestAnnotations: map[string]string{ocispec.AnnotationCreated: "1970-01-01T00:00:00Z"}})
	if err != nil {
		return err
	}
	if err := fs.Tag(ctx, md, "1.0.0"); err != nil {
		return err
	}
	repo, err := remote.NewRepository(ref)
	if err != nil {
		return err
	}
	repo.PlainHTTP = true
	_, err = oras.Copy(ctx, fs, "1.0.0", repo, "1.0.0", oras.DefaultCopyOptions)
	return err
}

func orasPull(ctx context.Context, ref, dir string) error {
	repo, err := remote.NewRepository(ref)
	if err != nil {
		return err
	}
	repo.PlainHTTP = true
	dst, err := oci.New(dir)
	if err != nil {
		return err
	}
	_, err = oras.Copy(ctx, repo, "1.0.0", dst, "1.0.0", oras.DefaultCopyOptions)
	return err
}
