// Package regtest starts the reference OCI registry
// (github.com/distribution/distribution/v3) in-process on 127.0.0.1, for tests
// and benchmarks: a real registry, not a mock, that counts the blob uploads it
// receives.
package regtest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sync"
	"sync/atomic"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem" // storage for large content
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"   // default storage
	"github.com/sirupsen/logrus"
)

// quiet silences the registry's request logs (logrus' standard logger) once:
// they would drown a test's own output.
var quiet sync.Once

// Server is a running registry.
type Server struct {
	// Host is host:port of the registry (127.0.0.1:PORT).
	Host string
	// URL is http://Host.
	URL string

	srv     *httptest.Server
	cancel  context.CancelFunc
	puts    atomic.Int64
	putSize atomic.Int64
	manPuts atomic.Int64
}

// Options configure Start. The zero value keeps content in memory.
type Options struct {
	// Dir, when set, keeps content on disk there instead of in memory.
	Dir string
	// Wrap, when set, wraps the registry's handler (auth, fault injection).
	Wrap func(http.Handler) http.Handler
}

// Start starts a registry on 127.0.0.1 with opts. Close stops it.
func Start(opts Options) (*Server, error) {
	quiet.Do(func() {
		logrus.SetOutput(io.Discard)
		logrus.SetLevel(logrus.PanicLevel)
	})
	cfg := &configuration.Configuration{}
	cfg.Log.Level = "panic"
	cfg.Log.AccessLog.Disabled = true
	cfg.HTTP.Secret = "regtest"
	cfg.Storage = configuration.Storage{"inmemory": configuration.Parameters{}}
	if opts.Dir != "" {
		cfg.Storage = configuration.Storage{"filesystem": configuration.Parameters{"rootdirectory": opts.Dir}}
	}
	cfg.Storage["delete"] = configuration.Parameters{"enabled": true}
	cfg.Storage["maintenance"] = configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}}
	ctx, cancel := context.WithCancel(context.Background())
	app := handlers.NewApp(ctx, cfg)
	s := &Server{cancel: cancel}
	var h http.Handler = s.count(app)
	if opts.Wrap != nil {
		h = opts.Wrap(h)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		return nil, fmt.Errorf("regtest: %w", err)
	}
	s.srv = httptest.NewUnstartedServer(h)
	s.srv.Listener.Close()
	s.srv.Listener = l
	s.srv.Start()
	s.URL = s.srv.URL
	s.Host = l.Addr().String()
	return s, nil
}

// Close stops the registry.
func (s *Server) Close() {
	s.srv.Close()
	s.cancel()
}

var (
	blobUpload  = regexp.MustCompile(`^/v2/.+/blobs/uploads/`)
	manifestPut = regexp.MustCompile(`^/v2/.+/manifests/[^/]+$`)
)

// count records blob uploads (PUT or PATCH of an upload session, with their
// body bytes) and manifest PUTs.
func (s *Server) count(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case (r.Method == http.MethodPut || r.Method == http.MethodPatch) && blobUpload.MatchString(r.URL.Path):
			s.puts.Add(1)
			if r.Body != nil {
				r.Body = &countingBody{ReadCloser: r.Body, n: &s.putSize}
			}
		case r.Method == http.MethodPut && manifestPut.MatchString(r.URL.Path):
			s.manPuts.Add(1)
		}
		next.ServeHTTP(w, r)
	})
}

// BlobUploads returns the blob upload requests (PUT and PATCH) and the body
// bytes they carried since Start or the last Reset.
func (s *Server) BlobUploads() (requests, bytes int64) { return s.puts.Load(), s.putSize.Load() }

// ManifestPuts returns the manifest PUTs since Start or the last Reset.
func (s *Server) ManifestPuts() int64 { return s.manPuts.Load() }

// Reset zeroes the counters.
func (s *Server) Reset() {
	s.puts.Store(0)
	s.putSize.Store(0)
	s.manPuts.Store(0)
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}
