package registry

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/schema"

	"github.com/strata-build/strata/internal/regtest"
)

func TestPublishPullRoundTrip(t *testing.T) {
	ctx := context.Background()
	srv := startRegistry(t, regtest.Options{})
	st := newStore(t)
	c := newClient(t, st, Options{Registry: srv.Host})
	nuc := testImage{name: "nuc", version: "1.0.0", devices: []string{"x86/nuc"}, repo: "fleet/x86",
		files: []testFile{{"nuc.squashfs", "squashfs", []byte("squash one")}, {"nuc.ext4", "ext4", bytes.Repeat([]byte("e"), 1<<20)}}}
	thin := testImage{name: "thin", version: "1.0.0", devices: []string{"x86"}, repo: "fleet/x86",
		files: []testFile{{"thin.squashfs", "squashfs", []byte("squash thin")}}}
	for _, ti := range []testImage{nuc, thin} {
		if _, err := c.Publish(ctx, ti.request(t, st)); err != nil {
			t.Fatal(err)
		}
	}
	h, err := c.Versions(ctx, srv.Host+"/fleet/x86")
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Versions) != 1 || h.Default != "1.0.0" || len(h.Versions[0].DeviceTypes) != 2 {
		t.Fatalf("history %+v", h)
	}
	st2 := newStore(t)
	c2 := newClient(t, st2, Options{})
	out := t.TempDir()
	p, err := c2.Pull(ctx, srv.Host+"/fleet/x86", PullOptions{DeviceType: "x86/nuc", OutDir: out})
	if err != nil {
		t.Fatal(err)
	}
	if p.Image != "nuc" || len(p.Files) != 2 {
		t.Fatalf("pulled %+v", p)
	}
	b, err := os.ReadFile(p.Files[0].Path)
	if err != nil || string(b) != "squash one" {
		t.Fatalf("file %s: %q %v", p.Files[0].Path, b, err)
	}
	// Most specific match: x86/thin-client falls back to the x86 image.
	p, err = c2.Pull(ctx, srv.Host+"/fleet/x86:1.0.0", PullOptions{DeviceType: "x86/thin-client"})
	if err != nil || p.Image != "thin" {
		t.Fatalf("pull thin: %+v %v", p, err)
	}
	_, err = c2.Pull(ctx, srv.Host+"/fleet/x86:1.0.0", PullOptions{DeviceType: "arm/pi"})
	if !errors.Is(err, ErrNoMatch) {
		t.Fatalf("pull arm: %v", err)
	}
	t.Log(err)
}

// TestSecondPushUploadsNothing: pushing unchanged images again sends no blob
// byte (HEAD before PUT), and cross-repository mounts take blobs another
// repository of the registry holds.
func TestSecondPushUploadsNothing(t *testing.T) {
	ctx := context.Background()
	srv := startRegistry(t, regtest.Options{})
	st := newStore(t)
	c := newClient(t, st, Options{Registry: srv.Host})
	req := faultImage.request(t, st)
	if _, err := c.Publish(ctx, req); err != nil {
		t.Fatal(err)
	}
	if n, b := srv.BlobUploads(); n == 0 || b == 0 {
		t.Fatalf("the first push uploaded %d blobs, %d bytes", n, b)
	}
	srv.Reset()
	if _, err := c.Publish(ctx, req); err != nil {
		t.Fatal(err)
	}
	if n, b := srv.BlobUploads(); n != 0 || b != 0 {
		t.Fatalf("the second push uploaded %d blobs, %d bytes", n, b)
	}
	// The same files into another repository: mounted, not uploaded.
	srv.Reset()
	var mounted int
	c.opts.Events = func(ev Event) {
		if ev.Kind == EventBlobMounted {
			mounted++
		}
	}
	if err := c.PublishTo(srv.Host + "/other/probe"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Publish(ctx, req); err != nil {
		t.Fatal(err)
	}
	if _, b := srv.BlobUploads(); b != 0 || mounted == 0 {
		t.Fatalf("pushing to another repository uploaded %d bytes, mounted %d blobs", b, mounted)
	}
}

// TestRegistryRefusingOCI11: a registry (a loopback proxy in front of the
// reference registry) that refuses manifests with OCI 1.1 fields gets the
// 1.0-compatible form, found once and remembered; pull and versions read it.
func TestRegistryRefusingOCI11(t *testing.T) {
	ctx := context.Background()
	var refused atomic.Int64
	srv := startRegistry(t, regtest.Options{Wrap: faults(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPut || !strings.Contains(r.URL.Path, "/manifests/") {
			return false
		}
		b, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(b))
		if bytes.Contains(b, []byte(`"artifactType"`)) {
			refused.Add(1)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"errors":[{"code":"MANIFEST_INVALID","message":"manifest invalid","detail":"unknown field artifactType"}]}`)
			return true
		}
		return false
	})})
	st := newStore(t)
	var fallbacks int
	c := newClient(t, st, Options{Registry: srv.Host, Events: func(ev Event) {
		if ev.Kind == EventFallback {
			fallbacks++
		}
	}})
	nuc := testImage{name: "nuc", version: "1.0.0", devices: []string{"x86/nuc"}, repo: "fleet/a", files: []testFile{{"nuc.squashfs", "squashfs", []byte("nuc")}}}
	gw := testImage{name: "gw", version: "1.0.0", devices: []string{"x86/gw"}, repo: "fleet/b", files: []testFile{{"gw.squashfs", "squashfs", []byte("gw")}}}
	for _, ti := range []testImage{nuc, gw} {
		if _, err := c.Publish(ctx, ti.request(t, st)); err != nil {
			t.Fatal(err)
		}
	}
	pubs := c.Published()
	if pubs[0].Form != "oci-1.0" || pubs[1].Form != "oci-1.0" || refused.Load() != 1 || fallbacks != 1 {
		t.Fatalf("forms %s %s, %d refusals, %d fallbacks", pubs[0].Form, pubs[1].Form, refused.Load(), fallbacks)
	}
	// Remembered across clients (processes) through the store.
	if again := newClient(t, st, Options{Registry: srv.Host}); !again.refuses11(srv.Host) {
		t.Error("the fallback was not remembered")
	}
	c2 := newClient(t, newStore(t), Options{})
	h, err := c2.Versions(ctx, srv.Host+"/fleet/a")
	if err != nil || h.Default != "1.0.0" || len(h.Versions[0].DeviceTypes) != 1 {
		t.Fatalf("versions: %+v %v", h, err)
	}
	p, err := c2.Pull(ctx, srv.Host+"/fleet/a", PullOptions{DeviceType: "x86/nuc"})
	if err != nil || p.Image != "nuc" || len(p.Files) != 1 {
		t.Fatalf("pull: %+v %v", p, err)
	}
	// The 1.0 form validates against the image-spec's schemas too.
	for _, d := range []digest.Digest{p.Digest, p.Index} {
		b, err := os.ReadFile(filepath.Join(p.Layout, "blobs", "sha256", d.Encoded()))
		if err != nil {
			t.Fatal(err)
		}
		v := schema.ValidatorMediaTypeManifest
		if d == p.Index {
			v = schema.ValidatorMediaTypeImageIndex
		}
		if err := v.Validate(bytes.NewReader(b)); err != nil || bytes.Contains(b, []byte("artifactType")) {
			t.Errorf("%s: %v\n%s", d, err, b)
		}
	}
}
