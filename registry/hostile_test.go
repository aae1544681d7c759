package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/strata-build/strata/internal/regtest"
	"golang.org/x/sys/unix"
)

// rawLayer is a layer of a hand-made artifact: a title and content, and the
// size its descriptor claims (0: the content's).
type rawLayer struct {
	title   string
	content []byte
	size    int64
}

// localArtifact tags repo:1.0.0 in c's local layout as an image for device
// type test/hostile made of layers, in the shapes a hostile registry (or a
// layout copied from one) can serve and strata never publishes.
func localArtifact(t *testing.T, c *Client, repo string, layers []rawLayer) string {
	t.Helper()
	ctx := context.Background()
	dir, err := c.layoutDir(repo)
	if err != nil {
		t.Fatal(err)
	}
	l, err := openLayout(dir, repo)
	if err != nil {
		t.Fatal(err)
	}
	put := func(b []byte, mt string) ocispec.Descriptor {
		d := ocispec.Descriptor{MediaType: mt, Digest: digest.FromBytes(b), Size: int64(len(b))}
		if err := l.push(ctx, d, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		return d
	}
	var descs []ocispec.Descriptor
	for _, rl := range layers {
		d := put(rl.content, mediaTypeOf("ext4"))
		if rl.size != 0 {
			d.Size = rl.size
		}
		d.Annotations = map[string]string{ocispec.AnnotationTitle: rl.title, AnnotationFormat: "ext4"}
		descs = append(descs, d)
	}
	cb, _, err := encode(Config{Name: "hostile", Version: "1.0.0", Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"}, DeviceTypes: []string{"test/hostile"}})
	if err != nil {
		t.Fatal(err)
	}
	mb, md, err := manifestFor(put(cb, MediaTypeConfig), descs, map[string]string{AnnotationDeviceTypes: "test/hostile"}, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.tag(ctx, md, mb, "1.0.0"); err != nil {
		t.Fatal(err)
	}
	return repo + ":1.0.0"
}

// TestSecurityHostileTitles: a layer title may not name a hidden file. pull -o
// . in a home directory wrote a layer titled .bashrc over the user's, and a
// title ".x.part" was the temporary file of a layer titled x.
func TestSecurityHostileTitles(t *testing.T) {
	ctx := context.Background()
	for _, title := range []string{".bashrc", ".x.part", "."} {
		t.Run(title, func(t *testing.T) {
			c := newClient(t, newStore(t), Options{})
			ref := localArtifact(t, c, "hostile/titles", []rawLayer{{title: title, content: []byte("echo attacker code runs here\n")}, {title: "x", content: []byte("x")}})
			out := t.TempDir()
			mine := filepath.Join(out, ".bashrc")
			if err := os.WriteFile(mine, []byte("mine\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Pull(ctx, ref, PullOptions{OutDir: out}); !errors.Is(err, ErrInvalid) {
				t.Fatalf("pull of a layer titled %q: %v, want %v", title, err, ErrInvalid)
			}
			if b, _ := os.ReadFile(mine); string(b) != "mine\n" {
				t.Errorf(".bashrc is now %q", b)
			}
			if _, err := c.Install(ctx, ref, t.TempDir(), InstallOptions{DeviceType: "test/hostile"}); !errors.Is(err, ErrInvalid) {
				t.Errorf("install of a layer titled %q: %v, want %v", title, err, ErrInvalid)
			}
		})
	}
}

// TestSecurityNegativeLayerSize: a descriptor with a negative size is refused
// as invalid. Size -2 used to reach the stream's verifier and crash strata
// (a slice bound of -1), on install and in the remote cache alike.
func TestSecurityNegativeLayerSize(t *testing.T) {
	ctx := context.Background()
	c := newClient(t, newStore(t), Options{})
	ref := localArtifact(t, c, "hostile/size", []rawLayer{{title: "disk.ext4", content: []byte("disk"), size: -2}})
	target := t.TempDir()
	if _, err := c.Install(ctx, ref, target, InstallOptions{DeviceType: "test/hostile"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("install: %v, want %v", err, ErrInvalid)
	}
	if _, err := c.Pull(ctx, ref, PullOptions{OutDir: t.TempDir()}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("pull: %v, want %v", err, ErrInvalid)
	}
	// The backstop, for a descriptor that reaches a stream unchecked.
	v := newVerifier(strings.NewReader("disk"), ocispec.Descriptor{Digest: digest.FromString("disk"), Size: -2})
	if _, err := v.Read(make([]byte, 8)); !errors.Is(err, ErrDigest) {
		t.Errorf("verifier of size -2: %v, want %v", err, ErrDigest)
	}
}

// TestSecurityPullKeepsUserDirectory: the container image of a pull -o is
// written under a name its config chooses; a directory of the user's with
// that name is not deleted to make room, an earlier pull's layout is.
func TestSecurityPullKeepsUserDirectory(t *testing.T) {
	ctx := context.Background()
	c := newClient(t, newStore(t), Options{})
	dir, err := c.layoutDir("hostile/container")
	if err != nil {
		t.Fatal(err)
	}
	src, err := openLayout(dir, "hostile/container")
	if err != nil {
		t.Fatal(err)
	}
	cb := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	cfg := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cb), Size: int64(len(cb))}
	if err := src.push(ctx, cfg, bytes.NewReader(cb)); err != nil {
		t.Fatal(err)
	}
	m := &ocispec.Manifest{Config: cfg}
	raw := []byte(`{}`)
	md := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(raw), Size: int64(len(raw))}

	out := t.TempDir()
	root, err := os.OpenRoot(out)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	precious := filepath.Join(out, "keep", "precious")
	if err := os.MkdirAll(precious, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := exportLayout(ctx, src, root, "keep", md, raw, m); err == nil {
		t.Fatal("a directory of the user's was replaced by a layout")
	}
	if _, err := os.Stat(precious); err != nil {
		t.Errorf("the user's directory is gone: %v", err)
	}
	// An earlier pull's layout is replaced.
	if err := exportLayout(ctx, src, root, "oci", md, raw, m); err != nil {
		t.Fatal(err)
	}
	if err := exportLayout(ctx, src, root, "oci", md, raw, m); err != nil {
		t.Errorf("replacing an earlier layout: %v", err)
	}
	if entries, _ := os.ReadDir(out); len(entries) != 2 {
		t.Errorf("%s holds %d entries, want keep and oci only (no temporaries)", out, len(entries))
	}
}

// TestSecurityEndlessTags: a registry that lists tags in pages without end
// (each within the limit on a response) is refused after maxTags, not read
// until memory runs out.
func TestSecurityEndlessTags(t *testing.T) {
	ctx := context.Background()
	var pages atomic.Int64
	srv := startRegistry(t, regtest.Options{Wrap: faults(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.URL.Path, "/tags/list") {
			return false
		}
		n := pages.Add(1)
		tags := make([]string, 1000)
		for i := range tags {
			tags[i] = fmt.Sprintf("1.%d.%d", n, i)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Link", fmt.Sprintf(`<%s?last=1.%d.999&n=1000>; rel="next"`, r.URL.Path, n))
		fmt.Fprintf(w, `{"name":"fleet/endless","tags":["%s"]}`, strings.Join(tags, `","`))
		return true
	})})
	c := newClient(t, newStore(t), Options{})
	_, err := c.Pull(ctx, srv.Host+"/fleet/endless", PullOptions{})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("pull of a repository with endless tags: %v", err)
	}
	if n := pages.Load(); n > maxTags/1000+1 {
		t.Errorf("%d pages of tags read, want at most %d", n, maxTags/1000+1)
	}
}

// TestSecurityInstallTargetNotYours: install and rollback write what they
// verified into the target as whoever runs them (root, on a device), so a
// target somebody else can change is refused, and the lock is never opened
// through a link.
func TestSecurityInstallTargetNotYours(t *testing.T) {
	ctx := context.Background()
	c := newClient(t, newStore(t), Options{})
	v1, _ := deviceVersions(t, c)
	opts := InstallOptions{DeviceType: "test/probe"}

	open := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Install(ctx, v1, open, opts); err == nil || !strings.Contains(err.Error(), "written by others") {
		t.Errorf("install into a world-writable target: %v", err)
	}
	if _, err := Rollback(open); err == nil || !strings.Contains(err.Error(), "written by others") {
		t.Errorf("rollback of a world-writable target: %v", err)
	}

	// A link planted as the lock: nothing is created where it points.
	target := t.TempDir()
	elsewhere := filepath.Join(t.TempDir(), "created-by-install")
	if err := os.Symlink(elsewhere, filepath.Join(target, targetLock)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Install(ctx, v1, target, opts); err == nil {
		t.Errorf("install locked through a planted link")
	}
	if _, err := os.Lstat(elsewhere); !os.IsNotExist(err) {
		t.Errorf("the lock link's target was created: %v", err)
	}

	if os.Geteuid() != 0 {
		t.Log("not root: the target of another user is not tried")
		return
	}
	theirs := t.TempDir()
	if err := os.Chown(theirs, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Install(ctx, v1, theirs, opts); err == nil || !strings.Contains(err.Error(), "belongs to uid 65534") {
		t.Errorf("install into another user's target: %v", err)
	}
	if entries, _ := os.ReadDir(theirs); len(entries) != 0 {
		t.Errorf("another user's target got %d entries", len(entries))
	}
}

// TestLayoutDirStaysInside: a reference whose name climbs out of the local
// layouts' directory ("../compile" parses as host "..") names no local copy.
func TestLayoutDirStaysInside(t *testing.T) {
	c := newClient(t, newStore(t), Options{})
	for _, repo := range []string{"../compile", "host/../../state", "a//b"} {
		if _, err := c.layoutDir(repo); !errors.Is(err, ErrInvalid) {
			t.Errorf("layoutDir(%q): %v, want %v", repo, err, ErrInvalid)
		}
	}
	if _, err := c.layoutDir("localhost:5000/fleet/x86"); err != nil {
		t.Errorf("layoutDir of a plain name: %v", err)
	}
}

// TestInstallChecksFreeSpace: an install that cannot fit in the target's
// free space says so before writing anything, not after filling the disk
// (as root, into the blocks kept for root).
func TestInstallChecksFreeSpace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small filesystem")
	}
	small := t.TempDir()
	if err := unix.Mount("tmpfs", small, "tmpfs", 0, "size=256k,mode=0755"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(small, unix.MNT_DETACH) })
	c := newClient(t, newStore(t), Options{})
	v1, _ := deviceVersions(t, c)
	_, err := c.Install(context.Background(), v1, small, InstallOptions{DeviceType: "test/probe"})
	if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "needed") {
		t.Fatalf("install into 256 KiB: %v, want %v", err, ErrNoSpace)
	}
	if entries, _ := os.ReadDir(small); len(entries) > 1 { // the lock
		t.Errorf("the target got %d entries", len(entries))
	}
}
