package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

// remoteTarget is a repository on a registry, through oras-go.
type remoteTarget struct {
	repo *remote.Repository
	ref  Ref
}

var (
	_ target  = (*remoteTarget)(nil)
	_ mounter = (*remoteTarget)(nil)
)

func (t *remoteTarget) name() string { return t.ref.Name() }

func (t *remoteTarget) exists(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	ok, err := t.repo.Exists(ctx, desc)
	return ok, t.wrap(err)
}

func (t *remoteTarget) fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	rc, err := t.repo.Fetch(ctx, desc)
	return rc, t.wrap(err)
}

func (t *remoteTarget) push(ctx context.Context, desc ocispec.Descriptor, r io.Reader) error {
	err := t.repo.Push(ctx, desc, r)
	if errors.Is(err, errdef.ErrAlreadyExists) {
		return nil
	}
	return t.wrap(err)
}

func (t *remoteTarget) tag(ctx context.Context, desc ocispec.Descriptor, b []byte, tag string) error {
	return t.wrap(t.repo.PushReference(ctx, desc, bytes.NewReader(b), tag))
}

func (t *remoteTarget) resolve(ctx context.Context, tag string) (ocispec.Descriptor, error) {
	d, err := t.repo.Resolve(ctx, tag)
	return d, t.wrap(err)
}

// maxTags bounds the tags strata lists in one repository: a registry can
// answer with pages that never end, each within oras-go's limit on a
// response, which held strata growing past a gigabyte. A version is one tag,
// and a repository of a device fleet's images has hundreds, not this many.
const maxTags = 100_000

func (t *remoteTarget) tags(ctx context.Context) ([]string, error) {
	var out []string
	err := t.repo.Tags(ctx, "", func(tags []string) error {
		if len(out)+len(tags) > maxTags {
			return fmt.Errorf("%w: %s lists more than %d tags; name a version (REF:VERSION) or a digest (REF@sha256:...)", ErrInvalid, t.name(), maxTags)
		}
		out = append(out, tags...)
		return nil
	})
	if err = t.wrap(err); errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	return out, err
}

func (t *remoteTarget) mount(ctx context.Context, desc ocispec.Descriptor, from string) error {
	return t.wrap(t.repo.Mount(ctx, desc, from, nil))
}

// wrap turns oras-go's errors into this package's: ErrNotFound for what is
// not there, and messages without query strings (upload URLs and redirects to
// storage can carry signatures, which are secrets).
func (t *remoteTarget) wrap(err error) error {
	if err == nil {
		return nil
	}
	var er *errcode.ErrorResponse
	if errors.As(err, &er) {
		msg := http.StatusText(er.StatusCode)
		if len(er.Errors) > 0 {
			msg = er.Errors.Error()
		}
		path := ""
		if er.URL != nil {
			path = er.URL.Path
		}
		out := &StatusError{Registry: t.ref.Registry, Method: er.Method, Path: path, StatusCode: er.StatusCode, Message: msg}
		if er.StatusCode == http.StatusNotFound {
			return fmt.Errorf("%w: %w", out, ErrNotFound)
		}
		return out
	}
	if errors.Is(err, errdef.ErrNotFound) {
		return fmt.Errorf("%s: %w", t.name(), ErrNotFound)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		u, _ := url.Parse(ue.URL)
		return fmt.Errorf("%s %s: %w", ue.Op, cleanURL(u), ue.Err)
	}
	return fmt.Errorf("%s: %w", t.name(), err)
}

// cleanURL is u without query, fragment or user information.
func cleanURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	c := *u
	c.RawQuery, c.Fragment, c.User, c.ForceQuery = "", "", nil, false
	return c.String()
}

// StatusError is an HTTP error a registry answered.
type StatusError struct {
	// Registry is the registry's host; Method and Path the request (without
	// its query string).
	Registry, Method, Path string
	StatusCode             int
	// Message is what the registry said.
	Message string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("registry %s: %s %s: %d %s", e.Registry, e.Method, e.Path, e.StatusCode, e.Message)
}
