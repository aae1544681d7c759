package registry

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"path"
	"slices"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/strata-build/strata/executor"
	"github.com/strata-build/strata/executor/store"
	"github.com/strata-build/strata/executor/tree"
)

// Cache is the registry side of the remote build cache (DESIGN §5): an
// executor.ActionCache over one repository, where each node's result is a
// manifest tagged with the node's key. The result's tree travels as one
// reproducible tar.zst layer with the tree manifest as the config (never one
// blob per file: a root filesystem of 100,000 files is a handful of
// requests), followed by the node's other blobs (artifacts, log) and its
// action record. Results fetched are materialised into the local store
// before GetAction returns them, so the executor uses them like local ones.
type Cache struct {
	c    *Client
	repo Ref
	t    target
}

var _ executor.ActionCache = (*Cache)(nil)

// maxDecoderMemory bounds the memory of GetAction's zstd decoder: a hostile cache must not
// make strata inflate a zstd bomb (RELIABILITY row 23). The tree manifest
// already bounds every file's size; this bounds the decoder's window.
const maxDecoderMemory = 256 << 20

// Cache returns the remote build cache in repository repo (a registry
// repository, or one of the local OCI layout).
func (c *Client) Cache(repo string) (*Cache, error) {
	r, err := ParseRef(repo)
	if err != nil {
		return nil, err
	}
	r = r.WithTag("")
	t, err := c.target(r)
	if err != nil {
		return nil, err
	}
	return &Cache{c: c, repo: r, t: t}, nil
}

// cacheTag is the tag of key's entry: the key itself (64 hex digits, a valid tag).
func cacheTag(key string) (string, error) {
	if !validTag(key) {
		return "", fmt.Errorf("%w: cache key %q is not a tag", ErrBadReference, key)
	}
	return key, nil
}

// PutAction uploads the result a (whose blobs are in the local store) under
// its key. Blobs the repository has are not sent again (HEAD before PUT), and
// blobs another repository of the registry is known to hold are mounted.
func (rc *Cache) PutAction(ctx context.Context, a *store.Action) error {
	tag, err := cacheTag(a.Key)
	if err != nil {
		return err
	}
	var blobs []blob
	var layers []ocispec.Descriptor
	fromStore := func(d ocispec.Descriptor) blob {
		return blob{desc: d, open: func(ctx context.Context) (io.ReadCloser, error) { return rc.c.c.fetch(ctx, d) }}
	}
	config := emptyJSON
	if a.Tree != "" {
		tb, err := rc.c.c.store().ReadBlob(ctx, a.Tree)
		if err != nil {
			return fmt.Errorf("cache %s: tree: %w", a.Key, err)
		}
		config = ocispec.Descriptor{MediaType: executor.MediaTypeTree, Digest: a.Tree, Size: int64(len(tb))}
		blobs = append(blobs, bytesBlob(config, tb))
		arch, err := rc.c.treeArchive(ctx, config, 0)
		if err != nil {
			return fmt.Errorf("cache %s: %w", a.Key, err)
		}
		arch.Annotations = map[string]string{ocispec.AnnotationTitle: "tree.tar.zst"}
		layers = append(layers, arch)
		blobs = append(blobs, fromStore(arch))
	} else {
		blobs = append(blobs, bytesBlob(emptyJSON, []byte("{}")))
	}
	for _, name := range slices.Sorted(maps.Keys(a.Outputs)) {
		d := a.Outputs[name]
		if d == a.Tree {
			continue // a tree output is the tree itself
		}
		desc, err := rc.describe(d, "application/octet-stream")
		if err != nil {
			return fmt.Errorf("cache %s: output %s: %w", a.Key, name, err)
		}
		desc.Annotations = map[string]string{ocispec.AnnotationTitle: name}
		layers = append(layers, desc)
		blobs = append(blobs, fromStore(desc))
	}
	if a.Log != "" {
		desc, err := rc.describe(a.Log, executor.MediaTypeLog)
		if err != nil {
			return fmt.Errorf("cache %s: log: %w", a.Key, err)
		}
		desc.Annotations = map[string]string{ocispec.AnnotationTitle: "log"}
		layers = append(layers, desc)
		blobs = append(blobs, fromStore(desc))
	}
	rec := *a
	ab, ad, err := encode(rec)
	if err != nil {
		return err
	}
	ad.MediaType = MediaTypeAction
	layers = append(layers, ad)
	blobs = append(blobs, bytesBlob(ad, ab))
	if err := rc.c.pushBlobs(ctx, rc.t, blobs); err != nil {
		return fmt.Errorf("cache %s: %w", a.Key, err)
	}
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: config, Layers: layers,
		Annotations: map[string]string{AnnotationCacheKey: a.Key}}
	m.SchemaVersion = 2
	v11 := !rc.c.refuses11(rc.repo.Registry)
	if v11 {
		m.ArtifactType = CacheArtifactType
	}
	mb, md, err := encode(m)
	if err != nil {
		return err
	}
	md.MediaType = ocispec.MediaTypeImageManifest
	if err := rc.t.tag(ctx, md, mb, tag); err != nil {
		if v11 && refused11(err) {
			m.ArtifactType = ""
			if mb, md, err = encode(m); err == nil {
				md.MediaType = ocispec.MediaTypeImageManifest
				if err = rc.t.tag(ctx, md, mb, tag); err == nil {
					rc.c.rememberRefuses11(rc.repo.Registry)
				}
			}
		}
		if err != nil {
			return fmt.Errorf("cache %s: %w", a.Key, err)
		}
	}
	return nil
}

// describe is the descriptor of a blob of the local store.
func (rc *Cache) describe(d digest.Digest, mediaType string) (ocispec.Descriptor, error) {
	p, err := rc.c.c.path(ocispec.Descriptor{Digest: d})
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	r, err := rc.c.c.store().OpenBlobSize(d, -1)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("%s: %w", p, err)
	}
	defer r.Close()
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: r.Size()}, nil
}

// GetAction fetches key's result, verifies every byte, and puts its blobs and
// tree into the local store; a key the cache lacks is an error wrapping
// store.ErrNotFound (an action cache miss).
func (rc *Cache) GetAction(ctx context.Context, key string) (*store.Action, error) {
	tag, err := cacheTag(key)
	if err != nil {
		return nil, err
	}
	d, err := rc.t.resolve(ctx, tag)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("cache %s: %w", key, store.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	mb, err := readVerified(ctx, rc.t, d)
	if err != nil {
		return nil, err
	}
	m, err := parseManifest(mb)
	if err != nil {
		return nil, err
	}
	if m.Annotations[AnnotationCacheKey] != key || len(m.Layers) == 0 || m.Layers[len(m.Layers)-1].MediaType != MediaTypeAction {
		return nil, fmt.Errorf("cache %s: %w: not a cache entry for this key", key, ErrInvalid)
	}
	ab, err := readVerified(ctx, rc.t, m.Layers[len(m.Layers)-1])
	if err != nil {
		return nil, err
	}
	var a store.Action
	if err := json.Unmarshal(ab, &a); err != nil || a.Key != key {
		return nil, fmt.Errorf("cache %s: %w: action record: %v", key, ErrInvalid, err)
	}
	if a.Tree != "" && (m.Config.Digest != a.Tree || m.Config.MediaType != executor.MediaTypeTree) {
		return nil, fmt.Errorf("cache %s: %w: config is not the action's tree", key, ErrInvalid)
	}
	for _, l := range m.Layers[:len(m.Layers)-1] {
		switch {
		case l.Annotations[ocispec.AnnotationTitle] == "tree.tar.zst" && a.Tree != "":
			if err := rc.materialise(ctx, m.Config, l); err != nil {
				return nil, fmt.Errorf("cache %s: %w", key, err)
			}
		default:
			if rc.c.c.has(ctx, l) {
				continue
			}
			rd, err := rc.t.fetch(ctx, l)
			if err != nil {
				return nil, err
			}
			err = rc.c.c.put(ctx, l, newVerifier(rd, l))
			rd.Close()
			if err != nil {
				return nil, fmt.Errorf("cache %s: %w", key, err)
			}
			rc.c.remember(rc.t, l)
		}
	}
	return &a, nil
}

// materialise puts a tree (its manifest cfg) and the files of its archive
// layer into the local store. Every file's bytes are checked against the
// tree manifest (which is checked against its digest); nothing is written
// by path, so a hostile archive can neither escape nor plant files.
func (rc *Cache) materialise(ctx context.Context, cfg, layer ocispec.Descriptor) error {
	tb, err := readVerified(ctx, rc.t, cfg)
	if err != nil {
		return err
	}
	tr, err := tree.Decode(tb)
	if err != nil {
		return fmt.Errorf("%w: tree: %v", ErrInvalid, err)
	}
	want := map[string]tree.Entry{}
	missing := map[digest.Digest]bool{}
	for _, e := range tr.Entries {
		if e.Type == tree.File && !rc.c.c.has(ctx, ocispec.Descriptor{Digest: e.Digest, Size: e.Size}) {
			want[e.Path] = e
			missing[e.Digest] = true
		}
	}
	if len(missing) > 0 {
		rd, err := rc.t.fetch(ctx, layer)
		if err != nil {
			return err
		}
		defer rd.Close()
		v := newVerifier(rd, layer)
		zr, err := zstd.NewReader(v, zstd.WithDecoderMaxMemory(maxDecoderMemory), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return err
		}
		defer zr.Close()
		ar := tar.NewReader(zr)
		for len(missing) > 0 {
			h, err := ar.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return fmt.Errorf("tree archive: %w", err)
			}
			p := strings.TrimSuffix(path.Clean(strings.TrimPrefix(h.Name, "./")), "/")
			e, ok := want[p]
			if !ok || h.Typeflag != tar.TypeReg || !missing[e.Digest] {
				continue
			}
			d := ocispec.Descriptor{Digest: e.Digest, Size: e.Size}
			if err := rc.c.c.put(ctx, d, newVerifier(io.LimitReader(ar, e.Size+1), d)); err != nil {
				return fmt.Errorf("tree archive: %s: %w", p, err)
			}
			delete(missing, e.Digest)
		}
		if len(missing) > 0 {
			return fmt.Errorf("%w: the tree archive lacks %d files of its tree", ErrInvalid, len(missing))
		}
	}
	got, err := rc.c.c.putTree(ctx, tr)
	if err != nil {
		return err
	}
	if got != cfg.Digest {
		return fmt.Errorf("%w: tree stored as %s, want %s", ErrDigest, got, cfg.Digest)
	}
	return nil
}

// Tiered is an action cache in layers: the local store first, then remote
// caches in order. A result found remotely is materialised into the local
// store and recorded there; a result put is recorded locally and, when a
// remote is writable (To), uploaded. It forwards the local store's per-key
// locks, so concurrent builds on one store still build a key once.
type Tiered struct {
	Local *store.Store
	// From are the caches looked up on a local miss (--cache-from).
	From []*Cache
	// To, when set, receives every result put (--cache-to).
	To *Cache
	// Events, when set, is told of a failed upload, which does not fail the
	// build (the result is safe in the local store).
	Events func(Event)

	mu   sync.Mutex
	down map[*Cache]bool // remotes that failed to answer: not asked again
}

var _ executor.ActionCache = (*Tiered)(nil)

// failed records a remote's failure to answer. The first says so and why; the
// remote is then left out for the rest of the build: a registry that is down
// was asked, and warned about, for every node (twice, around the key lock).
// An entry that does not verify is the entry's fault, not the remote's.
func (t *Tiered) failed(rc *Cache, err error) {
	if errors.Is(err, ErrInvalid) || errors.Is(err, ErrDigest) {
		t.warn(rc, "cache lookup failed, building instead: "+err.Error())
	} else if t.markDown(rc) {
		t.warn(rc, "cache unreachable, building without it: "+err.Error())
	}
}

// markDown leaves rc out for the rest of the build; first reports whether it
// was in until now.
func (t *Tiered) markDown(rc *Cache) (first bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.down == nil {
		t.down = map[*Cache]bool{}
	}
	first = !t.down[rc]
	t.down[rc] = true
	return first
}

func (t *Tiered) isDown(rc *Cache) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.down[rc]
}

func (t *Tiered) warn(rc *Cache, msg string) {
	if t.Events != nil {
		t.Events(Event{Kind: EventCacheWarning, Repository: rc.repo.Name(), Message: msg})
	}
}

// GetAction looks key up locally, then in each remote cache.
func (t *Tiered) GetAction(ctx context.Context, key string) (*store.Action, error) {
	a, err := t.Local.GetAction(ctx, key)
	if err == nil || !errors.Is(err, store.ErrNotFound) {
		return a, err
	}
	for _, rc := range t.From {
		if t.isDown(rc) {
			continue
		}
		a, rerr := rc.GetAction(ctx, key)
		if errors.Is(rerr, store.ErrNotFound) {
			continue
		}
		if rerr != nil {
			// A remote cache that fails, or hands out an entry that does not
			// verify, costs a rebuild, never a build: the node is a miss.
			if ctx.Err() == nil {
				t.failed(rc, rerr)
			}
			continue
		}
		if err := t.Local.PutAction(ctx, a); err != nil {
			return nil, err
		}
		return t.Local.GetAction(ctx, key)
	}
	return nil, err
}

// Share uploads a result found in the cache to To, unless To has it: a CI
// job with a warm local store, or one served from another remote, fills To
// as one that built everything would. A failed upload is a warning.
func (t *Tiered) Share(ctx context.Context, a *store.Action) {
	if t.To == nil || t.isDown(t.To) || t.To.has(ctx, a.Key) {
		return
	}
	t.upload(ctx, a)
}

// upload puts a into To. A failed upload is said once and ends the uploads
// of this build: the results stay in the local store.
func (t *Tiered) upload(ctx context.Context, a *store.Action) {
	err := t.To.PutAction(ctx, a)
	if err != nil && ctx.Err() == nil && t.markDown(t.To) {
		t.warn(t.To, "cache upload failed, not uploading the rest of this build: "+err.Error())
	}
}

// has reports whether the cache holds an entry for key (a lookup that fails
// says no: the upload that follows will say why).
func (rc *Cache) has(ctx context.Context, key string) bool {
	tag, err := cacheTag(key)
	if err != nil {
		return false
	}
	_, err = rc.t.resolve(ctx, tag)
	return err == nil
}

// PutAction records a locally and uploads it to To.
func (t *Tiered) PutAction(ctx context.Context, a *store.Action) error {
	if err := t.Local.PutAction(ctx, a); err != nil {
		return err
	}
	if t.To != nil && !t.isDown(t.To) {
		t.upload(ctx, a)
	}
	return nil
}

// LockKeyWaiting forwards to the local store's key locks.
func (t *Tiered) LockKeyWaiting(ctx context.Context, key string, waiting func(holder int)) (func(), error) {
	return t.Local.LockKeyWaiting(ctx, key, waiting)
}
