package registry

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Version is one version in a repository's history.
type Version struct {
	Version string `json:"version"`
	// Tags are every tag that points at the version's index, the version's own
	// tag first.
	Tags []string `json:"tags"`
	// Digest is the digest of the version's image index.
	Digest  digest.Digest `json:"digest"`
	Created string        `json:"created"`
	// Images, Platforms and DeviceTypes are what the version's variants offer.
	Images      []string `json:"images"`
	Platforms   []string `json:"platforms"`
	DeviceTypes []string `json:"device_types"`
	// Marked is the spec's default: true; Default says this is the
	// repository's default version (the newest marked one, else the newest).
	Marked  bool `json:"marked_default"`
	Default bool `json:"default"`
}

// History is a repository's versions, newest first.
type History struct {
	Repository string    `json:"repository"`
	Versions   []Version `json:"versions"`
	// Default is the default version ("" for an empty repository).
	Default string `json:"default"`
}

// Versions returns the history of the repository ref names (its tag or
// digest, if any, is ignored): every tag whose index is a strata version,
// grouped by index. Tags of other content are left out.
func (c *Client) Versions(ctx context.Context, ref string) (*History, error) {
	r, err := ParseRef(ref)
	if err != nil {
		return nil, err
	}
	t, err := c.target(r.WithTag(""))
	if err != nil {
		return nil, err
	}
	h, err := c.history(ctx, t)
	if err != nil {
		return nil, fmt.Errorf("versions of %s: %w", r.Name(), err)
	}
	return h, nil
}

func (c *Client) history(ctx context.Context, t target) (*History, error) {
	tags, err := t.tags(ctx)
	if err != nil {
		return nil, err
	}
	slices.Sort(tags)
	h := &History{Repository: t.name(), Versions: []Version{}}
	byDigest := map[digest.Digest]int{}
	for _, tag := range tags {
		d, err := t.resolve(ctx, tag)
		if errors.Is(err, ErrNotFound) {
			continue // deleted since listed
		}
		if err != nil {
			return nil, err
		}
		if i, ok := byDigest[d.Digest]; ok {
			h.Versions[i].Tags = append(h.Versions[i].Tags, tag)
			continue
		}
		if d.MediaType != ocispec.MediaTypeImageIndex {
			continue
		}
		b, err := readVerified(ctx, t, d)
		if err != nil {
			return nil, err
		}
		idx, err := parseIndex(b)
		if err != nil {
			return nil, fmt.Errorf("%s:%s: %w", t.name(), tag, err)
		}
		v, ok := versionOf(idx)
		if !ok {
			continue
		}
		v.Digest, v.Tags = d.Digest, []string{tag}
		byDigest[d.Digest] = len(h.Versions)
		h.Versions = append(h.Versions, v)
	}
	for i := range h.Versions {
		v := &h.Versions[i]
		own, _ := TagOf(v.Version)
		slices.SortStableFunc(v.Tags, func(a, b string) int {
			switch {
			case a == own:
				return -1
			case b == own:
				return 1
			}
			return 0
		})
	}
	slices.SortStableFunc(h.Versions, func(a, b Version) int { return -CompareVersions(a.Version, b.Version) })
	def := -1
	for i, v := range h.Versions {
		if v.Marked {
			def = i
			break
		}
	}
	if def < 0 && len(h.Versions) > 0 {
		def = 0
	}
	if def >= 0 {
		h.Versions[def].Default = true
		h.Default = h.Versions[def].Version
	}
	return h, nil
}

// versionOf describes the version an index holds; ok is false for an index
// strata did not write.
func versionOf(idx *ocispec.Index) (Version, bool) {
	v := Version{Version: idx.Annotations[ocispec.AnnotationVersion], Created: idx.Annotations[ocispec.AnnotationCreated],
		Marked: idx.Annotations[AnnotationDefault] == "true", Images: []string{}, Platforms: []string{}, DeviceTypes: []string{}}
	found := false
	for _, m := range idx.Manifests {
		if !isStrataManifest(m) {
			continue
		}
		found = true
		v.Images = append(v.Images, m.Annotations[AnnotationImage])
		if m.Platform != nil {
			v.Platforms = append(v.Platforms, m.Platform.OS+"/"+m.Platform.Architecture)
		}
		v.DeviceTypes = append(v.DeviceTypes, deviceTypes(m.Annotations)...)
	}
	v.Images, v.Platforms, v.DeviceTypes = sortedStrings(v.Images), sortedStrings(v.Platforms), sortedStrings(v.DeviceTypes)
	return v, found && v.Version != ""
}

// CompareVersions orders versions the way semver does where they are semver
// (1.10.0 > 1.9.0, 2.0.0-rc1 < 2.0.0, build metadata ignored) and by natural
// order otherwise: dot-separated fields compare as numbers when both are.
// A leading "v" is ignored.
func CompareVersions(a, b string) int {
	split := func(s string) (core, pre string) {
		s = strings.TrimPrefix(s, "v")
		if i := strings.IndexAny(s, "+_"); i >= 0 {
			s = s[:i]
		}
		core, pre, _ = strings.Cut(s, "-")
		return core, pre
	}
	ac, ap := split(a)
	bc, bp := split(b)
	if c := compareFields(ac, bc); c != 0 {
		return c
	}
	switch {
	case ap == bp:
		return 0
	case ap == "":
		return 1
	case bp == "":
		return -1
	}
	return compareFields(ap, bp)
}

func compareFields(a, b string) int {
	af, bf := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(af) && i < len(bf); i++ {
		an, aerr := strconv.ParseUint(af[i], 10, 64)
		bn, berr := strconv.ParseUint(bf[i], 10, 64)
		switch {
		case aerr == nil && berr == nil:
			if an != bn {
				if an < bn {
					return -1
				}
				return 1
			}
		case aerr == nil:
			return -1 // numeric fields sort before others, as in semver
		case berr == nil:
			return 1
		default:
			if c := strings.Compare(af[i], bf[i]); c != 0 {
				return c
			}
		}
	}
	return len(af) - len(bf)
}

// matchDevice scores how well an image for offered device types fits a
// device of type want: the length of the most specific offered type that is
// want or a parent of it (raspberry-pi fits raspberry-pi/3b, less well than
// raspberry-pi/3b itself); 0 for an image for any device (none listed); -1
// for no fit.
func matchDevice(offered []string, want string) int {
	if len(offered) == 0 {
		return 0
	}
	best := -1
	for _, o := range offered {
		if o == want || strings.HasPrefix(want, o+"/") {
			best = max(best, len(o))
		}
	}
	return best
}

// selectVariant picks the strata manifest of an index for a device type
// and platform (either may be empty): most specific device type first; no
// fit, or a tie, is an error that lists what the index offers.
func selectVariant(idx *ocispec.Index, name, deviceType, platform string) (ocispec.Descriptor, error) {
	var cands []ocispec.Descriptor
	var offer []string
	for _, m := range idx.Manifests {
		if !isStrataManifest(m) {
			continue
		}
		p := ""
		if m.Platform != nil {
			p = m.Platform.OS + "/" + m.Platform.Architecture
		}
		dt := deviceTypes(m.Annotations)
		desc := strings.Join(dt, ",")
		if desc == "" {
			desc = "any device"
		}
		offer = append(offer, fmt.Sprintf("%s (%s, image %s)", desc, p, m.Annotations[AnnotationImage]))
		if platform != "" && p != platform {
			continue
		}
		cands = append(cands, m)
	}
	slices.Sort(offer)
	if len(offer) == 0 {
		return ocispec.Descriptor{}, fmt.Errorf("%s: %w: no strata image in the index", name, ErrInvalid)
	}
	best, bestScore, tie := -1, -1, false
	for i, m := range cands {
		s := 0
		if deviceType != "" {
			s = matchDevice(deviceTypes(m.Annotations), deviceType)
		}
		switch {
		case s > bestScore:
			best, bestScore, tie = i, s, false
		case s == bestScore && s >= 0:
			tie = true
		}
	}
	what := "device type " + strconv.Quote(deviceType)
	if deviceType == "" {
		what = "any device type"
	}
	if platform != "" {
		what += " on " + platform
	}
	switch {
	case best < 0 || bestScore < 0:
		return ocispec.Descriptor{}, fmt.Errorf("%w for %s; on offer: %s", ErrNoMatch, what, strings.Join(offer, "; "))
	case tie:
		return ocispec.Descriptor{}, fmt.Errorf("several variants fit %s (give --device-type or --platform); on offer: %s", what, strings.Join(offer, "; "))
	}
	return cands[best], nil
}

// resolveVersion turns a reference into the digest of what it points at,
// once: a digest as given, a tag as the registry says now, no tag as the
// repository's default version.
func (c *Client) resolveVersion(ctx context.Context, t target, r Ref) (ocispec.Descriptor, error) {
	switch {
	case r.Digest != "":
		return t.resolve(ctx, r.Digest.String())
	case r.Tag != "":
		return t.resolve(ctx, r.Tag)
	}
	h, err := c.history(ctx, t)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	if h.Default == "" {
		return ocispec.Descriptor{}, fmt.Errorf("%s: %w: no versions", t.name(), ErrNotFound)
	}
	for _, v := range h.Versions {
		if v.Default {
			return t.resolve(ctx, v.Digest.String())
		}
	}
	return ocispec.Descriptor{}, fmt.Errorf("%s: %w: no default version", t.name(), ErrNotFound)
}
