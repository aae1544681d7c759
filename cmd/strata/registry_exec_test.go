package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/schema"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/strata-build/strata/executor"
	"github.com/strata-build/strata/executor/store"
	"github.com/strata-build/strata/executor/tree"
	"github.com/strata-build/strata/internal/regtest"
	"github.com/strata-build/strata/registry"
)

// copyExample copies examples/NAME into a temp dir.
func copyExample(t *testing.T, name string) string {
	t.Helper()
	dst := t.TempDir()
	if out, err := exec.Command("cp", "-r", "../../examples/"+name+"/.", dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	return dst
}

// pushDoc is strata push --output json.
type pushDoc struct {
	OK        bool                 `json:"ok"`
	Error     string               `json:"error"`
	Published []registry.Published `json:"published"`
	Build     executor.BuildResult `json:"build"`
}

func pushJSON(t *testing.T, ws, cache string, args ...string) pushDoc {
	t.Helper()
	r := runCLI(t, ws, cache, append([]string{"--output", "json", "push"}, args...)...)
	var doc pushDoc
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || !doc.OK || r.code != 0 {
		t.Fatalf("push %v: exit %d, %v\nstdout %s\nstderr %s", args, r.code, err, r.stdout, r.stderr)
	}
	return doc
}

func startRegistryT(t *testing.T) *regtest.Server {
	t.Helper()
	srv, err := regtest.Start(regtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

// TestRegistryRoundTripFleetExec builds examples/fleet, pushes all its images
// to the reference registry, lists their versions, pulls each device type
// into a fresh store and compares every file's digest with the build's; a
// second push uploads no blob byte.
func TestRegistryRoundTripFleetExec(t *testing.T) {
	strataBin(t)
	ws := copyExample(t, "fleet")
	cache := t.TempDir()
	srv := startRegistryT(t)
	doc := pushJSON(t, ws, cache, "--registry", srv.Host+"/acme")
	if len(doc.Published) != 3 {
		t.Fatalf("published %d images: %+v", len(doc.Published), doc.Published)
	}
	built := map[string]executor.Artifact{} // by file name
	for _, a := range doc.Build.Artifacts {
		built[a.Name] = a
	}
	for _, pub := range doc.Published {
		r := runCLI(t, "", cache, "--output", "json", "versions", pub.Repository)
		var h registry.History
		if err := json.Unmarshal([]byte(r.stdout), &h); err != nil || r.code != 0 {
			t.Fatalf("versions %s: %v %s", pub.Repository, err, r.stderr)
		}
		if h.Default != "2.1.0" || len(h.Versions) != 1 || !cmp.Equal(h.Versions[0].Tags, []string{"2.1.0", "stable"}) {
			t.Fatalf("versions %s: %+v", pub.Repository, h)
		}
		for _, dt := range h.Versions[0].DeviceTypes {
			fresh, out := t.TempDir(), t.TempDir()
			r := runCLI(t, "", fresh, "--output", "json", "pull", pub.Repository, "--device-type", dt, "-o", out)
			var p registry.Pulled
			if err := json.Unmarshal([]byte(r.stdout), &p); err != nil || r.code != 0 {
				t.Fatalf("pull %s %s: %v %s", pub.Repository, dt, err, r.stderr)
			}
			if p.Version != "2.1.0" || !cmp.Equal(p.DeviceTypes, []string{dt}) || len(p.Files) == 0 || p.Container == nil {
				t.Fatalf("pulled %+v", p)
			}
			for _, f := range p.Files {
				b, ok := built[f.Name]
				if !ok || b.Digest != f.Digest || fileSHA(t, f.Path) != b.Digest.String() {
					t.Errorf("%s: pulled %s (file %s), built %s", f.Name, f.Digest, fileSHA(t, f.Path), b.Digest)
				}
			}
			if b := built[p.Container.Name]; b.Digest != p.Container.Digest {
				t.Errorf("container %s: pulled %s, built %s", p.Container.Name, p.Container.Digest, b.Digest)
			}
		}
	}
	// Build-compare: unchanged images pushed again publish nothing at all and
	// say they are identical.
	srv.Reset()
	again := pushJSON(t, ws, cache, "--registry", srv.Host+"/acme")
	if n, b := srv.BlobUploads(); n != 0 || b != 0 || srv.ManifestPuts() != 0 {
		t.Errorf("the second push uploaded %d blobs, %d bytes, %d manifests", n, b, srv.ManifestPuts())
	}
	for _, pb := range again.Published {
		if !pb.Identical {
			t.Errorf("%s %s: not reported identical", pb.Image, pb.Version)
		}
	}
	r := runCLI(t, ws, cache, "push", "--registry", srv.Host+"/acme")
	if r.code != 0 || !strings.Contains(r.stdout, "identical: nothing published") {
		t.Errorf("text push of unchanged images: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// treeOf returns the tree of an image from a build result.
func treeOf(t *testing.T, cache string, res executor.BuildResult, node string) *tree.Tree {
	t.Helper()
	for _, n := range res.Nodes {
		if n.ID == node || n.Name == node {
			st, err := store.Open(cache)
			must(t, err)
			defer st.Close()
			tr, err := st.GetTree(context.Background(), n.Tree)
			must(t, err)
			return tr
		}
	}
	t.Fatalf("no node %s in the build", node)
	return nil
}

// entry is what a root filesystem holds at a path, as the tree records it.
type entry struct {
	Type     tree.Kind
	Mode     uint32
	UID, GID int
	Digest   digest.Digest
	Target   string
}

func treeEntries(tr *tree.Tree) map[string]entry {
	out := map[string]entry{}
	for _, e := range tr.Entries {
		out[e.Path] = entry{e.Type, e.Mode, e.UID, e.GID, e.Digest, e.Target}
	}
	return out
}

// dirEntries reads a directory as tree entries.
func dirEntries(t *testing.T, root string) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		e := entry{Mode: uint32(fi.Mode().Perm()), UID: int(st.Uid), GID: int(st.Gid)}
		if fi.Mode()&fs.ModeSetuid != 0 {
			e.Mode |= 0o4000
		}
		if fi.Mode()&fs.ModeSetgid != 0 {
			e.Mode |= 0o2000
		}
		if fi.Mode()&fs.ModeSticky != 0 {
			e.Mode |= 0o1000
		}
		switch {
		case fi.Mode().IsDir():
			e.Type = tree.Dir
		case fi.Mode()&fs.ModeSymlink != 0:
			e.Type, e.Mode = tree.Symlink, 0o777
			e.Target, _ = os.Readlink(p)
		case fi.Mode().IsRegular():
			e.Type = tree.File
			e.Digest = digest.Digest(fileSHA(t, p))
		default:
			e.Type = "other"
		}
		out[filepath.ToSlash(rel)] = e
		return nil
	})
	must(t, err)
	return out
}

// TestRegistryInteropExec: clients strata did not write read what it pushes.
// skopeo inspects and copies the oci output's container image, umoci unpacks
// it into a root filesystem equal to the built tree, crane reads the index
// and manifests and exports the image's filesystem.
func TestRegistryInteropExec(t *testing.T) {
	strataBin(t)
	for _, tool := range []string{"skopeo", "umoci"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (make setup)", tool)
		}
	}
	crane, err := filepath.Abs("../../bin/crane")
	must(t, err)
	if _, err := os.Stat(crane); err != nil {
		if crane, err = exec.LookPath("crane"); err != nil {
			t.Skip("crane not installed (make setup)")
		}
	}
	ws := copyExample(t, "fleet")
	cache := t.TempDir()
	srv := startRegistryT(t)
	doc := pushJSON(t, ws, cache, "fleet-x86-nuc", "--registry", srv.Host)
	ref := srv.Host + "/fleet/x86-nuc:2.1.0"
	want := treeEntries(treeOf(t, cache, doc.Build, "images.fleet-x86-nuc.stages[1]"))
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(name, args...).Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("%s %v: %v\n%s", name, args, err, stderr)
		}
		return string(out)
	}

	// skopeo: inspect and copy the container image out of the index.
	var inspect struct {
		Digest       string
		Architecture string
		Os           string
		Layers       []string
	}
	must(t, json.Unmarshal([]byte(run("skopeo", "inspect", "--tls-verify=false", "docker://"+ref)), &inspect))
	if inspect.Digest != doc.Published[0].Index.String() || inspect.Os != "linux" || inspect.Architecture != "amd64" || len(inspect.Layers) != 1 {
		t.Fatalf("skopeo inspect: %+v, pushed index %s", inspect, doc.Published[0].Index)
	}
	layoutDir := filepath.Join(t.TempDir(), "image")
	run("skopeo", "copy", "--src-tls-verify=false", "docker://"+ref, "oci:"+layoutDir+":2.1.0")

	// umoci: unpack it into a root filesystem and compare it with the tree.
	bundle := filepath.Join(t.TempDir(), "bundle")
	run("umoci", "unpack", "--image", layoutDir+":2.1.0", bundle)
	got := dirEntries(t, filepath.Join(bundle, "rootfs"))
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("umoci rootfs vs built tree (-tree +rootfs):\n%s", d)
	}

	// crane: the index, the manifests, and an export of the filesystem.
	var idx ocispec.Index
	must(t, json.Unmarshal([]byte(run(crane, "manifest", "--insecure", ref)), &idx))
	if idx.MediaType != ocispec.MediaTypeImageIndex || len(idx.Manifests) != 2 || idx.Annotations[ocispec.AnnotationVersion] != "2.1.0" {
		t.Fatalf("crane manifest: %+v", idx)
	}
	for _, m := range idx.Manifests {
		var man ocispec.Manifest
		must(t, json.Unmarshal([]byte(run(crane, "manifest", "--insecure", srv.Host+"/fleet/x86-nuc@"+m.Digest.String())), &man))
		if len(man.Layers) == 0 {
			t.Errorf("crane manifest %s: no layers", m.Digest)
		}
		if m.ArtifactType == registry.ArtifactType && man.Config.MediaType != registry.MediaTypeConfig {
			t.Errorf("strata manifest config %s", man.Config.MediaType)
		}
	}
	export := filepath.Join(t.TempDir(), "fs.tar")
	run(crane, "export", "--insecure", "--platform", "linux/amd64", ref, export)
	f, err := os.Open(export)
	must(t, err)
	defer f.Close()
	names := map[string]bool{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		must(t, err)
		names[strings.TrimSuffix(strings.TrimPrefix(h.Name, "./"), "/")] = true
	}
	var missing []string
	for p := range want {
		if !names[p] {
			missing = append(missing, p)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 || len(names) != len(want) {
		t.Errorf("crane export: %d entries, tree %d; missing %v", len(names), len(want), missing)
	}
	_ = bytes.MinRead
}

// validateLayout checks every manifest, index and config in an OCI layout
// strata wrote against the image-spec's JSON schemas (the strata config, which
// has no OCI schema, decodes strictly into registry.Config), and returns how
// many documents it checked.
func validateLayout(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	check := func(v schema.Validator, b []byte, what string) {
		t.Helper()
		if err := v.Validate(bytes.NewReader(b)); err != nil {
			t.Errorf("%s: %s does not validate as %s: %v", dir, what, v, err)
		}
		n++
	}
	b, err := os.ReadFile(filepath.Join(dir, ocispec.ImageLayoutFile))
	must(t, err)
	check(schema.ValidatorMediaTypeLayoutHeader, b, "oci-layout")
	b, err = os.ReadFile(filepath.Join(dir, ocispec.ImageIndexFile))
	must(t, err)
	check(schema.ValidatorMediaTypeImageIndex, b, "index.json")
	blobs := filepath.Join(dir, "blobs", "sha256")
	ents, err := os.ReadDir(blobs)
	must(t, err)
	configs := map[string]string{}
	for _, e := range ents {
		fi, _ := e.Info()
		if fi.Size() > 4<<20 {
			continue
		}
		b, err := os.ReadFile(filepath.Join(blobs, e.Name()))
		must(t, err)
		var probe struct {
			MediaType string              `json:"mediaType"`
			Config    *ocispec.Descriptor `json:"config"`
		}
		if json.Unmarshal(b, &probe) != nil {
			continue
		}
		switch probe.MediaType {
		case ocispec.MediaTypeImageManifest:
			check(schema.ValidatorMediaTypeManifest, b, "manifest "+e.Name())
			configs[probe.Config.Digest.Encoded()] = probe.Config.MediaType
		case ocispec.MediaTypeImageIndex:
			check(schema.ValidatorMediaTypeImageIndex, b, "index "+e.Name())
		}
	}
	for hex, mt := range configs {
		b, err := os.ReadFile(filepath.Join(blobs, hex))
		must(t, err)
		switch mt {
		case ocispec.MediaTypeImageConfig:
			check(schema.ValidatorMediaTypeImageConfig, b, "image config "+hex)
		case registry.MediaTypeConfig:
			dec := json.NewDecoder(bytes.NewReader(b))
			dec.DisallowUnknownFields()
			var c registry.Config
			if err := dec.Decode(&c); err != nil || c.Name == "" || c.Created == "" {
				t.Errorf("strata config %s: %v", hex, err)
			}
			n++
		case ocispec.MediaTypeEmptyJSON:
		default:
			t.Errorf("config %s of unknown media type %s", hex, mt)
		}
	}
	return n
}

// TestRegistrySchemasExec pushes every example into the local OCI layout
// and validates everything strata wrote there against the image-spec's
// schemas.
func TestRegistrySchemasExec(t *testing.T) {
	strataBin(t)
	ents, err := os.ReadDir("../../examples")
	must(t, err)
	for _, e := range ents {
		t.Run(e.Name(), func(t *testing.T) {
			if e.Name() == "cross" {
				needCrossDeb(t)
				needArm64(t)
			}
			ws := copyExample(t, e.Name())
			cache := t.TempDir()
			doc := pushJSON(t, ws, cache)
			if len(doc.Published) == 0 {
				t.Fatal("nothing published")
			}
			for _, p := range doc.Published {
				if p.Local == "" {
					t.Fatalf("%s not in the local layout", p.Repository)
				}
				if n := validateLayout(t, p.Local); n < 5 {
					t.Errorf("%s: only %d documents checked", p.Local, n)
				}
			}
		})
	}
}

// TestRegistryCacheSecondMachineExec is the remote build cache as the
// executor will use it (see registry.Tiered): every result of a build on
// store A is uploaded; store B, empty, gets each node through a tiered cache
// (local, then the registry) and a build on B then runs nothing.
func TestRegistryCacheSecondMachineExec(t *testing.T) {
	strataBin(t)
	ws := copyExample(t, "minimal")
	cacheA, cacheB := t.TempDir(), t.TempDir()
	srv := startRegistryT(t)
	repo := srv.Host + "/cache/minimal"
	a := buildJSON(t, ws, cacheA, "--cache-to", repo)
	if !a.ok || a.result.Built == 0 {
		t.Fatalf("build on A: built %d: %s\n%s", a.result.Built, a.errText, a.stderr)
	}
	b := buildJSON(t, ws, cacheB, "--cache-from", repo)
	if !b.ok || b.result.Built != 0 || b.result.Cached != a.result.Built {
		t.Fatalf("build on B: built %d, cached %d (A built %d): %s\n%s", b.result.Built, b.result.Cached, a.result.Built, b.errText, b.stderr)
	}
	for _, x := range a.result.Artifacts {
		if y := b.artifact(t, x.Name); y.Digest != x.Digest || fileSHA(t, y.Path) != string(x.Digest) {
			t.Errorf("%s: B exported %s (file %s), A built %s", x.Name, y.Digest, fileSHA(t, y.Path), x.Digest)
		}
	}
	// A cache that is not there is a warning, never a failed build.
	c := buildJSON(t, ws, t.TempDir(), "--cache-from", "127.0.0.1:1/nothing/here")
	if !c.ok {
		t.Fatalf("build with an unreachable cache: %s\n%s", c.errText, c.stderr)
	}
	// Said once, not for every node (twice each, around the key lock).
	if n := strings.Count(c.stderr, "cache unreachable"); n != 1 {
		t.Errorf("the unreachable cache was reported %d times:\n%s", n, c.stderr)
	}
	// --cache-to puts every node result there, found or built: A's warm
	// store fills another repository with a build that runs nothing, and a
	// third store gets everything from it.
	other := srv.Host + "/cache/other"
	if d := buildJSON(t, ws, cacheA, "--cache-to", other); !d.ok || d.result.Built != 0 {
		t.Fatalf("build on A into %s: built %d: %s\n%s", other, d.result.Built, d.errText, d.stderr)
	}
	if e := buildJSON(t, ws, t.TempDir(), "--cache-from", other); !e.ok || e.result.Built != 0 || e.result.Cached != a.result.Built {
		t.Fatalf("build from %s: built %d, cached %d (A built %d): %s\n%s", other, e.result.Built, e.result.Cached, a.result.Built, e.errText, e.stderr)
	}
}

// TestSecurityRegistryTextIsInert: what a registry says in an error reaches
// the terminal with its control characters shown, not obeyed: a hostile
// registry must not clear the screen and print "installed OK".
func TestSecurityRegistryTextIsInert(t *testing.T) {
	srv, err := regtest.Start(regtest.Options{Wrap: func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			if r.Method == http.MethodHead {
				return
			}
			fmt.Fprint(w, `{"errors":[{"code":"DENIED","message":"\u001b[2J\u001b[32mstrata: installed OK"}]}`)
		})
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	var stdout, stderr bytes.Buffer
	// No version: the tags are listed, a GET whose error has a body.
	args := []string{"--cache-dir", t.TempDir(), "pull", srv.Host + "/fleet/x"}
	if code := run(context.Background(), args, &stdout, &stderr); code == 0 {
		t.Fatalf("pull from a registry that denies everything succeeded")
	}
	if strings.ContainsRune(stderr.String(), 0x1b) || !strings.Contains(stderr.String(), `\x1b[2J`) {
		t.Errorf("the registry's message reached the terminal raw or not at all: %q", stderr.String())
	}
}
