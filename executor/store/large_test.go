package store

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"
)

// TestLargerThan4GiB (RELIABILITY row 26): a sparse file just over 4 GiB is
// committed with its exact int64 size and a digest over the whole payload, and
// reads back verified to the last byte.
func TestLargerThan4GiB(t *testing.T) {
	if testing.Short() {
		t.Skip("hashes 8 GiB")
	}
	const size = 4<<30 + 4097
	p := filepath.Join(t.TempDir(), "big.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	// A sparse file: a hole, then one byte at the very end.
	if _, err := f.WriteAt([]byte{1}, size-1); err != nil {
		t.Fatal(err)
	}
	f.Close()

	// sha256 of size-1 zero bytes and then 0x01, computed once with crypto/sha256.
	const want = digest.Digest("sha256:b673c3989ebc7833fa1cd21ead525c2bb46f894c9d57c4a2903355923c00eb11")

	s := newStore(t)
	d, n, err := s.LinkFile(context.Background(), p, 0o644, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if n != size || d != want {
		t.Fatalf("LinkFile = %s, %d; want %s, %d", d, n, want, int64(size))
	}
	r, err := s.OpenBlobSize(d, size)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := io.Copy(io.Discard, r)
	if err != nil || got != size {
		t.Fatalf("read back %d bytes, err %v; want %d verified bytes", got, err, int64(size))
	}
}
