package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
	"oras.land/oras-go/v2/registry/remote/retry"

	"github.com/strata-build/strata/executor/store"
)

// Defaults of Options.
const (
	// DefaultJobs is how many blobs move at once.
	DefaultJobs = 4
	// DefaultRetries is how many times a request that failed for a reason worth
	// retrying (5xx, 408, 429, a reset connection) is sent again.
	DefaultRetries = 5
	// DefaultMaxWait caps one wait between retries, Retry-After included.
	DefaultMaxWait = 10 * time.Second
)

// Options configure a Client. The zero value of every field is a usable
// default.
type Options struct {
	// Registry is the HOST[/PATH] that publish repositories without a registry
	// of their own go under (strata push --registry). Empty keeps them in the
	// local OCI layout in the store.
	Registry string
	// PlainHTTP reaches registries over plain HTTP. Loopback registries
	// (localhost, 127.0.0.0/8, ::1) always are; every other is reached over
	// TLS by default.
	PlainHTTP bool
	// DockerConfig is the docker config file whose credentials and credential
	// helpers authenticate to registries; default $DOCKER_CONFIG/config.json,
	// else ~/.docker/config.json. A missing file means anonymous access.
	DockerConfig string
	// Transport carries the HTTP requests; default a clone of
	// http.DefaultTransport. Retries and authentication are layered over it.
	Transport http.RoundTripper
	// Jobs is how many blobs are transferred at once; default DefaultJobs.
	Jobs int
	// Retries is how many times a failed request is retried; default
	// DefaultRetries. Negative means none.
	Retries int
	// MinWait and MaxWait bound the wait between retries (back-off, or the
	// registry's Retry-After capped at MaxWait); defaults 200 ms and
	// DefaultMaxWait.
	MinWait, MaxWait time.Duration
	// Source and Revision annotate published manifests
	// (org.opencontainers.image.source and .revision); see GitInfo.
	Source, Revision string
	// Events receives progress, one call at a time; nil discards it.
	Events func(Event)
	// UserAgent is sent to registries; default "strata".
	UserAgent string

	// hook, when set, is called at named steps of a push, pull or install
	// (tests kill the process or alter files there).
	hook func(step string)
}

// Client publishes to and reads from repositories of the local OCI layout and
// of registries. It is safe for concurrent use.
type Client struct {
	c    contents
	opts Options
	http *auth.Client

	emitMu sync.Mutex

	credOnce sync.Once
	creds    credentials.Store
	credErr  error

	mu       sync.Mutex
	compat   map[string]bool   // registries that refuse OCI 1.1 fields
	seen     map[string]string // blob digest → a repository (host/repo) known to hold it
	repoLock map[string]*sync.Mutex

	publishTo string
	published []Published
}

// New returns a client over the store st (where outputs come from and the
// local OCI layout lives).
func New(st *store.Store, opts Options) (*Client, error) {
	if st == nil {
		return nil, errors.New("registry: no store")
	}
	if opts.Jobs <= 0 {
		opts.Jobs = DefaultJobs
	}
	if opts.Retries == 0 {
		opts.Retries = DefaultRetries
	}
	if opts.MinWait <= 0 {
		opts.MinWait = 200 * time.Millisecond
	}
	if opts.MaxWait <= 0 {
		opts.MaxWait = DefaultMaxWait
	}
	if opts.MinWait > opts.MaxWait {
		opts.MinWait = opts.MaxWait
	}
	if opts.UserAgent == "" {
		opts.UserAgent = "strata"
	}
	base := opts.Transport
	if base == nil {
		base = http.DefaultTransport.(*http.Transport).Clone()
	}
	rt := retry.NewTransport(base)
	rt.Policy = func() retry.Policy {
		return &retry.GenericPolicy{
			Retryable: retry.DefaultPredicate,
			Backoff:   retry.ExponentialBackoff(opts.MinWait, 2, 0.1),
			MinWait:   opts.MinWait,
			MaxWait:   opts.MaxWait,
			MaxRetry:  max(opts.Retries, 0),
		}
	}
	c := &Client{
		c:        storeContents{st},
		opts:     opts,
		compat:   map[string]bool{},
		seen:     map[string]string{},
		repoLock: map[string]*sync.Mutex{},
	}
	c.http = &auth.Client{
		Client:     &http.Client{Transport: rt},
		Cache:      auth.NewCache(),
		Credential: c.credential,
	}
	c.http.SetUserAgent(opts.UserAgent)
	c.loadCompat()
	return c, nil
}

// credential looks up the credential for a registry host in the docker
// config and its helpers, loaded on first use.
func (c *Client) credential(ctx context.Context, hostport string) (auth.Credential, error) {
	c.credOnce.Do(func() {
		if c.opts.DockerConfig != "" {
			c.creds, c.credErr = credentials.NewStore(c.opts.DockerConfig, credentials.StoreOptions{})
		} else {
			c.creds, c.credErr = credentials.NewStoreFromDocker(credentials.StoreOptions{})
		}
		if c.credErr != nil {
			c.credErr = fmt.Errorf("docker config: %w", c.credErr)
		}
	})
	if c.credErr != nil {
		return auth.EmptyCredential, c.credErr
	}
	return credentials.Credential(c.creds)(ctx, hostport)
}

// emit sends an event.
func (c *Client) emit(ev Event) {
	if c.opts.Events == nil {
		return
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	c.emitMu.Lock()
	defer c.emitMu.Unlock()
	c.opts.Events(ev)
}

func (c *Client) step(name string) {
	if c.opts.hook != nil {
		c.opts.hook(name)
	}
}

// target opens the repository r names.
func (c *Client) target(r Ref) (target, error) {
	if r.Local() {
		dir, err := c.layoutDir(r.Repository)
		if err != nil {
			return nil, err
		}
		l, err := openLayout(dir, r.Repository)
		if err != nil {
			return nil, err
		}
		l.hook = c.opts.hook
		return l, nil
	}
	repo, err := remote.NewRepository(r.Name())
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v", ErrBadReference, r.Name(), err)
	}
	repo.PlainHTTP = c.opts.PlainHTTP || r.Loopback()
	repo.Client = c.http
	repo.MaxMetadataBytes = maxManifestBytes
	repo.SkipReferrersGC = true
	return &remoteTarget{repo: repo, ref: r}, nil
}

// layoutDir is the directory of the local OCI layout of repository repo:
// <store>/oci/<repo>, one layout per repository so its tags are its versions
// and any OCI tool reads it (skopeo oci:DIR:TAG).
func (c *Client) layoutDir(repo string) (string, error) {
	root, err := c.c.stateDir("oci")
	if err != nil {
		return "", err
	}
	// The name's parts become directories under root: none may climb out of
	// it ("../compile" parses as host "..").
	for _, part := range strings.Split(repo, "/") {
		if part == "" || part == "." || part == ".." {
			return "", fmt.Errorf("%w: %q cannot name a local copy (empty, . or .. part)", ErrInvalid, repo)
		}
	}
	return filepath.Join(root, filepath.FromSlash(repo)), nil
}

// LayoutDir returns the directory of the local OCI layout that holds the
// repository r names (a local repository, or the local copy of a registry's).
func (c *Client) LayoutDir(r Ref) (string, error) { return c.layoutDir(r.Name()) }

// compatFile remembers, across runs, the registries that refused the OCI 1.1
// manifest form.
const compatFile = "registry-compat.json"

func (c *Client) loadCompat() {
	dir, err := c.c.stateDir("registry")
	if err != nil {
		return
	}
	b, err := os.ReadFile(filepath.Join(dir, compatFile))
	if err != nil {
		return
	}
	var m map[string]bool
	if json.Unmarshal(b, &m) == nil {
		c.compat = m
	}
}

// refuses11 reports whether the registry is known to refuse OCI 1.1 fields.
func (c *Client) refuses11(host string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.compat[host]
}

// rememberRefuses11 records (in memory and in the store) that host refuses
// OCI 1.1 fields, so the fallback is found once per registry.
func (c *Client) rememberRefuses11(host string) {
	c.mu.Lock()
	c.compat[host] = true
	b, _ := json.Marshal(c.compat)
	c.mu.Unlock()
	if dir, err := c.c.stateDir("registry"); err == nil {
		_ = writeFileAtomic(dir, compatFile, b)
	}
}

// lockRepo serialises this process's changes to one repository's tags (two
// images publishing variants into one version's index); a local layout is
// also locked against other processes (layout.lockPublish). A remote
// registry has no lock: two machines publishing one version race, and the
// last tag wins.
func (c *Client) lockRepo(name string) func() {
	c.mu.Lock()
	m := c.repoLock[name]
	if m == nil {
		m = &sync.Mutex{}
		c.repoLock[name] = m
	}
	c.mu.Unlock()
	m.Lock()
	return m.Unlock
}
