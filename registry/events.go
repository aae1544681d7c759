package registry

import (
	"time"

	"github.com/opencontainers/go-digest"
)

// EventKind says what an Event reports.
type EventKind string

// Event kinds.
const (
	// EventBlobStart: a blob's transfer begins (Size bytes).
	EventBlobStart EventKind = "blob-start"
	// EventBlobProgress: Bytes of the blob's Size have moved.
	EventBlobProgress EventKind = "blob-progress"
	// EventBlobDone: the blob is there, its bytes verified.
	EventBlobDone EventKind = "blob-done"
	// EventBlobExists: the target already had the blob; nothing moved.
	EventBlobExists EventKind = "blob-exists"
	// EventBlobMounted: the registry took the blob from another repository.
	EventBlobMounted EventKind = "blob-mounted"
	// EventRetry: a transfer failed and is tried again (Message says why).
	EventRetry EventKind = "retry"
	// EventManifest: a manifest or index was stored.
	EventManifest EventKind = "manifest"
	// EventTag: Tag now points at Digest.
	EventTag EventKind = "tag"
	// EventFallback: the registry refused the OCI 1.1 manifest form; the
	// 1.0-compatible form is used from now on.
	EventFallback EventKind = "fallback"
	// EventIdentical: the image is published already with exactly this
	// content; nothing was pushed (Message says so).
	EventIdentical EventKind = "identical"
	// EventCacheWarning: the remote cache failed to give or take a result;
	// the build goes on from the local store (Message says what happened).
	EventCacheWarning EventKind = "cache-warning"
)

// Event is progress of a push or pull. The registry package reports only
// through events and never logs.
type Event struct {
	Kind EventKind `json:"kind"`
	// Repository is the repository concerned (host/repo or a local repo).
	Repository string        `json:"repository"`
	Digest     digest.Digest `json:"digest,omitempty"`
	MediaType  string        `json:"media_type,omitempty"`
	// Title is the file name of a layer, when it has one.
	Title string `json:"title,omitempty"`
	// Size is the blob's size; Bytes how many of them have moved.
	Size  int64     `json:"size,omitempty"`
	Bytes int64     `json:"bytes,omitempty"`
	Tag   string    `json:"tag,omitempty"`
	Time  time.Time `json:"time"`
	// Message explains a retry or fallback.
	Message string `json:"message,omitempty"`
}
