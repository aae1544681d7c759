package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/executor"
	"github.com/strata-build/strata/executor/store"
	"github.com/strata-build/strata/internal/regtest"
)

func newStore(t *testing.T) *store.Store {
	t.Helper()
	return newStoreAt(t, t.TempDir())
}

func newStoreAt(t *testing.T, dir string) *store.Store {
	t.Helper()
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func newClient(t *testing.T, st *store.Store, opts Options) *Client {
	t.Helper()
	if opts.MaxWait == 0 {
		opts.MaxWait = 5 * 1e6 // 5 ms: tests never wait on back-off
		opts.MinWait = 1e6
	}
	if opts.DockerConfig == "" {
		opts.DockerConfig = t.TempDir() + "/config.json"
	}
	c, err := New(st, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func startRegistry(t *testing.T, o regtest.Options) *regtest.Server {
	t.Helper()
	s, err := regtest.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// testImage describes a synthetic image: its files by output format.
type testImage struct {
	name, version, arch string
	devices             []string
	def                 bool
	files               []testFile
	repo                string
	tags                []string
}

type testFile struct {
	name, format string
	content      []byte
}

// request stores the image's files in st and returns the publish request
// the executor would make for it.
func (ti testImage) request(t *testing.T, st *store.Store) executor.PublishRequest {
	t.Helper()
	ctx := context.Background()
	if ti.arch == "" {
		ti.arch = "amd64"
	}
	img := &plan.Image{Name: ti.name, Version: ti.version, Platform: plan.Platform{OS: "linux", Arch: ti.arch},
		DeviceTypes: ti.devices, Default: ti.def, Tree: "treekey-" + ti.name}
	req := executor.PublishRequest{Plan: &plan.Plan{Version: plan.Version}, Image: img, Store: st}
	for i, f := range ti.files {
		d, n, err := st.PutBlob(ctx, bytes.NewReader(f.content))
		if err != nil {
			t.Fatal(err)
		}
		node := &plan.Node{ID: digest.FromString(ti.name + f.name).Encoded(), Kind: plan.KindOutput, Type: f.format,
			Name: "images." + ti.name + ".outputs[" + string(rune('0'+i)) + "]", Artifact: f.name, Env: map[string]string{"SOURCE_DATE_EPOCH": "0"}}
		res := executor.Result{Outputs: map[string]ocispec.Descriptor{f.name: {MediaType: mediaTypeOf(f.format), Digest: d, Size: n}}}
		req.Outputs = append(req.Outputs, executor.PublishedOutput{Node: node, Result: res})
		img.Outputs = append(img.Outputs, node.ID)
	}
	repo := ti.repo
	if repo == "" {
		repo = "test/" + ti.name
	}
	opts, _ := jsonOf(map[string]any{"repository": repo, "tags": ti.tags, "version": ti.version})
	req.Node = &plan.Node{ID: "publish-" + ti.name, Kind: plan.KindPublish, Name: "images." + ti.name + ".publish", Options: opts}
	return req
}

func jsonOf(v any) ([]byte, error) { return json.Marshal(v) }
