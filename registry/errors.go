package registry

import "errors"

// Sentinel errors, wrapped with the reference, digest or path they concern.
var (
	// ErrNotFound: no such repository, tag, manifest or blob.
	ErrNotFound = errors.New("not found")
	// ErrDigest: content whose size or digest is not what its descriptor says.
	ErrDigest = errors.New("digest mismatch")
	// ErrInvalid: a manifest, index or config that is malformed, too large or
	// not a strata artifact.
	ErrInvalid = errors.New("invalid artifact")
	// ErrNoMatch: no variant of a version fits the device type or platform
	// asked for.
	ErrNoMatch = errors.New("no matching variant")
	// ErrRefused: an install that would put the wrong device type or an older
	// version on the device.
	ErrRefused = errors.New("install refused")
	// ErrBadReference: a reference strata cannot parse.
	ErrBadReference = errors.New("invalid reference")
)
