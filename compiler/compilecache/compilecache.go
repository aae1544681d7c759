package compilecache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"

	"github.com/opencontainers/go-digest"
	"github.com/strata-build/strata/compiler/plan"
)

// FormatVersion is the version of the entry format; it is part of every key.
const FormatVersion = 5 // 2: the plan is stored indented again; 3: host_root; 4: plan_sha256; 5: host_root.count

// schemaFile is the workspace file the loader replaces with the embedded schema,
// so its bytes on disk never affect a compile (the embedded schema is keyed
// instead).
const schemaFile = "cue.mod/pkg/strata.build/strata/schema.cue"

// Inputs are what a compile depends on besides the workspace's files.
type Inputs struct {
	// StrataVersion is the version of the strata that compiles.
	StrataVersion string
	// Binary identifies the executable beyond its version (for example its size
	// and modification time), so that a rebuilt development binary with an
	// unchanged version does not reuse plans. Empty means not keyed.
	Binary string
	// Host is the host fingerprint keyed into "host" build roots.
	Host plan.Host
	// Schema is the embedded schema source.
	Schema []byte
	// Env holds environment settings that change how CUE evaluates (for example
	// CUE_EXPERIMENT=...), in any order.
	Env []string
	// Records are the records of resource jobs the workspace is loaded with
	// (lang.WithJobRecords), by job; nil for the plan before they ran.
	Records map[string][]byte
}

// Key returns the cache key of compiling the workspace in dir: the hex SHA-256 of
// the inputs and of every file the loader may read, each with its path relative
// to dir: cue.mod/module.cue and everything else under cue.mod/ (except the
// vendored schema, which the loader replaces with the embedded one), every
// .cue, .json, .yaml and .yml file at the top of dir, and every .cue file below
// it (packages of the workspace's module that its spec may import), except
// under out/ and directories whose name starts with a dot, and every file a
// keyed .cue file may embed (@embed, see embeds).
func Key(dir string, in Inputs) (string, error) {
	h := sha256.New()
	hb, err := json.Marshal(in.Host)
	if err != nil {
		return "", err
	}
	env := append([]string(nil), in.Env...)
	sort.Strings(env)
	fmt.Fprintf(h, "strata compile cache %d\nversion %q\nbinary %q\nhost %s\nenv %q\nschema %d\n",
		FormatVersion, in.StrataVersion, in.Binary, hb, env, len(in.Schema))
	h.Write(in.Schema)
	for _, job := range slices.Sorted(maps.Keys(in.Records)) {
		fmt.Fprintf(h, "records %q %d\n", job, len(in.Records[job]))
		h.Write(in.Records[job])
	}
	files, err := inputFiles(dir)
	if err != nil {
		return "", err
	}
	if !containsModule(files) {
		return "", fmt.Errorf("compile cache: %s: no cue.mod/module.cue", dir)
	}
	buf := make([]byte, 256<<10)
	var embedded []string
	for _, rel := range files {
		scan := &externScan{w: h}
		if err := hashFile(scan, buf, dir, rel); err != nil {
			return "", fmt.Errorf("compile cache: %w", err)
		}
		if !scan.found || path.Ext(rel) != ".cue" {
			continue
		}
		// Read again, whole, only when it embeds: a 4 MB spec read into a
		// fresh buffer cost a 3,000-image cache hit a third of its time.
		src, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(rel)))
		if err != nil {
			return "", fmt.Errorf("compile cache: %w", err)
		}
		embedded = append(embedded, embeds(dir, rel, src)...)
	}
	slices.Sort(embedded)
	for _, rel := range slices.Compact(embedded) {
		if pattern, ok := strings.CutPrefix(rel, "glob:"); ok {
			fmt.Fprintf(h, "embed glob %q\n", pattern)
			continue
		}
		fmt.Fprintf(h, "embed %q\n", rel)
		// A missing file fails the compile, which is then not stored; an
		// attribute in a comment names files that need not exist.
		if err := hashFile(h, buf, dir, rel); errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(h, "absent\n")
		} else if err != nil {
			return "", fmt.Errorf("compile cache: %w", err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// hashFile writes the workspace file rel, with its name and size, to h
// through buf: a hit of a large workspace read each file into a fresh buffer
// (its page faults cost more than the hashing).
func hashFile(h io.Writer, buf []byte, dir, rel string) error {
	f, err := os.Open(filepath.Join(dir, filepath.FromSlash(rel)))
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	fmt.Fprintf(h, "file %q %d\n", rel, info.Size())
	n, err := io.CopyBuffer(h, struct{ io.Reader }{f}, buf)
	if err != nil {
		return err
	}
	if n != info.Size() {
		return fmt.Errorf("%s changed while it was read", rel)
	}
	return nil
}

func containsModule(files []string) bool {
	for _, f := range files {
		if f == "cue.mod/module.cue" {
			return true
		}
	}
	return false
}

// inputFiles lists the workspace's input files, relative and slash-separated, sorted.
func inputFiles(dir string) ([]string, error) {
	var out []string
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("compile cache: %w", err)
	}
	for _, e := range entries {
		if isDirEntry(dir, e) && e.Name() != "cue.mod" && e.Name() != "out" && !strings.HasPrefix(e.Name(), ".") {
			pkgs, err := packageFiles(dir, e.Name())
			if err != nil {
				return nil, err
			}
			out = append(out, pkgs...)
			continue
		}
		switch filepath.Ext(e.Name()) {
		case ".cue", ".json", ".yaml", ".yml":
		default:
			continue
		}
		if regular(dir, e) {
			out = append(out, e.Name())
		}
	}
	err = walkFiles(dir, "cue.mod", func(string) bool { return false }, func(rel string, d fs.DirEntry) {
		if rel != schemaFile && regular(filepath.Join(dir, filepath.Dir(rel)), d) {
			out = append(out, rel)
		}
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("compile cache: %w", err)
	}
	sort.Strings(out)
	return out, nil
}

// packageFiles lists the .cue files under the subdirectory sub of dir
// (relative to dir, slash-separated): an edit to a package the spec imports
// must not be served an old plan. Dot-directories are skipped.
func packageFiles(dir, sub string) ([]string, error) {
	var out []string
	hidden := func(name string) bool { return strings.HasPrefix(name, ".") }
	err := walkFiles(dir, sub, hidden, func(rel string, d fs.DirEntry) {
		if filepath.Ext(rel) == ".cue" && regular(filepath.Join(dir, filepath.Dir(rel)), d) {
			out = append(out, rel)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("compile cache: %w", err)
	}
	return out, nil
}

// walkFiles calls fn for every non-directory entry under dir/sub, named
// relative to dir with slashes, in lexical order. Links to directories are
// followed, as the CUE loader follows them: a package directory or a
// vendored module can be a link, and an edit behind it went unseen (the
// cached plan was served). A directory reached twice (a link loop) is walked
// once; skip names directories not to enter.
func walkFiles(dir, sub string, skip func(name string) bool, fn func(rel string, d fs.DirEntry)) error {
	seen := map[[2]uint64]bool{}
	var walk func(rel string) error
	walk = func(rel string) error {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			id := [2]uint64{uint64(st.Dev), st.Ino}
			if seen[id] {
				return nil
			}
			seen[id] = true
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			return err
		}
		for _, e := range entries {
			erel := path.Join(rel, e.Name())
			if isDirEntry(p, e) {
				if !skip(e.Name()) {
					if err := walk(erel); err != nil {
						return err
					}
				}
				continue
			}
			fn(erel, e)
		}
		return nil
	}
	return walk(filepath.ToSlash(sub))
}

// isDirEntry reports whether the entry of dir is a directory or a link to one.
func isDirEntry(dir string, e fs.DirEntry) bool {
	if e.IsDir() {
		return true
	}
	if e.Type()&fs.ModeSymlink == 0 {
		return false
	}
	fi, err := os.Stat(filepath.Join(dir, e.Name()))
	return err == nil && fi.IsDir()
}

// regular reports whether the entry is a regular file or a symlink to one.
func regular(dir string, e fs.DirEntry) bool {
	if e.Type().IsRegular() {
		return true
	}
	if e.Type()&fs.ModeSymlink == 0 {
		return false
	}
	info, err := os.Stat(filepath.Join(dir, e.Name()))
	return err == nil && info.Mode().IsRegular()
}

// PathSource is a local path source of a plan and its content digest.
type PathSource struct {
	Path   string `json:"path"`
	Digest string `json:"digest"`
}

// PathSources lists the plan's local path sources, in plan order.
func PathSources(p *plan.Plan) []PathSource {
	var out []PathSource
	for _, n := range p.Nodes {
		if n.Kind == plan.KindSource && n.Source != nil && n.Source.Path != "" {
			out = append(out, PathSource{Path: n.Source.Path, Digest: n.Source.Digest})
		}
	}
	return out
}

// Entry is a cached compile.
type Entry struct {
	// Plan is the encoded plan, exactly as plan.Plan.Encode writes it.
	Plan []byte
	// Nodes is the number of nodes in the plan.
	Nodes int
	// Paths are the plan's path sources with the digests the plan was compiled with.
	Paths []PathSource
	// Pending are the plan's templates that wait on resource jobs, so that a
	// hit can say so without decoding the plan.
	Pending []plan.Pending
	// HostRoot names the images that build in the host's /usr, so that a hit
	// can warn about them without decoding the plan.
	HostRoot HostRoot
	// PlanDigest is the SHA-256 of Plan; Put computes it when empty.
	PlanDigest digest.Digest
}

// HostRoot counts the images whose stages build in the host's /usr (a build
// root of plan.HostRoot) and names the first few, "images.NAME" each, sorted,
// and the spec position of the first: what the warning about them shows
// (lang.NonHermeticMsg). Not all of them: every image of a workspace may
// build there, and a header naming 3,000 images cost a cache hit a tenth of
// its time.
type HostRoot struct {
	Images []string `json:"images,omitempty"`
	Count  int      `json:"count,omitempty"`
	Origin string   `json:"origin,omitempty"`
}

// hostRootNamed is how many images a HostRoot names.
const hostRootNamed = 4

// HostRootOf returns the images of p that build in the host's /usr.
func HostRootOf(p *plan.Plan) HostRoot {
	set := map[string]bool{}
	for _, n := range p.Nodes {
		if n.Kind != plan.KindStage || n.Inputs.BuildRoot != plan.HostRoot {
			continue
		}
		names := []string{n.Name}
		for _, a := range n.Aliases {
			names = append(names, a.Name)
		}
		for _, name := range names {
			if i := strings.LastIndex(name, ".stages["); i > 0 && strings.HasPrefix(name, "images.") {
				set[name[:i]] = true
			}
		}
	}
	if len(set) == 0 {
		return HostRoot{}
	}
	images := slices.Sorted(maps.Keys(set))
	h := HostRoot{Images: images[:min(len(images), hostRootNamed)], Count: len(images), Origin: "-"}
	if img := p.Images[strings.TrimPrefix(h.Images[0], "images.")]; img != nil {
		h.Origin = img.Origin
	}
	return h
}

// header is the first line of an entry file; the encoded plan follows it.
type header struct {
	Format int          `json:"format"`
	Key    string       `json:"key"`
	Nodes  int          `json:"nodes"`
	Paths  []PathSource `json:"paths"`
	// Pending is omitted when empty, so entries without it read the same.
	Pending  []plan.Pending `json:"pending,omitempty"`
	HostRoot HostRoot       `json:"host_root,omitzero"`
	Size     int            `json:"plan_size"`
	CRC32C   uint32         `json:"plan_crc32c"`
	// SHA256 names the plan's bytes, so a build can be matched with the
	// plan it built without reading them.
	SHA256 digest.Digest `json:"plan_sha256"`
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Cache is a directory of compiled plans.
type Cache struct {
	dir string
}

// New returns the compile cache kept in dir (created, private, on the first Put
// if missing). strata keeps it in the store's state directory "compile".
func New(dir string) *Cache {
	return &Cache{dir: dir}
}

// Dir returns the directory that holds the entries.
func (c *Cache) Dir() string { return c.dir }

func (c *Cache) path(key string) string { return filepath.Join(c.dir, key+".json") }

// Get returns the entry stored under key, read into memory and checked against
// its checksum, or false when there is none, when it is damaged (it is then
// removed) or when a path source of the workspace in dir no longer hashes to the
// digest it was compiled with.
func (c *Cache) Get(ctx context.Context, key, dir string) (*Entry, bool) {
	h, ok := c.Open(ctx, key, dir)
	if !ok {
		return nil, false
	}
	defer h.Close()
	b, err := h.Bytes()
	if err != nil {
		return nil, false
	}
	return &Entry{Plan: b, Nodes: h.Nodes, Paths: h.Paths, Pending: h.Pending, HostRoot: h.HostRoot, PlanDigest: h.PlanDigest}, true
}

// Open is Get without reading the plan: the returned Hit writes it to a writer
// or reads it. Open
// checks the entry's header, size and shape, not its checksum (that would read
// the plan); Hit.Bytes checks the checksum.
func (c *Cache) Open(ctx context.Context, key, dir string) (*Hit, bool) {
	p := c.path(key)
	f, err := os.Open(p)
	if err != nil {
		return nil, false
	}
	h, err := open(f, key)
	if err != nil {
		f.Close()
		os.Remove(p)
		return nil, false
	}
	h.name = p
	for _, ps := range h.Paths {
		d, err := plan.PathDigest(ctx, dir, ps.Path)
		if err != nil || d != ps.Digest {
			h.Close()
			return nil, false
		}
	}
	return h, true
}

// Hit is an entry found in the cache. Close it when done.
type Hit struct {
	// Nodes is the number of nodes in the plan.
	Nodes int
	// Paths are the plan's path sources with the digests the plan was compiled with.
	Paths []PathSource
	// Pending are the plan's templates that wait on resource jobs.
	Pending []plan.Pending
	// HostRoot names the plan's images that build in the host's /usr.
	HostRoot HostRoot
	// PlanDigest is the SHA-256 of the encoded plan.
	PlanDigest digest.Digest

	f         *os.File
	name      string
	off, size int64
	crc       uint32
	checked   bool   // the plan matched its checksum (Check, Bytes)
	buf       []byte // Check's, reused by WriteTo
	data      []byte // the plan, once Bytes read and checked it
}

var errDamaged = errors.New("damaged compile cache entry")

// maxHeader bounds the header line (it grows with the number of path sources).
const maxHeader = 16 << 20

func open(f *os.File, key string) (*Hit, error) {
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	var line []byte
	buf := make([]byte, 4096)
	for off := int64(0); ; {
		n, err := f.ReadAt(buf, off)
		if i := bytes.IndexByte(buf[:n], '\n'); i >= 0 {
			line = append(line, buf[:i]...)
			break
		}
		line = append(line, buf[:n]...)
		off += int64(n)
		if err != nil || off > maxHeader {
			return nil, errDamaged
		}
	}
	var h header
	if err := json.Unmarshal(line, &h); err != nil {
		return nil, errDamaged
	}
	off := int64(len(line) + 1)
	if h.Format != FormatVersion || h.Key != key || h.Size < 2 || off+int64(h.Size) != info.Size() {
		return nil, errDamaged
	}
	// The plan is one JSON object and a newline: a cheap check of both ends.
	first, last := make([]byte, 1), make([]byte, 2)
	if _, err := f.ReadAt(first, off); err != nil || first[0] != '{' {
		return nil, errDamaged
	}
	if _, err := f.ReadAt(last, info.Size()-2); err != nil || string(last) != "}\n" {
		return nil, errDamaged
	}
	if h.SHA256.Validate() != nil {
		return nil, errDamaged
	}
	return &Hit{Nodes: h.Nodes, Paths: h.Paths, Pending: h.Pending, HostRoot: h.HostRoot, PlanDigest: h.SHA256, f: f, off: off, size: int64(h.Size), crc: h.CRC32C}, nil
}

// Size is the size of the encoded plan in bytes.
func (h *Hit) Size() int64 { return h.size }

// Bytes reads the encoded plan and checks it against its checksum. A damaged
// entry is removed.
func (h *Hit) Bytes() ([]byte, error) {
	if h.data != nil {
		return h.data, nil // checked already
	}
	b := make([]byte, h.size)
	if _, err := h.f.ReadAt(b, h.off); err != nil {
		return nil, fmt.Errorf("compile cache: %w", err)
	}
	if err := h.verify(crc32.Checksum(b, crcTable)); err != nil {
		return nil, err
	}
	h.data = b
	return b, nil
}

// verify compares the plan's checksum, sum, with the entry's, and removes a
// damaged entry.
func (h *Hit) verify(sum uint32) error {
	if sum != h.crc {
		os.Remove(h.name)
		return fmt.Errorf("compile cache: %s: %w", h.name, errDamaged)
	}
	h.checked = true
	return nil
}

// Check reads the encoded plan through one small buffer and checks it
// against its checksum, without holding it in memory (at N = 3000 a fresh
// 40 MB buffer cost more in page faults than the rest of a hit). A damaged
// entry is removed.
func (h *Hit) Check() error {
	if h.checked {
		return nil
	}
	c := crc32.New(crcTable)
	h.buf = make([]byte, 256<<10)
	if _, err := io.CopyBuffer(c, io.NewSectionReader(h.f, h.off, h.size), h.buf); err != nil {
		return fmt.Errorf("compile cache: %w", err)
	}
	return h.verify(c.Sum32())
}

// WriteTo writes the plan to w, checked against its checksum first: the
// entry holds exactly what plan.Encode wrote, copied from the file, by the
// kernel to a regular file, else through Check's buffer (io.Copy's own is
// 32 KiB: 2,500 system calls for a 40 MB plan).
func (h *Hit) WriteTo(w io.Writer) (int64, error) {
	if err := h.Check(); err != nil {
		return 0, err
	}
	r := io.NewSectionReader(h.f, h.off, h.size)
	if f, ok := w.(*os.File); ok {
		if info, err := f.Stat(); err == nil && info.Mode().IsRegular() {
			return io.Copy(f, r)
		}
	}
	if h.buf == nil {
		h.buf = make([]byte, 256<<10)
	}
	return io.CopyBuffer(w, struct{ io.Reader }{r}, h.buf)
}

// Close closes the entry.
func (h *Hit) Close() error { return h.f.Close() }

// Put stores an entry under key, atomically: readers see the old entry or the
// whole new one, never part of it.
func (c *Cache) Put(key string, e *Entry) error {
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return fmt.Errorf("compile cache: %w", err)
	}
	d := e.PlanDigest
	if d == "" {
		d = digest.FromBytes(e.Plan)
	}
	h := header{
		Format: FormatVersion, Key: key, Nodes: e.Nodes, Paths: e.Paths, Pending: e.Pending, HostRoot: e.HostRoot,
		Size: len(e.Plan), CRC32C: crc32.Checksum(e.Plan, crcTable), SHA256: d,
	}
	if h.Paths == nil {
		h.Paths = []PathSource{}
	}
	hb, err := json.Marshal(h)
	if err != nil {
		return fmt.Errorf("compile cache: %w", err)
	}
	f, err := os.CreateTemp(c.dir, "."+key+".tmp*")
	if err != nil {
		return fmt.Errorf("compile cache: %w", err)
	}
	defer os.Remove(f.Name())
	// No fsync: an entry lost or damaged by a crash is detected (size and CRC) and
	// is only a miss.
	if _, err := io.Copy(f, io.MultiReader(bytes.NewReader(hb), strings.NewReader("\n"), bytes.NewReader(e.Plan))); err != nil {
		f.Close()
		return fmt.Errorf("compile cache: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("compile cache: %w", err)
	}
	if err := os.Rename(f.Name(), c.path(key)); err != nil {
		return fmt.Errorf("compile cache: %w", err)
	}
	return nil
}
