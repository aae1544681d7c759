package registry

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"

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
