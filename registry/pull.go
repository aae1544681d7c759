package registry

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// PullOptions select what Pull fetches and where it puts it. The zero value
// takes the only variant of the default version and leaves the files in the
// local OCI layout.
type PullOptions struct {
	// DeviceType picks the variant for a device (most specific match first).
	DeviceType string
	// Platform (OS/ARCH) picks the variant for a platform.
	Platform string
	// OutDir, when set, receives a copy of every file under its title, and an
	// oci output as an OCI layout directory; otherwise the paths are the
	// blobs of the local layout, which must only be read.
	OutDir string
}

// Pulled is what Pull fetched.
type Pulled struct {
	// Reference is the reference resolved, at the digest it resolved to.
	Reference   string   `json:"reference"`
	Repository  string   `json:"repository"`
	Image       string   `json:"image"`
	Version     string   `json:"version"`
	Platform    string   `json:"platform"`
	DeviceTypes []string `json:"device_types"`
	// Digest is the strata manifest's; Index the version's index.
	Digest digest.Digest `json:"digest"`
	Index  digest.Digest `json:"index,omitempty"`
	// Files are the image's files, in manifest order.
	Files []File `json:"files"`
	// Container is the image's container image (an oci output), if any.
	Container *File `json:"container,omitempty"`
	// Layout is the local OCI layout that holds everything pulled.
	Layout string `json:"layout"`
	// Config is the strata config of the image.
	Config Config `json:"config"`
}

// File is one file of a pulled or installed image.
type File struct {
	Name      string        `json:"name"`
	Path      string        `json:"path"`
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
	MediaType string        `json:"media_type"`
	Format    string        `json:"format,omitempty"`
}

// artifact is a resolved and verified strata image: its index, manifest and
// config, read by digest.
type artifact struct {
	ref      Ref // at the index's (or manifest's) digest
	index    *ocispec.Index
	indexRaw []byte
	indexD   ocispec.Descriptor
	manD     ocispec.Descriptor
	manRaw   []byte
	man      *ocispec.Manifest
	cfgRaw   []byte
	cfg      Config
	// container is the image's container manifest entry in the index.
	container    *ocispec.Descriptor
	containerRaw []byte
	containerMan *ocispec.Manifest
}

// Pull fetches a strata image: ref resolved to a digest once (no tag: the
// default version), the variant for the device type and platform chosen, and
// every blob fetched into the local OCI layout with its size and digest
// checked as it streams; nothing is tagged there until all of it is.
func (c *Client) Pull(ctx context.Context, ref string, opts PullOptions) (*Pulled, error) {
	r, err := ParseRef(ref)
	if err != nil {
		return nil, err
	}
	a, dst, err := c.fetchArtifact(ctx, r, opts.DeviceType, opts.Platform, nil)
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref, err)
	}
	p := a.pulled(r, dst)
	for i := range p.Files {
		f := &p.Files[i]
		if f.Path, err = dst.blobPath(ocispec.Descriptor{Digest: f.Digest}); err != nil {
			return nil, err
		}
	}
	if p.Container != nil {
		p.Container.Path = dst.dir
	}
	if opts.OutDir != "" {
		if err := c.export(ctx, a, dst, opts.OutDir, p); err != nil {
			return nil, fmt.Errorf("pull %s: %w", ref, err)
		}
	}
	return p, nil
}

func (a *artifact) pulled(r Ref, dst *layout) *Pulled {
	p := &Pulled{
		Reference: a.ref.String(), Repository: r.Name(), Image: a.cfg.Name, Version: a.cfg.Version,
		Platform: a.cfg.Platform.OS + "/" + a.cfg.Platform.Architecture, DeviceTypes: a.cfg.DeviceTypes,
		Digest: a.manD.Digest, Index: a.indexD.Digest, Files: []File{}, Layout: dst.dir, Config: a.cfg,
	}
	for _, l := range a.man.Layers {
		if l.MediaType == emptyJSON.MediaType {
			continue
		}
		p.Files = append(p.Files, File{Name: l.Annotations[ocispec.AnnotationTitle], Digest: l.Digest, Size: l.Size, MediaType: l.MediaType, Format: l.Annotations[AnnotationFormat]})
	}
	if a.container != nil {
		name := ""
		for _, o := range a.cfg.Outputs {
			if o.Digest == a.container.Digest {
				name = o.Name
			}
		}
		p.Container = &File{Name: name, Digest: a.container.Digest, Size: a.container.Size, MediaType: a.container.MediaType, Format: "oci"}
	}
	return p
}

// fetchArtifact resolves r, reads its index, manifest and config, and copies
// everything into the local layout of r's repository, tagging it there last.
func (c *Client) fetchArtifact(ctx context.Context, r Ref, deviceType, platform string, check func(*artifact) error) (*artifact, *layout, error) {
	src, err := c.target(r.WithTag(""))
	if err != nil {
		return nil, nil, err
	}
	dstT := src
	if !r.Local() {
		dir, err := c.layoutDir(r.Name())
		if err != nil {
			return nil, nil, err
		}
		if dstT, err = openLayout(dir, r.Name()); err != nil {
			return nil, nil, err
		}
		dstT.(*layout).hook = c.opts.hook
	}
	dst := dstT.(*layout)
	a, err := c.resolveArtifact(ctx, src, r, deviceType, platform)
	if err != nil {
		return nil, nil, err
	}
	c.step("resolved")
	if check != nil {
		// Refusals that the manifest and config decide come before any layer
		// is downloaded: a device must not fetch a whole image to refuse it.
		if err := check(a); err != nil {
			return nil, nil, err
		}
	}
	// The config was read and verified to resolve the variant: it is stored
	// from memory below, like the manifests, not downloaded a second time.
	blobs := slices.Clone(a.man.Layers)
	if a.containerMan != nil {
		blobs = append(blobs, a.containerMan.Config)
		blobs = append(blobs, a.containerMan.Layers...)
	}
	if src != dstT {
		var need int64
		seen := map[digest.Digest]bool{}
		for _, b := range blobs {
			if ok, _ := dst.exists(ctx, b); !ok && !seen[b.Digest] {
				seen[b.Digest] = true
				need += b.Size
			}
		}
		if err := checkSpace(dst.dir, need); err != nil {
			return nil, nil, err
		}
		if err := c.fetchBlobs(ctx, src, dst, blobs); err != nil {
			return nil, nil, err
		}
	}
	c.step("blobs-fetched")
	docs := []struct {
		d ocispec.Descriptor
		b []byte
	}{{a.man.Config, a.cfgRaw}, {a.manD, a.manRaw}}
	if a.container != nil {
		docs = append(docs, struct {
			d ocispec.Descriptor
			b []byte
		}{*a.container, a.containerRaw})
	}
	for _, doc := range docs {
		if ok, _ := dst.exists(ctx, doc.d); !ok {
			if err := dst.push(ctx, doc.d, bytes.NewReader(doc.b)); err != nil {
				return nil, nil, err
			}
		}
	}
	if src != dstT {
		tag := r.Tag
		if tag == "" {
			tag, _ = TagOf(a.cfg.Version)
		}
		top, raw := a.indexD, a.indexRaw
		if a.index == nil {
			top, raw = a.manD, a.manRaw
		}
		if tag != "" {
			if err := dst.tag(ctx, top, raw, tag); err != nil {
				return nil, nil, err
			}
		}
	}
	return a, dst, nil
}

// resolveArtifact resolves r on t to a digest once and reads, verified, the
// index, the chosen variant's manifest and config, and the container image's
// manifest beside it.
func (c *Client) resolveArtifact(ctx context.Context, t target, r Ref, deviceType, platform string) (*artifact, error) {
	top, err := c.resolveVersion(ctx, t, r)
	if err != nil {
		return nil, err
	}
	at := r.WithTag("")
	at.Digest = top.Digest
	a := &artifact{ref: at}
	switch top.MediaType {
	case ocispec.MediaTypeImageIndex:
		if a.indexRaw, err = readVerified(ctx, t, top); err != nil {
			return nil, err
		}
		if a.index, err = parseIndex(a.indexRaw); err != nil {
			return nil, err
		}
		a.indexD = top
		if a.manD, err = selectVariant(a.index, r.String(), deviceType, platform); err != nil {
			return nil, err
		}
	case ocispec.MediaTypeImageManifest:
		a.manD = top
	default:
		return nil, fmt.Errorf("%s: %w: %s is not an image index or manifest", r, ErrInvalid, top.MediaType)
	}
	if a.manRaw, err = readVerified(ctx, t, a.manD); err != nil {
		return nil, err
	}
	if a.man, err = parseManifest(a.manRaw); err != nil {
		return nil, err
	}
	if a.man.Config.MediaType != MediaTypeConfig {
		return nil, fmt.Errorf("%s: %w: not a strata image (config %s)", r, ErrInvalid, a.man.Config.MediaType)
	}
	if a.cfgRaw, err = readVerified(ctx, t, a.man.Config); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(a.cfgRaw, &a.cfg); err != nil {
		return nil, fmt.Errorf("%s: %w: config: %v", r, ErrInvalid, err)
	}
	if a.index == nil && deviceType != "" && matchDevice(a.cfg.DeviceTypes, deviceType) < 0 {
		return nil, fmt.Errorf("%s: %w for device type %q; on offer: %s", r, ErrNoMatch, deviceType, strings.Join(a.cfg.DeviceTypes, ", "))
	}
	titles := map[string]bool{}
	for _, l := range a.man.Layers {
		if l.MediaType != emptyJSON.MediaType {
			title := l.Annotations[ocispec.AnnotationTitle]
			if err := checkTitle(title); err != nil {
				return nil, fmt.Errorf("%s: %w", r, err)
			}
			if titles[title] {
				// One would overwrite the other in a slot or an -o directory.
				return nil, fmt.Errorf("%s: %w: two layers are titled %q", r, ErrInvalid, title)
			}
			titles[title] = true
		}
	}
	if a.index != nil {
		for _, m := range a.index.Manifests {
			if m.Annotations[AnnotationKind] != kindContainer || m.Annotations[AnnotationImage] != a.cfg.Name || m.Platform == nil ||
				m.Platform.OS != a.cfg.Platform.OS || m.Platform.Architecture != a.cfg.Platform.Architecture {
				continue
			}
			raw, err := readVerified(ctx, t, m)
			if err != nil {
				return nil, err
			}
			cm, err := parseManifest(raw)
			if err != nil {
				return nil, err
			}
			a.container, a.containerRaw, a.containerMan = &m, raw, cm
			break
		}
	}
	return a, nil
}

// checkTitle refuses a layer title that is not a plain file name: a hostile
// manifest must not write outside the directory it is pulled into, nor over
// a hidden file there (pull -o . in a home directory, .bashrc) or strata's own
// temporaries, which start with a dot. strata names outputs with a letter or
// digit first (#FileName), so no image it published has such a title.
func checkTitle(t string) error {
	if t == "" || strings.HasPrefix(t, ".") || strings.ContainsAny(t, "/\x00") || filepath.Base(t) != t {
		return fmt.Errorf("%w: layer title %q is not a plain file name", ErrInvalid, t)
	}
	return nil
}

// export copies the pulled files into dir under their titles (and an oci
// output as an OCI layout directory), each hashed as it is copied and renamed
// into place only when it matches, through an os.Root so nothing lands
// outside dir.
func (c *Client) export(ctx context.Context, a *artifact, src *layout, dir string, p *Pulled) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	for i := range p.Files {
		f := &p.Files[i]
		if err := copyVerified(ctx, src, root, f.Name, ocispec.Descriptor{Digest: f.Digest, Size: f.Size}, nil); err != nil {
			return err
		}
		f.Path = filepath.Join(dir, f.Name)
	}
	if p.Container != nil && a.containerMan != nil {
		name := p.Container.Name
		if name == "" {
			name = "oci"
		}
		if err := checkTitle(name); err != nil {
			return err
		}
		if err := exportLayout(ctx, src, root, name, *a.container, a.containerRaw, a.containerMan); err != nil {
			return err
		}
		p.Container.Path = filepath.Join(dir, name)
	}
	return nil
}

// exportLayout writes an OCI layout directory name holding the container
// image. It replaces an OCI layout already there (an earlier pull's) and
// nothing else: the name comes from the image's config, and a directory of
// the user's that happens to have it must not be deleted.
func exportLayout(ctx context.Context, src *layout, root *os.Root, name string, md ocispec.Descriptor, raw []byte, m *ocispec.Manifest) error {
	if fi, err := root.Lstat(name); err == nil {
		lf, lerr := root.Lstat(filepath.Join(name, ocispec.ImageLayoutFile))
		if !fi.IsDir() || lerr != nil || !lf.Mode().IsRegular() {
			return fmt.Errorf("%s exists and is not an OCI layout: remove it or pull into another directory", name)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	tmp := ".strata-" + rand.Text() + ".tmp"
	if err := root.Mkdir(tmp, 0o755); err != nil {
		return err
	}
	done := false
	defer func() {
		if !done {
			root.RemoveAll(tmp)
		}
	}()
	if err := root.MkdirAll(filepath.Join(tmp, "blobs", "sha256"), 0o755); err != nil {
		return err
	}
	for _, d := range append([]ocispec.Descriptor{m.Config}, m.Layers...) {
		if err := copyVerified(ctx, src, root, filepath.Join(tmp, "blobs", "sha256", d.Digest.Encoded()), d, nil); err != nil {
			return err
		}
	}
	if err := root.WriteFile(filepath.Join(tmp, "blobs", "sha256", md.Digest.Encoded()), raw, 0o644); err != nil {
		return err
	}
	entry := ocispec.Descriptor{MediaType: md.MediaType, Digest: md.Digest, Size: md.Size, Platform: md.Platform,
		Annotations: map[string]string{ocispec.AnnotationRefName: md.Annotations[ocispec.AnnotationVersion]}}
	if entry.Annotations[ocispec.AnnotationRefName] == "" {
		entry.Annotations[ocispec.AnnotationRefName] = "latest"
	}
	ib, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{entry}})
	lb, _ := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err := root.WriteFile(filepath.Join(tmp, ocispec.ImageIndexFile), ib, 0o644); err != nil {
		return err
	}
	if err := root.WriteFile(filepath.Join(tmp, ocispec.ImageLayoutFile), lb, 0o644); err != nil {
		return err
	}
	if err := root.RemoveAll(name); err != nil {
		return err
	}
	if err := root.Rename(tmp, name); err != nil {
		return err
	}
	done = true
	return nil
}

// copyVerified copies a blob of src into root at name through a temporary
// file, hashing as it goes; the file appears under name only if it matches.
// step, when set, is called after each chunk written.
func copyVerified(ctx context.Context, src *layout, root *os.Root, name string, d ocispec.Descriptor, step func()) error {
	rc, err := src.fetch(ctx, d)
	if err != nil {
		return err
	}
	defer rc.Close()
	// A fresh name, made exclusively: a fixed one (".<name>.part") was
	// another title's to truncate, and is a planted file's to write through.
	tmp := filepath.Join(filepath.Dir(name), ".strata-"+rand.Text()+".part")
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			root.Remove(tmp)
		}
	}()
	if err := copySparse(f, newVerifier(ctxReader{ctx, rc}, d), true, step); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	ok = true
	if err := root.Rename(tmp, name); err != nil {
		root.Remove(tmp)
		return err
	}
	return nil
}

var errNoCurrent = errors.New("nothing installed")

func readAllDiscard(r io.Reader) (int64, error) {
	return io.Copy(io.Discard, readerOnly{r})
}
