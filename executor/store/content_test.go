package store

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/executor/tree"
)

func desc(b []byte) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.FromBytes(b), Size: int64(len(b))}
}

// TestContentByDescriptor: Push checks size and digest while it writes and
// takes what is already there; Fetch checks them while it reads; Exists and
// Ingest say what is stored.
func TestContentByDescriptor(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	content := []byte("some content")
	d := desc(content)

	if ok, err := s.Exists(ctx, d); err != nil || ok {
		t.Fatalf("Exists before Push = %v, %v", ok, err)
	}
	if _, err := s.Fetch(ctx, d); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), d.Digest.String()) {
		t.Fatalf("Fetch of missing content = %v, want ErrNotFound naming the digest", err)
	}
	for name, bad := range map[string][]byte{"digest": []byte("other content"), "size": []byte("some content!")} {
		if err := s.Push(ctx, d, bytes.NewReader(bad)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Push with the wrong %s = %v, want ErrCorrupt", name, err)
		}
	}
	if left, _ := os.ReadDir(s.session); len(left) != 0 {
		t.Fatalf("a refused push left %v", left)
	}
	if err := s.Push(ctx, d, bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	r := strings.NewReader("some content")
	if err := s.Push(ctx, d, r); err != nil || r.Len() != 0 {
		t.Fatalf("Push of present content = %v, %d bytes left unread; want nil, drained", err, r.Len())
	}
	if ok, err := s.Exists(ctx, d); err != nil || !ok {
		t.Fatalf("Exists after Push = %v, %v", ok, err)
	}
	if ok, _ := s.Exists(ctx, ocispec.Descriptor{Digest: d.Digest, Size: 3}); ok {
		t.Fatal("Exists with the wrong size")
	}
	rc, err := s.Fetch(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("Fetch = %q, %v", got, err)
	}
	if _, err := s.Fetch(ctx, ocispec.Descriptor{Digest: d.Digest, Size: 99}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Fetch with the wrong size = %v, want ErrCorrupt", err)
	}
	// Bytes changed behind the store's back: the reader ends in ErrCorrupt.
	p, _ := s.BlobPath(d.Digest)
	os.Chmod(p, 0o644)
	os.WriteFile(p, []byte("SOME CONTENT"), 0o444)
	rc, err = s.Fetch(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(rc)
	rc.Close()
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("reading changed bytes = %v, want ErrCorrupt", err)
	}

	in, err := s.Ingest(ctx, "text/plain", strings.NewReader("a log"))
	if err != nil {
		t.Fatal(err)
	}
	if want := (ocispec.Descriptor{MediaType: "text/plain", Digest: digest.FromString("a log"), Size: 5}); in.Digest != want.Digest || in.Size != want.Size || in.MediaType != want.MediaType {
		t.Fatalf("Ingest = %+v, want %+v", in, want)
	}
}

// TestAddFileSparse: AddFile moves a finished file into the store without
// copying, holes included, and consumes it; a file with another hardlink is
// copied, still sparse.
func TestAddFileSparse(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	const size = 64 << 20
	mk := func(name string) string {
		p := filepath.Join(mustSession(t, s), name) // on the store's filesystem
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt([]byte("superblock"), 1024)
		f.WriteAt([]byte("end"), size-3)
		f.Close()
		return p
	}
	blocks := func(p string) int64 {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		return st.Blocks * 512
	}
	p := mk("image.ext4")
	var before unix.Stat_t
	unix.Stat(p, &before)
	dsc, err := s.AddFile(ctx, p, "application/vnd.strata.ext4")
	if err != nil {
		t.Fatal(err)
	}
	if dsc.Size != size || dsc.MediaType != "application/vnd.strata.ext4" {
		t.Fatalf("AddFile = %+v", dsc)
	}
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("AddFile left the file in place")
	}
	bp, _ := s.BlobPath(dsc.Digest)
	var after unix.Stat_t
	unix.Stat(bp, &after)
	if after.Ino != before.Ino {
		t.Fatal("AddFile copied a file it could move")
	}
	if after.Mode&0o777 != 0o444 {
		t.Fatalf("blob mode %o, want 444", after.Mode&0o777)
	}
	if n := blocks(bp); n > 1<<20 {
		t.Fatalf("moved blob uses %d bytes of disk for %d of content, want holes", n, size)
	}
	// Linked elsewhere too: copied, and the copy keeps its holes.
	q := mk("linked.ext4")
	f, _ := os.OpenFile(q, os.O_WRONLY, 0)
	f.WriteAt([]byte("another superblock"), 1024)
	f.Close()
	other := q + ".other-name"
	os.Link(q, other)
	dsc2, err := s.AddFile(ctx, q, "application/vnd.strata.ext4")
	if err != nil {
		t.Fatal(err)
	}
	bp2, _ := s.BlobPath(dsc2.Digest)
	if n := blocks(bp2); n > 1<<20 {
		t.Fatalf("copied blob uses %d bytes of disk for %d of content, want holes", n, size)
	}
	var ost, bst unix.Stat_t
	unix.Stat(other, &ost)
	unix.Stat(bp2, &bst)
	if ost.Ino == bst.Ino {
		t.Fatal("a file with another name became a store object")
	}
	r, err := s.Fetch(ctx, dsc2)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := io.Copy(io.Discard, r); err != nil || n != size {
		t.Fatalf("read back %d, %v", n, err)
	}
	r.Close()
	// Already there: the file is consumed all the same.
	p3 := mk("again.ext4")
	if d3, err := s.AddFile(ctx, p3, "application/vnd.strata.ext4"); err != nil || d3.Digest != dsc.Digest {
		t.Fatalf("AddFile of present content = %+v, %v", d3, err)
	}
	if _, err := os.Stat(p3); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("AddFile of present content left the file")
	}
	if _, err := s.AddFile(ctx, mustSession(t, s), "x"); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("AddFile(dir) = %v, want ErrUnsupported", err)
	}
}

// TestTreeDesc: trees by descriptor, with the media type the plan's output
// table gives the tree format.
func TestTreeDesc(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	f, ok := plan.LookupOutput("tree")
	if !ok || f.MediaType != TreeMediaType {
		t.Fatalf("plan's tree media type %q, store's %q", f.MediaType, TreeMediaType)
	}
	tr := &tree.Tree{Entries: []tree.Entry{{Path: "d", Type: tree.Dir, Mode: 0o755}}}
	dsc, err := s.PutTreeDesc(ctx, tr)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := tr.Digest(); dsc.Digest != want || dsc.MediaType != TreeMediaType || dsc.Size <= 0 {
		t.Fatalf("PutTreeDesc = %+v", dsc)
	}
	got, err := s.GetTreeDesc(ctx, dsc)
	if err != nil || len(got.Entries) != 1 {
		t.Fatalf("GetTreeDesc = %+v, %v", got, err)
	}
	if _, err := s.GetTreeDesc(ctx, ocispec.Descriptor{MediaType: "text/plain", Digest: dsc.Digest, Size: dsc.Size}); err == nil {
		t.Fatal("GetTreeDesc took another media type")
	}
	if _, err := s.GetTreeDesc(ctx, ocispec.Descriptor{MediaType: TreeMediaType, Digest: dsc.Digest, Size: dsc.Size + 1}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("GetTreeDesc with the wrong size = %v, want ErrCorrupt", err)
	}
}

// storage is oras-go's content.Storage, restated so that only the registry
// package imports oras: the store must be usable as one.
type storage interface {
	Fetch(ctx context.Context, target ocispec.Descriptor) (io.ReadCloser, error)
	Push(ctx context.Context, expected ocispec.Descriptor, content io.Reader) error
	Exists(ctx context.Context, target ocispec.Descriptor) (bool, error)
}

var _ storage = (*Store)(nil)
