package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// TestDetectCached: the probes' results are written once and reused while their
// key holds; a file with another key, or garbage, means probing again. The Host
// is the same either way.
func TestDetectCached(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "host.json")
	fresh, err := Detect(ctx)
	if err != nil {
		t.Skip("no usable bwrap:", err)
	}
	first, err := DetectCached(ctx, file)
	if err != nil {
		t.Fatal(err)
	}
	var c probeCache
	b, err := os.ReadFile(file)
	if err != nil || json.Unmarshal(b, &c) != nil || c.Key == "" {
		t.Fatalf("no cache written: %v %s", err, b)
	}
	if c.Probes.Overlay != fresh.Overlay || c.Probes.UserNamespaces != fresh.UserNamespaces {
		t.Errorf("cached probes %+v do not match detection (overlay %v)", c.Probes, fresh.Overlay)
	}
	// Builds leave the bwrap run to their first sandbox; only Detect probes it.
	if first.BwrapWorks || !fresh.BwrapWorks {
		t.Errorf("BwrapWorks: DetectCached %v (want false, not probed), Detect %v (want true)", first.BwrapWorks, fresh.BwrapWorks)
	}
	// A cached result must be usable as is: forge a marker only the cache can
	// hold, and see it come back.
	c.Probes.BwrapVersion = "from-the-cache"
	b, _ = json.Marshal(c)
	os.WriteFile(file, b, 0o644)
	second, err := DetectCached(ctx, file)
	if err != nil || second.Bwrap.Version != "from-the-cache" {
		t.Fatalf("cache not used: %v %q", err, second.Bwrap.Version)
	}
	second.Bwrap.Version = first.Bwrap.Version
	if d := cmp.Diff(first, second, cmp.AllowUnexported(Host{}, cgroupParents{})); d != "" {
		t.Errorf("host from cache differs from a probed one:\n%s", d)
	}
	// Another key (another binary, kernel, user...) or garbage: probe again.
	for name, data := range map[string][]byte{
		"other key": []byte(`{"key":"0000","probes":{"bwrap_version":"from-the-cache"}}`),
		"garbage":   []byte("{not json"),
	} {
		os.WriteFile(file, data, 0o644)
		h, err := DetectCached(ctx, file)
		if err != nil || h.Bwrap.Version == "from-the-cache" {
			t.Errorf("%s: cache trusted: %v %q", name, err, h.Bwrap.Version)
		}
	}
}

// TestDetectCachedNowhere: with no place for the cache (the store could not
// give one), DetectCached probes and creates nothing, not even a temporary file
// in the current directory (inotify sees every create).
func TestDetectCachedNowhere(t *testing.T) {
	if _, err := Detect(context.Background()); err != nil {
		t.Skip("no usable bwrap:", err)
	}
	dir := t.TempDir()
	t.Chdir(dir)
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Skip("inotify:", err)
	}
	defer unix.Close(fd)
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE); err != nil {
		t.Fatal(err)
	}
	if _, err := DetectCached(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if n, err := unix.Read(fd, buf); n > 0 {
		t.Fatalf("DetectCached(\"\") created a file in the current directory (%d bytes of events)", n)
	} else if !errors.Is(err, unix.EAGAIN) {
		t.Fatal(err)
	}
}
