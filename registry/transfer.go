package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
)

// blob is content to push: its descriptor and how to read it again (a
// rewindable source, so a failed upload is resent whole).
type blob struct {
	desc ocispec.Descriptor
	open func(ctx context.Context) (io.ReadCloser, error)
}

// blobAttempts is how many times one blob upload is started over after a
// failure the HTTP retries could not absorb (a reset connection mid-body, an
// expired token: oras-go cannot resend a streamed body, oras #456).
const blobAttempts = 4

// pushBlobs puts every blob into t that it lacks, Jobs at a time: HEAD
// before PUT, a cross-repository mount where the registry offers one and a
// repository of the same registry is known to hold the blob, else an upload.
func (c *Client) pushBlobs(ctx context.Context, t target, blobs []blob) error {
	seen := map[string]bool{}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(c.opts.Jobs)
	for _, b := range blobs {
		if seen[b.desc.Digest.String()] {
			continue
		}
		seen[b.desc.Digest.String()] = true
		g.Go(func() error { return c.pushBlob(ctx, t, b) })
	}
	return g.Wait()
}

func (c *Client) pushBlob(ctx context.Context, t target, b blob) error {
	ev := Event{Repository: t.name(), Digest: b.desc.Digest, MediaType: b.desc.MediaType, Title: b.desc.Annotations[ocispec.AnnotationTitle], Size: b.desc.Size}
	ok, err := t.exists(ctx, b.desc)
	if err != nil {
		return err
	}
	if ok {
		ev.Kind = EventBlobExists
		c.emit(ev)
		c.remember(t, b.desc)
		return nil
	}
	if m, isMounter := t.(mounter); isMounter {
		if from := c.knownIn(t, b.desc); from != "" {
			if err := m.mount(ctx, b.desc, from); err == nil {
				ev.Kind = EventBlobMounted
				ev.Message = "from " + from
				c.emit(ev)
				c.remember(t, b.desc)
				return nil
			}
		}
	}
	for attempt := 1; ; attempt++ {
		err := c.upload(ctx, t, b, ev)
		if err == nil {
			c.remember(t, b.desc)
			return nil
		}
		if attempt >= blobAttempts || !retryable(ctx, err) {
			return fmt.Errorf("blob %s to %s: %w", b.desc.Digest, t.name(), err)
		}
		ev.Kind, ev.Message = EventRetry, err.Error()
		c.emit(ev)
	}
}

// upload sends the blob once, from a freshly opened source.
func (c *Client) upload(ctx context.Context, t target, b blob, ev Event) error {
	rc, err := b.open(ctx)
	if err != nil {
		return &sourceError{err}
	}
	defer rc.Close()
	src := &progressReader{r: rc, c: c, ev: ev}
	ev.Kind = EventBlobStart
	c.emit(ev)
	err = t.push(ctx, b.desc, src)
	if src.err != nil && !errors.Is(src.err, io.EOF) {
		// The source itself failed (a corrupt store object): never retried.
		return &sourceError{src.err}
	}
	if err != nil {
		return err
	}
	ev.Kind, ev.Bytes = EventBlobDone, b.desc.Size
	c.emit(ev)
	return nil
}

// sourceError is a failure to read what is being pushed.
type sourceError struct{ err error }

func (e *sourceError) Error() string { return e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

// retryable reports whether a failed upload is worth starting over: the
// connection broke, or the registry answered 401 (a token that expired
// mid-push), 408, 429 or 5xx after the HTTP retries.
func retryable(ctx context.Context, err error) bool {
	var se *sourceError
	if ctx.Err() != nil || errors.As(err, &se) || errors.Is(err, ErrDigest) {
		return false
	}
	var st *StatusError
	if errors.As(err, &st) {
		return st.StatusCode == http.StatusUnauthorized || st.StatusCode == http.StatusRequestTimeout ||
			st.StatusCode == http.StatusTooManyRequests || st.StatusCode >= 500
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNREFUSED)
}

// progressReader reports bytes read as events, at most every 100 ms, and
// keeps the source's error.
type progressReader struct {
	r    io.Reader
	c    *Client
	ev   Event
	n    int64
	last time.Time
	err  error
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	if err != nil {
		p.err = err
	}
	if p.c.opts.Events != nil && n > 0 {
		if now := time.Now(); now.Sub(p.last) >= 100*time.Millisecond {
			p.last = now
			ev := p.ev
			ev.Kind, ev.Bytes, ev.Time = EventBlobProgress, p.n, now
			p.c.emit(ev)
		}
	}
	return n, err
}

// remember notes that t holds desc, for cross-repository mounts.
func (c *Client) remember(t target, desc ocispec.Descriptor) {
	if rt, ok := t.(*remoteTarget); ok {
		c.mu.Lock()
		c.seen[desc.Digest.String()] = rt.ref.Name()
		c.mu.Unlock()
	}
}

// knownIn returns another repository of t's registry known to hold desc, or "".
func (c *Client) knownIn(t target, desc ocispec.Descriptor) string {
	rt, ok := t.(*remoteTarget)
	if !ok {
		return ""
	}
	c.mu.Lock()
	name := c.seen[desc.Digest.String()]
	c.mu.Unlock()
	other, err := ParseRef(name)
	if name == "" || err != nil || other.Registry != rt.ref.Registry || other.Repository == rt.ref.Repository {
		return ""
	}
	return other.Repository
}

// fetchBlobs copies blobs from src into dst (normally the local layout),
// verifying every byte on the way: dst keeps only content that matches its
// descriptor. Blobs dst already has are not fetched again.
func (c *Client) fetchBlobs(ctx context.Context, src, dst target, descs []ocispec.Descriptor) error {
	var mu sync.Mutex
	seen := map[string]bool{}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(c.opts.Jobs)
	for _, d := range descs {
		mu.Lock()
		dup := seen[d.Digest.String()]
		seen[d.Digest.String()] = true
		mu.Unlock()
		if dup {
			continue
		}
		g.Go(func() error { return c.fetchBlob(ctx, src, dst, d) })
	}
	return g.Wait()
}

func (c *Client) fetchBlob(ctx context.Context, src, dst target, d ocispec.Descriptor) error {
	ev := Event{Repository: src.name(), Digest: d.Digest, MediaType: d.MediaType, Title: d.Annotations[ocispec.AnnotationTitle], Size: d.Size}
	if ok, err := dst.exists(ctx, d); err != nil {
		return err
	} else if ok {
		ev.Kind = EventBlobExists
		c.emit(ev)
		return nil
	}
	for attempt := 1; ; attempt++ {
		err := c.download(ctx, src, dst, d, ev)
		if err == nil {
			c.remember(src, d)
			return nil
		}
		if attempt >= blobAttempts || !retryable(ctx, err) {
			return fmt.Errorf("blob %s from %s: %w", d.Digest, src.name(), err)
		}
		ev.Kind, ev.Message = EventRetry, err.Error()
		c.emit(ev)
	}
}

func (c *Client) download(ctx context.Context, src, dst target, d ocispec.Descriptor, ev Event) error {
	rc, err := src.fetch(ctx, d)
	if err != nil {
		return err
	}
	defer rc.Close()
	ev.Kind = EventBlobStart
	c.emit(ev)
	// dst verifies size and digest before the blob becomes visible.
	if err := dst.push(ctx, d, &progressReader{r: rc, c: c, ev: ev}); err != nil {
		return err
	}
	ev.Kind, ev.Bytes = EventBlobDone, d.Size
	c.emit(ev)
	return nil
}
