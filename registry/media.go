package registry

import (
	"maps"
	"slices"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/strata-build/strata/compiler/plan"
)

// Media types strata writes besides the output formats' (compiler/plan.OutputFormats).
const (
	// ArtifactType is the artifactType of a strata image manifest.
	ArtifactType = "application/vnd.strata.image.v1"
	// MediaTypeConfig is the media type of a strata image's config blob (Config).
	MediaTypeConfig = "application/vnd.strata.image.config.v1+json"
	// CacheArtifactType is the artifactType of a remote build cache entry.
	CacheArtifactType = "application/vnd.strata.cache.v1"
	// MediaTypeAction is the media type of a cache entry's action record.
	MediaTypeAction = "application/vnd.strata.action.v1+json"
)

// Annotations strata sets besides the org.opencontainers.image.* ones.
const (
	// AnnotationImage names the strata image a manifest was built from.
	AnnotationImage = "build.strata.image"
	// AnnotationDeviceTypes lists an image's device types, comma-separated.
	AnnotationDeviceTypes = "build.strata.device-types"
	// AnnotationDefault is "true" on the index (and manifests) of a version
	// marked default: true in the spec.
	AnnotationDefault = "build.strata.default"
	// AnnotationFormat is a layer's output format (squashfs, ext4, ...).
	AnnotationFormat = "build.strata.format"
	// AnnotationPlanKey is the strong key of the image's tree in the plan.
	AnnotationPlanKey = "build.strata.plan-key"
	// AnnotationCacheKey is the node key a cache entry holds the result of.
	AnnotationCacheKey = "build.strata.cache.key"
)

// mediaTypeOf returns the media type of an output format, "" if unknown.
func mediaTypeOf(format string) string {
	f, _ := plan.LookupOutput(format)
	return f.MediaType
}

// isManifest reports whether mt is a manifest or index media type: content
// registries serve from the manifests endpoint.
func isManifest(mt string) bool {
	switch mt {
	case ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex,
		"application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.distribution.manifest.list.v2+json":
		return true
	}
	return false
}

// deviceTypes returns the device types an annotation lists.
func deviceTypes(a map[string]string) []string {
	v := a[AnnotationDeviceTypes]
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

// withAnnotations returns a copy of a with kv set; empty values are left out.
func withAnnotations(a map[string]string, kv ...string) map[string]string {
	out := maps.Clone(a)
	if out == nil {
		out = map[string]string{}
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			out[kv[i]] = kv[i+1]
		}
	}
	return out
}

func sortedStrings(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}
