package registry

import (
	"fmt"
	"net"
	"strings"

	"github.com/opencontainers/go-digest"
	orasregistry "oras.land/oras-go/v2/registry"
)

// Ref is a parsed reference to a repository, optionally at a tag or digest.
type Ref struct {
	// Registry is host[:port] of an OCI registry, or "" for a repository of
	// the local OCI layout in the store.
	Registry string
	// Repository is the repository path, such as fleet/x86-nuc.
	Repository string
	// Tag and Digest select a version; both empty means the default version.
	Tag    string
	Digest digest.Digest
}

// localHost stands in for the registry of a local reference while oras-go
// checks its syntax; it never reaches the network.
const localHost = "local.invalid"

// ParseRef parses REPO[:TAG|@DIGEST] (a repository of the local OCI layout)
// or HOST[:PORT]/REPO[:TAG|@DIGEST] (a registry): the first path element is a
// registry host when it contains a dot or a colon or is localhost, as docker
// reads references.
func ParseRef(s string) (Ref, error) {
	if s == "" {
		return Ref{}, fmt.Errorf("%w: empty reference", ErrBadReference)
	}
	full := s
	remote := isHost(strings.SplitN(s, "/", 2)[0]) && strings.Contains(s, "/")
	if !remote {
		full = localHost + "/" + s
	}
	r, err := orasregistry.ParseReference(full)
	if err != nil {
		return Ref{}, fmt.Errorf("%w %q: %v", ErrBadReference, s, strings.TrimPrefix(err.Error(), "invalid reference: "))
	}
	out := Ref{Repository: r.Repository}
	if remote {
		out.Registry = r.Registry
	}
	if d, err := r.Digest(); err == nil {
		out.Digest = d
	} else if r.Reference != "" {
		out.Tag = r.Reference
	}
	return out, nil
}

// isHost reports whether the first element of a reference names a registry.
func isHost(s string) bool {
	return strings.ContainsAny(s, ".:") || s == "localhost" || strings.HasPrefix(s, "[")
}

// Local reports whether r is a repository of the local OCI layout.
func (r Ref) Local() bool { return r.Registry == "" }

// Name is the repository without tag or digest: host/repo or repo.
func (r Ref) Name() string {
	if r.Registry == "" {
		return r.Repository
	}
	return r.Registry + "/" + r.Repository
}

// String is the reference as ParseRef reads it.
func (r Ref) String() string {
	s := r.Name()
	switch {
	case r.Digest != "":
		s += "@" + r.Digest.String()
	case r.Tag != "":
		s += ":" + r.Tag
	}
	return s
}

// WithTag returns r at tag.
func (r Ref) WithTag(tag string) Ref { r.Tag, r.Digest = tag, ""; return r }

// Loopback reports whether r's registry is on this machine (localhost,
// 127.0.0.0/8, ::1): reached over plain HTTP unless told otherwise.
func (r Ref) Loopback() bool {
	if r.Registry == "" {
		return false
	}
	host := r.Registry
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// validTag reports whether t is a valid OCI tag, by oras-go's rule
// ([a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}, the distribution spec's grammar).
func validTag(t string) bool {
	return orasregistry.Reference{Reference: t}.ValidateReferenceAsTag() == nil
}

// TagOf is the tag a version is published under: the version itself, with
// '+' (semver build metadata, which tags cannot hold) written as '_', as Helm
// does.
func TagOf(version string) (string, error) {
	t := strings.ReplaceAll(version, "+", "_")
	if !validTag(t) {
		return "", fmt.Errorf("%w: version %q cannot be an OCI tag (letters, digits, '.', '_', '-', at most 128)", ErrBadReference, version)
	}
	return t, nil
}

// Join puts a publish repository under a registry prefix (--registry
// HOST/PATH); a repository that already names a registry is left alone.
func Join(prefix, repository string) string {
	if prefix == "" || isHost(strings.SplitN(repository, "/", 2)[0]) && strings.Contains(repository, "/") {
		return repository
	}
	return strings.TrimRight(prefix, "/") + "/" + repository
}
