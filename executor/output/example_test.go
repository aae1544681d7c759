package output_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/executor/output"
	"github.com/strata-build/strata/executor/tree"
)

// memContents serves blobs from memory; Path is not needed for tar.
type memContents map[digest.Digest][]byte

func (m memContents) OpenBlob(d digest.Digest) (io.ReadCloser, error) {
	b, ok := m[d]
	if !ok {
		return nil, fmt.Errorf("blob %s: %w", d, os.ErrNotExist)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (m memContents) BlobPath(d digest.Digest) (string, error) {
	return "", fmt.Errorf("blob %s: no local file", d)
}

// Writing a tar gives the same bytes every time and on every host: the digest
// below is a golden value.
func ExampleWrite() {
	hello := []byte("hello\n")
	d := digest.FromBytes(hello)
	t := &tree.Tree{Entries: []tree.Entry{
		{Path: "etc", Type: tree.Dir, Mode: 0o755},
		{Path: "etc/motd", Type: tree.File, Mode: 0o644, Size: int64(len(hello)), Digest: d},
	}}
	dir, err := os.MkdirTemp("", "example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	opts := output.Options{Format: output.FormatTar, SourceDateEpoch: 1700000000}
	res, err := output.Write(context.Background(), t, memContents{d: hello}, opts, filepath.Join(dir, "rootfs.tar"))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(res.MediaType, res.Size)
	fmt.Println(res.Digest)
	// Output:
	// application/vnd.strata.tar 2560
	// sha256:d9714b470965480ffefff7e938832b1d383697bdc951b2dedce69213037d538b
}
