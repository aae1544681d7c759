package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// bigSize is just over 4 GiB: sizes that a 32-bit integer would wrap.
const bigSize = 4<<30 + 1

// bigDigest is the digest of bigSize bytes, all zero but the last (1),
// computed once (sha256sum) so the test hashes the content only once.
const bigDigest = digest.Digest("sha256:d6cba2fb80a815340cd82d98754730a8e86af2d14a136d3b20bbc1e13ece5c11")

// TestSecurityRow26ArtifactOver4GiB installs an artifact of 4 GiB + 1 byte
// (a sparse file) from the local layout: sizes stay int64 from the manifest
// to the slot, and the digest covers the whole payload (it was computed over
// all of it, the last byte included, and the install verifies it: a size
// truncated to 32 bits, or a hash of a prefix, would not match). The copy
// keeps the holes. It hashes 4 GiB once (about 10 s here).
func TestSecurityRow26ArtifactOver4GiB(t *testing.T) {
	if testing.Short() {
		t.Skip("hashes 4 GiB")
	}
	ctx := context.Background()
	st := newStore(t)
	c := newClient(t, st, Options{})
	dir, err := c.layoutDir("big/image")
	if err != nil {
		t.Fatal(err)
	}
	l, err := openLayout(dir, "big/image")
	if err != nil {
		t.Fatal(err)
	}
	big := ocispec.Descriptor{MediaType: mediaTypeOf("ext4"), Digest: bigDigest, Size: bigSize,
		Annotations: map[string]string{ocispec.AnnotationTitle: "disk.ext4", AnnotationFormat: "ext4"}}
	p, _ := l.blobPath(big)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{1}, bigSize-1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	put := func(v any, mt string) ocispec.Descriptor {
		b, d, err := encode(v)
		if err != nil {
			t.Fatal(err)
		}
		d.MediaType = mt
		if err := l.push(ctx, d, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		return d
	}
	cfg := put(Config{Name: "big", Version: "1.0.0", Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
		DeviceTypes: []string{"test/big"}, Outputs: []Output{{Name: "disk.ext4", Format: "ext4", MediaType: big.MediaType, Digest: big.Digest, Size: big.Size}}}, MediaTypeConfig)
	mb, md, err := manifestFor(cfg, []ocispec.Descriptor{big}, map[string]string{AnnotationDeviceTypes: "test/big"}, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.push(ctx, md, bytes.NewReader(mb)); err != nil {
		t.Fatal(err)
	}
	md.Platform = &ocispec.Platform{OS: "linux", Architecture: "amd64"}
	md.Annotations = map[string]string{AnnotationDeviceTypes: "test/big", AnnotationKind: kindArtifact, AnnotationImage: "big"}
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{md}, Annotations: map[string]string{ocispec.AnnotationVersion: "1.0.0"}}
	ib, id, _ := encode(idx)
	id.MediaType = ocispec.MediaTypeImageIndex
	if err := l.tag(ctx, id, ib, "1.0.0"); err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(mb, &m); err != nil || m.Layers[0].Size != bigSize {
		t.Fatalf("manifest layer size %d: %v", m.Layers[0].Size, err)
	}

	target := t.TempDir()
	in, err := c.Install(ctx, "big/image:1.0.0", target, InstallOptions{DeviceType: "test/big"})
	if err != nil {
		t.Fatal(err)
	}
	if in.Current.Files[0].Size != bigSize {
		t.Fatalf("slot file size %d", in.Current.Files[0].Size)
	}
	out := filepath.Join(target, in.Current.Slot, "disk.ext4")
	fi, err := os.Stat(out)
	if err != nil || fi.Size() != bigSize {
		t.Fatalf("installed %v: %v", fi, err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Blocks*512 > 1<<30 {
		t.Errorf("the installed file takes %d bytes on disk: the holes were written", st.Blocks*512)
	}
	b := make([]byte, 1)
	g, _ := os.Open(out)
	g.ReadAt(b, bigSize-1)
	g.Close()
	if b[0] != 1 {
		t.Fatalf("last byte %d", b[0])
	}
}
