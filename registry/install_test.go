package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/strata-build/strata/internal/regtest"
)

// device publishes two versions of a probe image into the local layout of
// st and returns their references.
func deviceVersions(t *testing.T, c *Client) (v1, v2 string) {
	t.Helper()
	ctx := context.Background()
	st := c.c.store()
	for _, v := range []string{"1.0.0", "2.0.0"} {
		ti := testImage{name: "probe", version: v, devices: []string{"test/probe"}, repo: "dev/probe",
			files: []testFile{
				{"rootfs.squashfs", "squashfs", bytes.Repeat([]byte("rootfs "+v+" "), 40000)},
				{"boot.ext4", "ext4", bytes.Repeat([]byte("boot "+v+" "), 30000)},
			}}
		if _, err := c.Publish(ctx, ti.request(t, st)); err != nil {
			t.Fatal(err)
		}
	}
	return "dev/probe:1.0.0", "dev/probe:2.0.0"
}

// checkTarget asserts the target's current slot is complete and holds one
// of the versions allowed, and returns its version.
func checkTarget(t *testing.T, dir string, allowed ...string) string {
	t.Helper()
	link, err := os.Readlink(filepath.Join(dir, CurrentLink))
	if err != nil {
		t.Fatalf("no current link: %v", err)
	}
	s, err := VerifySlot(dir, link)
	if err != nil {
		t.Fatalf("current slot %s: %v", link, err)
	}
	for _, v := range allowed {
		if s.Version == v {
			return v
		}
	}
	t.Fatalf("current slot holds %s, want one of %v", s.Version, allowed)
	return ""
}

func TestInstallAndRollback(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	c := newClient(t, st, Options{})
	v1, v2 := deviceVersions(t, c)
	dir := t.TempDir()
	in, err := c.Install(ctx, v1, dir, InstallOptions{DeviceType: "test/probe"})
	if err != nil {
		t.Fatal(err)
	}
	if in.Current.Slot != "a" || in.Previous != nil {
		t.Fatalf("first install: %+v", in)
	}
	in, err = c.Install(ctx, v2, dir, InstallOptions{DeviceType: "test/probe/rev2"})
	if err != nil {
		t.Fatal(err)
	}
	if in.Current.Slot != "b" || in.Previous == nil || in.Previous.Version != "1.0.0" {
		t.Fatalf("second install: %+v", in)
	}
	checkTarget(t, dir, "2.0.0")
	if _, err := VerifySlot(dir, "a"); err != nil {
		t.Fatalf("previous slot not kept: %v", err)
	}
	// A slot is its installer's alone: rootfs images hold password hashes.
	for _, slot := range []string{"a", "b"} {
		if fi, err := os.Stat(filepath.Join(dir, slot)); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("slot %s: %v, mode %v, want 0700", slot, err, fi.Mode().Perm())
		}
	}
	in, err = Rollback(dir)
	if err != nil || in.Current.Version != "1.0.0" {
		t.Fatalf("rollback: %+v %v", in, err)
	}
	checkTarget(t, dir, "1.0.0")
	if in, err = Rollback(dir); err != nil || in.Current.Version != "2.0.0" {
		t.Fatalf("second rollback: %+v %v", in, err)
	}
	// Pulling the repository without a tag takes the default: the newest.
	p, err := c.Pull(ctx, "dev/probe", PullOptions{DeviceType: "test/probe"})
	if err != nil || p.Version != "2.0.0" {
		t.Fatalf("pull default: %+v %v", p, err)
	}
}

// slotsState is every file under a target directory with its content digest.
func slotsState(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() || fi.Name() == targetLock {
			return err
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			l, _ := os.Readlink(p)
			out[p] = "-> " + l
			return nil
		}
		b, _ := os.ReadFile(p)
		out[p] = digest.FromBytes(b).String()
		return nil
	})
	return out
}

// TestSecurityRow25InstallRefusals: a tampered blob, the wrong device type
// (for the image or for what the target holds), an older version, and a file
// changed after it was verified are all refused before the inactive slot is
// touched.
func TestSecurityRow25InstallRefusals(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	c := newClient(t, st, Options{})
	v1, v2 := deviceVersions(t, c)
	dir := t.TempDir()
	if _, err := c.Install(ctx, v1, dir, InstallOptions{DeviceType: "test/probe"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Install(ctx, v2, dir, InstallOptions{DeviceType: "test/probe"}); err != nil {
		t.Fatal(err)
	}
	// A version also offered for another board: the target holds test/probe.
	other := testImage{name: "probe", version: "3.0.0", devices: []string{"test/probe", "test/other"}, repo: "dev/probe",
		files: []testFile{{"rootfs.squashfs", "squashfs", []byte("rootfs 3.0.0")}}}
	if _, err := c.Publish(ctx, other.request(t, st)); err != nil {
		t.Fatal(err)
	}
	before := slotsState(t, dir)
	layoutDir, _ := c.layoutDir("dev/probe")
	blobOf := func(content []byte) string {
		return filepath.Join(layoutDir, "blobs", "sha256", digest.FromBytes(content).Encoded())
	}
	rootfs1 := bytes.Repeat([]byte("rootfs 1.0.0 "), 40000)
	for _, tc := range []struct {
		name string
		ref  string
		opts InstallOptions
		prep func(c *Client)
		want error
	}{
		{"device type the image is not for", v2, InstallOptions{DeviceType: "test"}, nil, ErrNoMatch},
		{"another board than the installed one", v2, InstallOptions{DeviceType: "other/board"}, nil, ErrRefused},
		{"another board the image is also for", "dev/probe:3.0.0", InstallOptions{DeviceType: "test/other"}, nil, ErrRefused},
		{"older version", v1, InstallOptions{DeviceType: "test/probe"}, nil, ErrRefused},
		{"tampered blob", v1, InstallOptions{DeviceType: "test/probe", AllowDowngrade: true}, func(*Client) {
			p := blobOf(rootfs1)
			os.Chmod(p, 0o644)
			b, _ := os.ReadFile(p)
			b[100] ^= 0xff
			os.WriteFile(p, b, 0o444)
		}, ErrDigest},
		{"changed after verification", v1, InstallOptions{DeviceType: "test/probe", AllowDowngrade: true}, func(c *Client) {
			c.opts.hook = func(step string) {
				if step == "checked" { // verified, not yet copied: change it now
					p := blobOf(rootfs1)
					os.Chmod(p, 0o644)
					b, _ := os.ReadFile(p)
					b[200] ^= 0xff
					os.WriteFile(p, b, 0o444)
				}
			}
		}, ErrDigest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, st, Options{})
			if tc.prep != nil {
				tc.prep(c)
			}
			_, err := c.Install(ctx, tc.ref, dir, tc.opts)
			if !errors.Is(err, tc.want) {
				t.Fatalf("install: %v, want %v", err, tc.want)
			}
			t.Log(err)
			after := slotsState(t, dir)
			if fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatalf("the target changed:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}

// TestSecurityRow24InstallInterrupted kills strata install at 50 random
// points (every step of the install, each chunk written included, is a
// candidate) and checks after each that the target's current slot is the old
// version or the complete new one; a rerun then completes.
func TestSecurityRow24InstallInterrupted(t *testing.T) {
	ctx := context.Background()
	storeDir := t.TempDir()
	st := newStoreAt(t, storeDir)
	c := newClient(t, st, Options{})
	v1, v2 := deviceVersions(t, c)
	// Count the steps of an install of v2 over v1 on a scratch target.
	steps := 0
	counter := newClient(t, st, Options{})
	counter.opts.hook = func(string) { steps++ }
	scratch := t.TempDir()
	if _, err := c.Install(ctx, v1, scratch, InstallOptions{DeviceType: "test/probe"}); err != nil {
		t.Fatal(err)
	}
	if _, err := counter.Install(ctx, v2, scratch, InstallOptions{DeviceType: "test/probe"}); err != nil {
		t.Fatal(err)
	}
	if steps < 10 {
		t.Fatalf("only %d steps", steps)
	}
	seed := rand.Uint64()
	t.Logf("seed %d, %d steps", seed, steps)
	rng := rand.New(rand.NewPCG(seed, 0))
	dir := t.TempDir()
	prev := "1.0.0"
	if _, err := c.Install(ctx, v1, dir, InstallOptions{DeviceType: "test/probe"}); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		// Alternate the version being installed so each round replaces a slot.
		next, ref := "2.0.0", v2
		if prev == "2.0.0" {
			next, ref = "1.0.0", v1
		}
		at := 1 + rng.IntN(steps)
		cmd := child(t, "install", "STORE="+storeDir, "REF="+ref, "TARGET="+dir, "DEVICE=test/probe", fmt.Sprintf("KILL_AT=%d", at))
		if prev == "2.0.0" {
			cmd.Env = append(cmd.Env, "ALLOW_DOWNGRADE=1")
		}
		err := cmd.Run()
		var ee *exec.ExitError
		killed := errors.As(err, &ee) && !ee.Exited()
		if err != nil && !killed {
			t.Fatalf("round %d (step %d): %v", i, at, err)
		}
		got := checkTarget(t, dir, prev, next)
		if !killed && got != next {
			t.Fatalf("round %d: completed, but current holds %s", i, got)
		}
		prev = got
	}
	// A plain rerun cleans up what the kills left and completes.
	if _, err := c.Install(ctx, v2, dir, InstallOptions{DeviceType: "test/probe", AllowDowngrade: true}); err != nil {
		t.Fatal(err)
	}
	checkTarget(t, dir, "2.0.0")
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".staging-") || strings.HasPrefix(e.Name(), ".old-") {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

var _ = ocispec.Descriptor{}

// TestDuplicateLayerTitlesRefused: an artifact whose two layers carry one
// title (one file would overwrite the other in a slot) is refused before
// anything is installed.
func TestDuplicateLayerTitlesRefused(t *testing.T) {
	ctx := context.Background()
	c := newClient(t, newStore(t), Options{})
	ref := localArtifact(t, c, "dup/image", []rawLayer{{title: "disk.ext4", content: []byte("one")}, {title: "disk.ext4", content: []byte("two")}})
	target := t.TempDir()
	if _, err := c.Install(ctx, ref, target, InstallOptions{DeviceType: "test/hostile"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("install of an artifact with two layers titled alike: %v, want %v", err, ErrInvalid)
	}
	if _, err := os.Lstat(filepath.Join(target, CurrentLink)); !os.IsNotExist(err) {
		t.Errorf("something was installed: %v", err)
	}
}

// TestInstallRefusesBeforeFetching: from a registry, an install refused for
// an older version downloads no layer: the manifest and config decide, and a
// device must not fetch a whole image only to refuse it.
func TestInstallRefusesBeforeFetching(t *testing.T) {
	ctx := context.Background()
	var layerGets atomic.Int64
	var layers sync.Map // digest path suffix -> true
	srv := startRegistry(t, regtest.Options{Wrap: faults(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodGet {
			if _, ok := layers.Load(path.Base(r.URL.Path)); ok {
				layerGets.Add(1)
			}
		}
		return false
	})})
	st := newStore(t)
	pub := newClient(t, st, Options{Registry: srv.Host})
	deviceVersions(t, pub)
	for _, v := range []string{"1.0.0", "2.0.0"} {
		for _, f := range []string{"rootfs ", "boot "} {
			n := map[string]int{"rootfs ": 40000, "boot ": 30000}[f]
			layers.Store(digest.FromBytes(bytes.Repeat([]byte(f+v+" "), n)).String(), true)
		}
	}
	c := newClient(t, newStore(t), Options{})
	dir := t.TempDir()
	if _, err := c.Install(ctx, srv.Host+"/dev/probe:2.0.0", dir, InstallOptions{DeviceType: "test/probe"}); err != nil {
		t.Fatal(err)
	}
	if layerGets.Load() != 2 {
		t.Fatalf("install of 2.0.0 fetched %d layers, want 2", layerGets.Load())
	}
	layerGets.Store(0)
	_, err := c.Install(ctx, srv.Host+"/dev/probe:1.0.0", dir, InstallOptions{DeviceType: "test/probe"})
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("install of an older version: %v, want %v", err, ErrRefused)
	}
	if n := layerGets.Load(); n != 0 {
		t.Errorf("the older version was refused, but %d layers were downloaded first", n)
	}
	checkTarget(t, dir, "2.0.0")
}

// TestPullReadsConfigOnce: the config a pull reads to choose the variant is
// stored from memory, not downloaded again with the layers.
func TestPullReadsConfigOnce(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	gets := map[string]int{}
	srv := startRegistry(t, regtest.Options{Wrap: faults(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			mu.Lock()
			gets[path.Base(r.URL.Path)]++
			mu.Unlock()
		}
		return false
	})})
	st := newStore(t)
	deviceVersions(t, newClient(t, st, Options{Registry: srv.Host}))
	c := newClient(t, newStore(t), Options{})
	p, err := c.Pull(ctx, srv.Host+"/dev/probe:2.0.0", PullOptions{DeviceType: "test/probe"})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for blob, n := range gets {
		if n != 1 {
			t.Errorf("blob %s downloaded %d times", blob, n)
		}
	}
	if len(gets) != len(p.Files)+1 { // the layers and the config
		t.Errorf("%d blobs downloaded for %d files and a config: %v", len(gets), len(p.Files), gets)
	}
}
