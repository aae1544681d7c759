package registry

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestCopySparse: the copy holds exactly the bytes read, blocks of zeros stay
// holes (a pulled disk image keeps its size on disk), and runs of data around
// them land at their offsets, across buffer boundaries too.
func TestCopySparse(t *testing.T) {
	const mib = 1 << 20
	data := make([]byte, 5*mib+123)
	rand.NewChaCha8([32]byte{7}).Read(data)
	clear(data[sparseBlock : 3*sparseBlock]) // a hole inside the first buffer
	clear(data[mib-sparseBlock : 2*mib+5])   // one across a buffer boundary, ending mid-block
	clear(data[4*mib : 5*mib])               // a whole buffer of zeros
	clear(data[len(data)-100:])              // a zero tail shorter than a block
	p := filepath.Join(t.TempDir(), "blob")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := copySparse(f, bytes.NewReader(data), true, nil); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("copy differs from the source (%d bytes, want %d)", len(got), len(data))
	}
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	if used := st.Blocks * 512; used > int64(len(data))-2*mib {
		t.Errorf("%d bytes allocated for %d bytes with over 2 MiB of zero blocks: holes were written", used, len(data))
	}
}
