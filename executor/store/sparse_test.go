package store

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSparseWriter: runs of data are written in one call each, blocks of
// zeros become holes, and the file reads back as the bytes written, whatever
// the split of the writes.
func TestSparseWriter(t *testing.T) {
	data := func(n int, c byte) []byte { return bytes.Repeat([]byte{c}, n) }
	zero := make([]byte, 64*sparseBlock)
	var content []byte
	content = append(content, data(3*sparseBlock+17, 'a')...)
	content = append(content, zero...)
	content = append(content, data(sparseBlock, 'b')...)
	content = append(content, zero[:sparseBlock+5]...) // ends in zeros
	for _, chunk := range []int{len(content), 1 << 20, sparseBlock, 1000} {
		p := filepath.Join(t.TempDir(), "f")
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		w := &sparseWriter{f: f}
		for rest := content; len(rest) > 0; {
			k := min(chunk, len(rest))
			if n, err := w.Write(rest[:k]); err != nil || n != k {
				t.Fatalf("Write = %d, %v", n, err)
			}
			rest = rest[k:]
		}
		if err := w.finish(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		got, _ := os.ReadFile(p)
		if !bytes.Equal(got, content) {
			t.Fatalf("chunk %d: file differs from what was written", chunk)
		}
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		if chunk >= sparseBlock && st.Blocks*512 >= int64(len(content)) {
			t.Errorf("chunk %d: %d bytes on disk for %d of content: no holes", chunk, st.Blocks*512, len(content))
		}
	}
}
