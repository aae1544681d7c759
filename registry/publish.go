package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/executor"
	"github.com/strata-build/strata/executor/output"
)

// Published is what publishing one image did.
type Published struct {
	// Image is the image's name; Repository where it went (host/repo, or a
	// repository of the local layout).
	Image      string `json:"image"`
	Repository string `json:"repository"`
	Version    string `json:"version"`
	// Tags point at Index: the version's tag first, then the publish tags.
	Tags  []string      `json:"tags"`
	Index digest.Digest `json:"index"`
	// Manifest is the image's strata artifact manifest; Container its
	// container image (an oci output), if any.
	Manifest  digest.Digest `json:"manifest"`
	Container digest.Digest `json:"container,omitempty"`
	// Form is "oci-1.1", or "oci-1.0" for a registry that refused 1.1 fields.
	Form string `json:"form"`
	// Local is the local OCI layout directory, for a local repository.
	Local string `json:"local,omitempty"`
	// Identical reports that the repository already held exactly this
	// content under these tags, so nothing was pushed (build-compare).
	Identical bool `json:"identical,omitempty"`
}

// publishOptions are a publish node's options (compiler: publish).
type publishOptions struct {
	Repository  string            `json:"repository"`
	Tags        []string          `json:"tags"`
	Version     string            `json:"version"`
	DeviceTypes []string          `json:"device_types"`
	Default     bool              `json:"default"`
	Annotations map[string]string `json:"annotations"`
}

var _ executor.Publisher = (*Client)(nil)

// Publish publishes an image (executor.Publisher): its outputs as one strata
// artifact manifest for its platform, an oci output as an ordinary container
// image beside it, both in the image index of its version, tagged with the
// version and the publish tags. It goes to the publish node's repository
// (under Options.Registry), or where PublishTo says. Blobs the repository has
// are not sent again; tags are set only after everything they reach is there.
func (c *Client) Publish(ctx context.Context, req executor.PublishRequest) (executor.Result, error) {
	var po publishOptions
	if req.Node != nil && len(req.Node.Options) > 0 {
		if err := json.Unmarshal(req.Node.Options, &po); err != nil {
			return executor.Result{}, fmt.Errorf("publish %s: options: %w", req.Image.Name, err)
		}
	}
	to := c.publishTo
	if to == "" {
		if po.Repository == "" {
			return executor.Result{}, fmt.Errorf("publish %s: no repository (publish: in the spec, or --to)", req.Image.Name)
		}
		to = Join(c.opts.Registry, po.Repository)
	}
	ref, err := ParseRef(to)
	if err != nil {
		return executor.Result{}, fmt.Errorf("publish %s: %w", req.Image.Name, err)
	}
	tags := po.Tags
	if ref.Tag != "" {
		tags = append(tags, ref.Tag)
	}
	pub, err := c.publish(ctx, req, ref.WithTag(""), tags)
	if err != nil {
		return executor.Result{}, fmt.Errorf("publish %s to %s: %w", req.Image.Name, ref.Name(), err)
	}
	c.mu.Lock()
	c.published = append(c.published, *pub)
	c.mu.Unlock()
	return executor.Result{Outputs: map[string]ocispec.Descriptor{
		"index": {MediaType: ocispec.MediaTypeImageIndex, Digest: pub.Index},
	}}, nil
}

// PublishTo makes Publish send every image to ref (host/repo[:tag], or a local
// repository) instead of its publish repository; a tag in ref is added to
// each image's tags. Empty restores the default.
func (c *Client) PublishTo(ref string) error {
	if ref != "" {
		if _, err := ParseRef(ref); err != nil {
			return err
		}
	}
	c.publishTo = ref
	return nil
}

// Published returns what Publish did so far, in the order it finished.
func (c *Client) Published() []Published {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.published)
}

// image is one image made ready to push.
type image struct {
	name     string
	version  string
	platform ocispec.Platform
	devices  []string
	def      bool
	created  string
	// blobs are the layers, configs and container image blobs.
	blobs []blob
	// config and layers of the strata manifest.
	config      ocispec.Descriptor
	layers      []ocispec.Descriptor
	annotations map[string]string
	// container is an oci output's manifest, pushed by digest before the index.
	container      *ocispec.Descriptor
	containerBytes []byte
}

func (c *Client) publish(ctx context.Context, req executor.PublishRequest, ref Ref, extraTags []string) (*Published, error) {
	img, err := c.prepare(ctx, req)
	if err != nil {
		return nil, err
	}
	versionTag, err := TagOf(img.version)
	if err != nil {
		return nil, err
	}
	tags := []string{versionTag}
	for _, t := range extraTags {
		if !validTag(t) {
			return nil, fmt.Errorf("%w: tag %q", ErrBadReference, t)
		}
		if !slices.Contains(tags, t) {
			tags = append(tags, t)
		}
	}
	t, err := c.target(ref)
	if err != nil {
		return nil, err
	}
	// A manifest the repository already has brings its blobs with it (a
	// registry refuses a manifest whose blobs are missing; strata writes a
	// layout's manifests after their blobs): an unchanged re-push is a few
	// HEAD requests, whatever the number of files.
	v11 := !c.refuses11(ref.Registry)
	form := "oci-1.1"
	if !v11 {
		form = "oci-1.0"
	}
	mb, md, err := manifestFor(img.config, img.layers, img.annotations, v11)
	if err != nil {
		return nil, err
	}
	// Build-compare (the OBS worker's): when the version is already published
	// with exactly this content, nothing is pushed or tagged.
	if d, same := c.alreadyPublished(ctx, t, img, md, tags); same {
		c.emit(Event{Kind: EventIdentical, Repository: t.name(), Digest: d.Digest, Tag: versionTag,
			Message: fmt.Sprintf("%s %s is identical to what %s:%s holds: nothing published", img.name, img.version, t.name(), versionTag)})
		pub := &Published{Image: img.name, Repository: ref.Name(), Version: img.version, Tags: tags, Form: form,
			Index: d.Digest, Manifest: md.Digest, Identical: true}
		if img.container != nil {
			pub.Container = img.container.Digest
		}
		if l, ok := t.(*layout); ok {
			pub.Local = l.dir
		}
		return pub, nil
	}
	have, err := t.exists(ctx, md)
	if err != nil {
		return nil, err
	}
	if have && img.container != nil {
		have, err = t.exists(ctx, *img.container)
		if err != nil {
			return nil, err
		}
	}
	if !have {
		if err := c.pushBlobs(ctx, t, img.blobs); err != nil {
			return nil, err
		}
	}
	c.step("blobs-pushed")
	pub := &Published{Image: img.name, Repository: ref.Name(), Version: img.version, Tags: tags, Form: form}
	if l, ok := t.(*layout); ok {
		pub.Local = l.dir
	}
	if img.container != nil {
		if err := c.pushManifest(ctx, t, *img.container, img.containerBytes); err != nil {
			return nil, err
		}
		pub.Container = img.container.Digest
	}
	err = c.pushManifest(ctx, t, md, mb)
	if v11 && refused11(err) {
		// Some registries refuse artifactType or unknown config types in
		// 1.1 form (image-spec #1025): push the 1.0 form and remember.
		c.emit(Event{Kind: EventFallback, Repository: t.name(), Message: err.Error()})
		v11 = false
		if mb, md, err = manifestFor(img.config, img.layers, img.annotations, false); err != nil {
			return nil, err
		}
		if err = c.pushManifest(ctx, t, md, mb); err == nil {
			c.rememberRefuses11(ref.Registry)
		}
	}
	if err != nil {
		return nil, err
	}
	if !v11 {
		pub.Form = "oci-1.0"
	}
	pub.Manifest = md.Digest
	c.step("manifests-pushed")

	// The index of the version gathers the variants of every image published
	// to it: read what the tag holds, replace this image's entries, write.
	unlock := c.lockRepo(ref.Name())
	defer unlock()
	if l, ok := t.(*layout); ok {
		// Another process may be merging its image into the same index: the
		// whole read-merge-tag is its critical section, not just the write.
		c.step("repo-locking")
		unlockLayout, err := l.lockPublish()
		if err != nil {
			return nil, err
		}
		defer unlockLayout()
	}
	entries := []ocispec.Descriptor{}
	if img.container != nil {
		d := *img.container
		d.Platform = &img.platform
		d.Annotations = withAnnotations(nil, AnnotationImage, img.name, AnnotationKind, kindContainer,
			ocispec.AnnotationVersion, img.version, AnnotationDeviceTypes, strings.Join(img.devices, ","))
		entries = append(entries, d)
	}
	sd := md
	sd.Platform = &img.platform
	sd.Annotations = withAnnotations(nil, AnnotationImage, img.name, AnnotationKind, kindArtifact,
		ocispec.AnnotationVersion, img.version, AnnotationDeviceTypes, strings.Join(img.devices, ","))
	if img.def {
		sd.Annotations[AnnotationDefault] = "true"
	}
	entries = append(entries, sd)
	old, err := c.fetchIndex(ctx, t, versionTag)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	idx := mergeIndex(old, entries, img)
	ib, id, err := encode(idx)
	if err != nil {
		return nil, err
	}
	id.MediaType = ocispec.MediaTypeImageIndex
	for _, tag := range tags {
		if err := t.tag(ctx, id, ib, tag); err != nil {
			return nil, fmt.Errorf("tag %s: %w", tag, err)
		}
		c.emit(Event{Kind: EventTag, Repository: t.name(), Digest: id.Digest, Tag: tag})
	}
	pub.Index = id.Digest
	return pub, nil
}

// alreadyPublished reports whether every tag points at one index that holds
// this image's manifest md for its platform (and its container image, if any):
// the content is published already. It returns that index.
func (c *Client) alreadyPublished(ctx context.Context, t target, img *image, md ocispec.Descriptor, tags []string) (ocispec.Descriptor, bool) {
	d, err := t.resolve(ctx, tags[0])
	if err != nil {
		return ocispec.Descriptor{}, false
	}
	for _, tag := range tags[1:] {
		if o, err := t.resolve(ctx, tag); err != nil || o.Digest != d.Digest {
			return d, false
		}
	}
	idx, err := c.fetchIndex(ctx, t, tags[0])
	if err != nil {
		return d, false
	}
	found, container := false, img.container == nil
	for _, m := range idx.Manifests {
		if m.Annotations[AnnotationImage] != img.name || m.Platform == nil ||
			m.Platform.OS != img.platform.OS || m.Platform.Architecture != img.platform.Architecture {
			continue
		}
		switch {
		case m.Digest == md.Digest:
			found = true
		case img.container != nil && m.Digest == img.container.Digest:
			container = true
		default:
			return d, false // another build of this image and platform
		}
	}
	return d, found && container
}

// refused11 reports whether a manifest push failed the way registries refuse
// OCI 1.1 fields or unknown config media types: 400, 415 or 422.
func refused11(err error) bool {
	var st *StatusError
	return errors.As(err, &st) && (st.StatusCode == 400 || st.StatusCode == 415 || st.StatusCode == 422)
}

// pushManifest stores a manifest by digest unless the target has it.
func (c *Client) pushManifest(ctx context.Context, t target, d ocispec.Descriptor, b []byte) error {
	if ok, err := t.exists(ctx, d); err == nil && ok {
		return nil
	}
	if err := t.push(ctx, d, bytes.NewReader(b)); err != nil {
		return fmt.Errorf("push manifest %s: %w", d.Digest, err)
	}
	c.emit(Event{Kind: EventManifest, Repository: t.name(), Digest: d.Digest, MediaType: d.MediaType, Size: d.Size})
	return nil
}

// mergeIndex is old with img's entries (same image and platform) replaced by
// entries: container images first (so docker and podman, which take the first
// entry for their platform, get a runnable image), then strata manifests, each
// sorted by image and platform.
func mergeIndex(old *ocispec.Index, entries []ocispec.Descriptor, img *image) ocispec.Index {
	var all []ocispec.Descriptor
	if old != nil {
		for _, d := range old.Manifests {
			same := d.Annotations[AnnotationImage] == img.name && d.Platform != nil &&
				d.Platform.OS == img.platform.OS && d.Platform.Architecture == img.platform.Architecture
			if !same {
				all = append(all, d)
			}
		}
	}
	all = append(all, entries...)
	rank := func(d ocispec.Descriptor) string {
		k := "1"
		if isStrataManifest(d) {
			k = "2"
		}
		p := ""
		if d.Platform != nil {
			p = d.Platform.OS + "/" + d.Platform.Architecture
		}
		return k + "\x00" + d.Annotations[AnnotationImage] + "\x00" + p
	}
	slices.SortStableFunc(all, func(a, b ocispec.Descriptor) int { return strings.Compare(rank(a), rank(b)) })
	def := false
	for _, d := range all {
		def = def || d.Annotations[AnnotationDefault] == "true"
	}
	idx := ocispec.Index{
		Versioned:   specs.Versioned{SchemaVersion: 2},
		MediaType:   ocispec.MediaTypeImageIndex,
		Manifests:   all,
		Annotations: withAnnotations(nil, ocispec.AnnotationVersion, img.version, ocispec.AnnotationCreated, img.created),
	}
	if def {
		idx.Annotations[AnnotationDefault] = "true"
	}
	return idx
}

// fetchIndex reads the index a tag points at; ErrNotFound when there is none.
func (c *Client) fetchIndex(ctx context.Context, t target, tag string) (*ocispec.Index, error) {
	d, err := t.resolve(ctx, tag)
	if err != nil {
		return nil, err
	}
	if d.MediaType != ocispec.MediaTypeImageIndex {
		return nil, fmt.Errorf("%s:%s: %w: not an image index (%s)", t.name(), tag, ErrInvalid, d.MediaType)
	}
	b, err := readVerified(ctx, t, d)
	if err != nil {
		return nil, err
	}
	return parseIndex(b)
}

// prepare turns a publish request into what to push.
func (c *Client) prepare(ctx context.Context, req executor.PublishRequest) (*image, error) {
	pi := req.Image
	if pi == nil {
		return nil, errors.New("no image")
	}
	var nodes []*plan.Node
	for _, o := range req.Outputs {
		nodes = append(nodes, o.Node)
	}
	created := sourceDateEpoch(nodes).Format(time.RFC3339)
	img := &image{
		name: pi.Name, version: pi.Version, platform: platformOf(pi.Platform),
		devices: sortedStrings(pi.DeviceTypes), def: pi.Default, created: created,
	}
	if img.devices == nil {
		img.devices = []string{}
	}
	cfg := Config{
		Name: pi.Name, Version: pi.Version, Platform: img.platform, DeviceTypes: img.devices, Default: pi.Default,
		PlanKey: pi.Tree, Sources: []Source{}, Outputs: []Output{}, Created: created, Annotations: pi.Annotations,
	}
	if req.Plan != nil {
		cfg.Sources = sourcesOf(req.Plan, pi)
	}
	fromStore := func(d ocispec.Descriptor) blob {
		return blob{desc: d, open: func(ctx context.Context) (io.ReadCloser, error) { return c.c.fetch(ctx, d) }}
	}
	for _, o := range req.Outputs {
		if o.Node == nil {
			return nil, errors.New("output without a node")
		}
		name, format := o.Node.Artifact, o.Node.Type
		d, ok := o.Result.Outputs[name]
		if !ok {
			return nil, fmt.Errorf("output %s has no artifact %q", o.Node.Name, name)
		}
		switch format {
		case "oci":
			if img.container != nil {
				return nil, fmt.Errorf("%s has two oci outputs; an image version holds one container image per platform", pi.Name)
			}
			blobs, mb, err := c.containerBlobs(ctx, d)
			if err != nil {
				return nil, fmt.Errorf("output %s: %w", name, err)
			}
			img.blobs = append(img.blobs, blobs...)
			cd := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: d.Digest, Size: int64(len(mb))}
			img.container, img.containerBytes = &cd, mb
			cfg.Outputs = append(cfg.Outputs, Output{Name: name, Format: format, MediaType: cd.MediaType, Digest: cd.Digest, Size: cd.Size})
			continue
		case "tree":
			td, err := c.treeArchive(ctx, d, sourceDateEpoch(nodes).Unix())
			if err != nil {
				return nil, fmt.Errorf("output %s: %w", name, err)
			}
			d, name = td, name+".tar.zst"
		}
		if d.MediaType == "" {
			d.MediaType = mediaTypeOf(format)
		}
		layer := ocispec.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size,
			Annotations: map[string]string{ocispec.AnnotationTitle: name, AnnotationFormat: format}}
		img.layers = append(img.layers, layer)
		img.blobs = append(img.blobs, fromStore(layer))
		cfg.Outputs = append(cfg.Outputs, Output{Name: name, Format: format, MediaType: layer.MediaType, Digest: layer.Digest, Size: layer.Size})
	}
	if len(img.layers) == 0 {
		img.blobs = append(img.blobs, bytesBlob(emptyJSON, []byte("{}")))
	}
	cb, cd, err := encode(cfg)
	if err != nil {
		return nil, err
	}
	cd.MediaType = MediaTypeConfig
	img.config = cd
	img.blobs = append(img.blobs, bytesBlob(cd, cb))
	img.annotations = withAnnotations(pi.Annotations,
		ocispec.AnnotationTitle, pi.Name,
		ocispec.AnnotationVersion, pi.Version,
		ocispec.AnnotationCreated, created,
		ocispec.AnnotationSource, c.opts.Source,
		ocispec.AnnotationRevision, c.opts.Revision,
		AnnotationImage, pi.Name,
		AnnotationDeviceTypes, strings.Join(img.devices, ","),
		AnnotationPlanKey, pi.Tree,
	)
	if pi.Default {
		img.annotations[AnnotationDefault] = "true"
	}
	return img, nil
}

func bytesBlob(d ocispec.Descriptor, b []byte) blob {
	return blob{desc: d, open: func(context.Context) (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }}
}

// containerBlobs reads an oci output's image manifest from the store and
// returns the blobs it refers to (config, layers) and its bytes.
func (c *Client) containerBlobs(ctx context.Context, d ocispec.Descriptor) ([]blob, []byte, error) {
	rc, err := c.c.fetch(ctx, ocispec.Descriptor{Digest: d.Digest, Size: d.Size})
	if err != nil {
		return nil, nil, err
	}
	defer rc.Close()
	mb, err := io.ReadAll(io.LimitReader(rc, maxManifestBytes+1))
	if err != nil {
		return nil, nil, err
	}
	if len(mb) > maxManifestBytes {
		return nil, nil, fmt.Errorf("%w: image manifest over %d bytes", ErrInvalid, maxManifestBytes)
	}
	m, err := parseManifest(mb)
	if err != nil {
		return nil, nil, err
	}
	var blobs []blob
	for _, x := range append([]ocispec.Descriptor{m.Config}, m.Layers...) {
		blobs = append(blobs, blob{desc: x, open: func(ctx context.Context) (io.ReadCloser, error) { return c.c.fetch(ctx, x) }})
	}
	return blobs, mb, nil
}

// treeArchive returns the tar.zst of a tree output (its tree manifest
// descriptor d), made once per tree and kept in the store: reproducible, so
// the same tree always gives the same layer.
func (c *Client) treeArchive(ctx context.Context, d ocispec.Descriptor, epoch int64) (ocispec.Descriptor, error) {
	dir, err := c.c.stateDir("registry-tree-archives")
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	memo := filepath.Join(dir, fmt.Sprintf("%s-%d.json", d.Digest.Encoded(), epoch))
	if b, err := os.ReadFile(memo); err == nil {
		var out ocispec.Descriptor
		if json.Unmarshal(b, &out) == nil && c.c.has(ctx, out) {
			return out, nil
		}
	}
	t, err := c.c.getTree(ctx, d.Digest)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	tmp, err := c.c.tempDir("tree-archive-")
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	defer os.RemoveAll(tmp)
	dst := filepath.Join(tmp, "tree.tar.zst")
	res, err := output.Write(ctx, t, c.c.store(), output.Options{Format: output.FormatTarZstd, SourceDateEpoch: epoch, TempDir: tmp}, dst)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	f, err := os.Open(dst)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	defer f.Close()
	out := ocispec.Descriptor{MediaType: output.MediaTypeTarZstd, Digest: res.Digest, Size: res.Size}
	if err := c.c.put(ctx, out, f); err != nil {
		return ocispec.Descriptor{}, err
	}
	b, _ := json.Marshal(out)
	if err := writeFileAtomic(dir, filepath.Base(memo), b); err != nil {
		return ocispec.Descriptor{}, err
	}
	return out, nil
}
