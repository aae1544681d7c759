package registry

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/strata-build/strata/compiler/plan"
)

// Config is the config blob of a strata image manifest (MediaTypeConfig):
// what was built, for which devices, from what.
type Config struct {
	Name        string           `json:"name"`
	Version     string           `json:"version"`
	Platform    ocispec.Platform `json:"platform"`
	DeviceTypes []string         `json:"device_types"`
	// Default is the spec's default: true.
	Default bool `json:"default"`
	// PlanKey is the strong key of the image's tree: the same key is the same
	// build input, on any machine.
	PlanKey string `json:"plan_key"`
	// Sources are the sources the image's tree was built from.
	Sources []Source `json:"sources"`
	// Outputs are every output of the image: the layers of the manifest and an
	// oci output's container image manifest.
	Outputs []Output `json:"outputs"`
	// Created is SOURCE_DATE_EPOCH, RFC 3339: the same build gives the same blob.
	Created string `json:"created"`
	// Annotations are the image's annotations from the spec.
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Source is a source of an image and the digest it was pinned to.
type Source struct {
	Name   string `json:"name"`
	URL    string `json:"url,omitempty"`
	Path   string `json:"path,omitempty"`
	Git    string `json:"git,omitempty"`
	Commit string `json:"commit,omitempty"`
	Digest string `json:"digest,omitempty"`
}

// Output is one output of an image.
type Output struct {
	// Name is the file name (the layer's org.opencontainers.image.title).
	Name      string        `json:"name"`
	Format    string        `json:"format"`
	MediaType string        `json:"media_type"`
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
}

// emptyJSON is the OCI empty descriptor's content, the one layer of an image
// whose only output is a container image (a manifest needs one layer).
var emptyJSON = ocispec.DescriptorEmptyJSON

// encode is the JSON strata writes: compact, keys in declaration or sorted
// order, so the same value gives the same digest.
func encode(v any) ([]byte, ocispec.Descriptor, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	return b, ocispec.Descriptor{Digest: digest.FromBytes(b), Size: int64(len(b))}, nil
}

// sourceDateEpoch is the image's SOURCE_DATE_EPOCH as its output nodes saw it.
func sourceDateEpoch(outputs []*plan.Node) time.Time {
	for _, n := range outputs {
		if v, ok := n.Env["SOURCE_DATE_EPOCH"]; ok {
			if s, err := strconv.ParseInt(v, 10, 64); err == nil && s >= 0 {
				return time.Unix(s, 0).UTC()
			}
		}
	}
	return time.Unix(0, 0).UTC()
}

// sourcesOf lists the sources in the closure of the image's tree.
func sourcesOf(p *plan.Plan, img *plan.Image) []Source {
	if img.Tree == "" {
		return []Source{}
	}
	out := []Source{}
	for _, id := range p.Closure([]string{img.Tree}) {
		n, ok := p.Node(id)
		if !ok || n.Kind != plan.KindSource || n.Source == nil {
			continue
		}
		s := Source{Name: strings.TrimPrefix(n.Name, "sources."), URL: redactURL(n.Source.URL), Path: n.Source.Path, Git: redactURL(n.Source.Git), Commit: n.Source.Commit}
		switch {
		case n.Source.SHA256 != "":
			s.Digest = "sha256:" + n.Source.SHA256
		case n.Source.Digest != "":
			s.Digest = n.Source.Digest
			if !strings.Contains(s.Digest, ":") {
				s.Digest = "sha256:" + s.Digest
			}
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Source) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// redactURL drops the user information (a token in https://user:token@host/)
// from a URL: published metadata must never carry a secret.
func redactURL(s string) string {
	if s == "" {
		return ""
	}
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	u.User = nil
	return u.String()
}

// platformOf is the OCI platform of a plan platform (linux by default).
func platformOf(p plan.Platform) ocispec.Platform {
	os := p.OS
	if os == "" {
		os = "linux"
	}
	return ocispec.Platform{OS: os, Architecture: p.Arch}
}

// manifestFor builds a strata image manifest: the OCI 1.1 form (artifactType
// set), or, for registries that refuse 1.1 fields, the 1.0 form that carries
// the same metadata in its config media type and annotations.
func manifestFor(config ocispec.Descriptor, layers []ocispec.Descriptor, annotations map[string]string, v11 bool) ([]byte, ocispec.Descriptor, error) {
	m := ocispec.Manifest{
		Versioned:   specs.Versioned{SchemaVersion: 2},
		MediaType:   ocispec.MediaTypeImageManifest,
		Config:      config,
		Layers:      layers,
		Annotations: annotations,
	}
	if v11 {
		m.ArtifactType = ArtifactType
	}
	if len(m.Layers) == 0 {
		m.Layers = []ocispec.Descriptor{emptyJSON}
	}
	b, d, err := encode(m)
	if err != nil {
		return nil, d, err
	}
	d.MediaType = ocispec.MediaTypeImageManifest
	if v11 {
		d.ArtifactType = ArtifactType
	}
	return b, d, nil
}

// isStrataManifest reports whether an index entry or manifest is a strata
// image manifest, in either form.
func isStrataManifest(d ocispec.Descriptor) bool {
	return d.ArtifactType == ArtifactType || d.Annotations[AnnotationKind] == kindArtifact
}

// AnnotationKind tells, on index entries, a strata artifact manifest
// ("artifact") from an image's container image ("container"): the 1.0 form
// has no artifactType to tell them apart.
const AnnotationKind = "build.strata.kind"

const (
	kindArtifact  = "artifact"
	kindContainer = "container"
)

// parseManifest decodes a manifest and checks it is one.
func parseManifest(b []byte) (*ocispec.Manifest, error) {
	var m ocispec.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: manifest: %v", ErrInvalid, err)
	}
	if m.SchemaVersion != 2 || m.MediaType != "" && m.MediaType != ocispec.MediaTypeImageManifest {
		return nil, fmt.Errorf("%w: not an OCI image manifest (schemaVersion %d, mediaType %q)", ErrInvalid, m.SchemaVersion, m.MediaType)
	}
	if err := checkDescriptor(m.Config, "config"); err != nil {
		return nil, err
	}
	for i, l := range m.Layers {
		if err := checkDescriptor(l, fmt.Sprintf("layer %d", i)); err != nil {
			return nil, err
		}
	}
	return &m, nil
}

// checkDescriptor refuses a descriptor no content can match: a negative size
// or a digest that is not well formed. Everything read by descriptor is
// checked against its size and digest as it streams; these would otherwise
// reach that check as nonsense (a negative size once crashed it).
func checkDescriptor(d ocispec.Descriptor, what string) error {
	if d.Size < 0 {
		return fmt.Errorf("%w: %s has a negative size (%d)", ErrInvalid, what, d.Size)
	}
	if err := d.Digest.Validate(); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalid, what, err)
	}
	return nil
}

// parseIndex decodes an image index and checks it is one.
func parseIndex(b []byte) (*ocispec.Index, error) {
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("%w: index: %v", ErrInvalid, err)
	}
	if idx.SchemaVersion != 2 || idx.MediaType != "" && idx.MediaType != ocispec.MediaTypeImageIndex {
		return nil, fmt.Errorf("%w: not an OCI image index (schemaVersion %d, mediaType %q)", ErrInvalid, idx.SchemaVersion, idx.MediaType)
	}
	for i, m := range idx.Manifests {
		if err := checkDescriptor(m, fmt.Sprintf("manifest %d", i)); err != nil {
			return nil, err
		}
	}
	return &idx, nil
}
