package output

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/strata-build/strata/executor/tree"
)

// defaultEnv starts the image environment unless Options.Env sets PATH.
var defaultEnv = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

// exposedPort is an image config ExposedPorts key, without or with protocol.
var exposedPort = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[0-9]{1,5}(/(tcp|udp|sctp))?$`) })

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func writeOCI(ctx context.Context, t *tree.Tree, c Contents, opts Options, dst string) (Result, error) {
	plat := ocispec.Platform{OS: opts.Platform.OS, Architecture: opts.Platform.Architecture, Variant: opts.Platform.Variant}
	if plat.OS == "" {
		plat.OS = "linux"
	}
	if plat.Architecture == "" {
		return Result{}, fmt.Errorf("%w: oci: Platform.Architecture is required", ErrInvalidOptions)
	}
	layerType := ocispec.MediaTypeImageLayerGzip
	switch opts.Compression {
	case "", "gzip":
	case "zstd":
		layerType = ocispec.MediaTypeImageLayerZstd
	default:
		return Result{}, fmt.Errorf("%w: oci layer compression %q (want gzip or zstd)", ErrInvalidOptions, opts.Compression)
	}
	name := opts.Name
	if name == "" {
		name = opts.Version
	}
	if name == "" {
		name = "latest"
	}
	env := opts.Env
	if !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "PATH=") }) {
		env = append(slices.Clone(defaultEnv), env...)
	}
	var ports map[string]struct{}
	for _, p := range opts.ExposedPorts {
		if !exposedPort().MatchString(p) {
			return Result{}, fmt.Errorf("%w: oci exposed port %q (want PORT or PORT/tcp, /udp or /sctp)", ErrInvalidOptions, p)
		}
		if !strings.Contains(p, "/") {
			p += "/tcp" // the image spec's default protocol, written out
		}
		if ports == nil {
			ports = map[string]struct{}{}
		}
		ports[p] = struct{}{}
	}
	var annotations map[string]string
	if len(opts.Annotations) > 0 || opts.Version != "" {
		annotations = maps.Clone(opts.Annotations)
		if annotations == nil {
			annotations = map[string]string{}
		}
		if opts.Version != "" {
			annotations[ocispec.AnnotationVersion] = opts.Version
		}
	}

	tmp, err := os.MkdirTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return Result{}, err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	if err := os.Chmod(tmp, 0o755); err != nil {
		return Result{}, err
	}
	blobs := filepath.Join(tmp, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		return Result{}, err
	}

	layer, diffID, err := writeLayer(ctx, t, c, opts.SourceDateEpoch, blobs, layerType)
	if err != nil {
		return Result{}, fmt.Errorf("layer: %w", err)
	}
	created := time.Unix(opts.SourceDateEpoch, 0).UTC()
	config := ocispec.Image{
		Created:  &created,
		Platform: plat,
		Config: ocispec.ImageConfig{
			User:         opts.User,
			ExposedPorts: ports,
			Env:          env,
			Entrypoint:   opts.Entrypoint,
			Cmd:          opts.Cmd,
			WorkingDir:   opts.WorkingDir,
			Labels:       opts.Labels,
		},
		RootFS:  ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{diffID}},
		History: []ocispec.History{{Created: &created, CreatedBy: "strata"}},
	}
	configDesc, err := writeJSONBlob(blobs, ocispec.MediaTypeImageConfig, config)
	if err != nil {
		return Result{}, err
	}
	manifest := ocispec.Manifest{
		Versioned:   specs.Versioned{SchemaVersion: 2},
		MediaType:   ocispec.MediaTypeImageManifest,
		Config:      configDesc,
		Layers:      []ocispec.Descriptor{layer},
		Annotations: annotations,
	}
	manDesc, err := writeJSONBlob(blobs, ocispec.MediaTypeImageManifest, manifest)
	if err != nil {
		return Result{}, err
	}
	refDesc := manDesc
	refDesc.Platform = &plat
	refDesc.Annotations = maps.Clone(annotations)
	if refDesc.Annotations == nil {
		refDesc.Annotations = map[string]string{}
	}
	refDesc.Annotations[ocispec.AnnotationRefName] = name
	index := ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{refDesc},
	}
	if err := writeJSONFile(filepath.Join(tmp, ocispec.ImageIndexFile), index); err != nil {
		return Result{}, err
	}
	if err := writeJSONFile(filepath.Join(tmp, ocispec.ImageLayoutFile), ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion}); err != nil {
		return Result{}, err
	}
	if err := renameDir(tmp, dst); err != nil {
		return Result{}, err
	}
	ok = true
	return Result{Path: dst, Digest: manDesc.Digest, Size: manDesc.Size}, nil
}

// writeLayer writes the tar stream of t, compressed, as a blob in dir and returns
// its descriptor and the digest of the uncompressed stream (the diff ID).
func writeLayer(ctx context.Context, t *tree.Tree, c Contents, epoch int64, dir, mediaType string) (ocispec.Descriptor, digest.Digest, error) {
	f, err := os.CreateTemp(dir, ".layer-*")
	if err != nil {
		return ocispec.Descriptor{}, "", err
	}
	defer func() {
		f.Close()
		os.Remove(f.Name())
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	blobHash := sha256.New()
	counted := &countingWriter{w: io.MultiWriter(bw, blobHash)}
	var zw io.WriteCloser
	if mediaType == ocispec.MediaTypeImageLayerZstd {
		if zw, err = newZstdWriter(counted, zstdDefaultLevel); err != nil {
			return ocispec.Descriptor{}, "", err
		}
	} else {
		// A zero gzip header: no name, no comment, modification time 0.
		if zw, err = gzip.NewWriterLevel(counted, gzip.DefaultCompression); err != nil {
			return ocispec.Descriptor{}, "", err
		}
	}
	diffHash := sha256.New()
	if err := writeTar(ctx, io.MultiWriter(zw, diffHash), t, c, epoch); err != nil {
		zw.Close()
		return ocispec.Descriptor{}, "", err
	}
	if err := zw.Close(); err != nil {
		return ocispec.Descriptor{}, "", err
	}
	if err := bw.Flush(); err != nil {
		return ocispec.Descriptor{}, "", err
	}
	if err := f.Chmod(0o644); err != nil {
		return ocispec.Descriptor{}, "", err
	}
	if err := f.Sync(); err != nil {
		return ocispec.Descriptor{}, "", err
	}
	d := digest.NewDigest(digest.SHA256, blobHash)
	if err := os.Rename(f.Name(), filepath.Join(dir, d.Encoded())); err != nil {
		return ocispec.Descriptor{}, "", err
	}
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: counted.n}, digest.NewDigest(digest.SHA256, diffHash), nil
}

// writeJSONBlob stores v's JSON encoding as a blob in dir. encoding/json writes
// struct fields in declaration order and map keys sorted, so equal values give
// equal blobs.
func writeJSONBlob(dir, mediaType string, v any) (ocispec.Descriptor, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	d := digest.FromBytes(b)
	if err := writeFileSync(filepath.Join(dir, d.Encoded()), b); err != nil {
		return ocispec.Descriptor{}, err
	}
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(b))}, nil
}

func writeJSONFile(p string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return writeFileSync(p, b)
}

func writeFileSync(p string, b []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// renameDir moves the complete directory tmp to dst. An existing dst is first
// moved aside, then removed once tmp is in place, so dst is never partial.
func renameDir(tmp, dst string) error {
	err := os.Rename(tmp, dst)
	if err == nil {
		return nil
	}
	if _, statErr := os.Lstat(dst); statErr != nil {
		return err
	}
	aside := tmp + ".old"
	if err := os.Rename(dst, aside); err != nil {
		return fmt.Errorf("move old %s aside: %w", dst, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Rename(aside, dst)
		return err
	}
	os.RemoveAll(aside)
	return nil
}
