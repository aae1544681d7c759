package output

import (
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestSquashfsCompression: every compressor the option offers is the one the
// image says it uses, and the image holds the tree.
func TestSquashfsCompression(t *testing.T) {
	needTools(t, "mksquashfs", "unsquashfs")
	tr, c := testTree(t)
	for _, comp := range []string{"gzip", "xz", "zstd", "lz4", "lzo"} {
		t.Run(comp, func(t *testing.T) {
			t.Parallel()
			res, err := Write(context.Background(), tr, c, Options{Format: FormatSquashfs, Compression: comp, SourceDateEpoch: testEpoch}, filepath.Join(t.TempDir(), "img"))
			if err != nil {
				t.Fatal(err)
			}
			if sb := run(t, "unsquashfs", "-s", res.Path); !strings.Contains(sb, "Compression "+comp+"\n") {
				t.Errorf("unsquashfs -s:\n%s", sb)
			}
			run(t, "unsquashfs", "-lln", res.Path)
		})
	}
}

// TestExt4LabelAndInodes: the label and the free inodes asked for are the
// filesystem's, and neither changes the listing.
func TestExt4LabelAndInodes(t *testing.T) {
	needTools(t, "mkfs.ext4", "debugfs", "dumpe2fs")
	tr, c := testTree(t)
	res, err := Write(context.Background(), tr, c, Options{Format: FormatExt4, SourceDateEpoch: testEpoch, Label: "rootfs-a", InodesExtra: 5000}, filepath.Join(t.TempDir(), "img"))
	if err != nil {
		t.Fatal(err)
	}
	sb := run(t, "dumpe2fs", "-h", res.Path)
	if !regexp.MustCompile(`(?m)^Filesystem volume name:\s+rootfs-a$`).MatchString(sb) {
		t.Errorf("label not set:\n%s", sb)
	}
	m := regexp.MustCompile(`(?m)^Free inodes:\s+(\d+)$`).FindStringSubmatch(sb)
	if free, _ := strconv.Atoi(m[1]); m == nil || free < 5000 {
		t.Errorf("free inodes %v, want at least 5000", m)
	}
	_, err = Write(context.Background(), tr, c, Options{Format: FormatExt4, Label: strings.Repeat("x", 17)}, filepath.Join(t.TempDir(), "img"))
	if !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("17-byte label: %v, want ErrInvalidOptions", err)
	}
}

// TestErofsCompression: an lz4 image reads back as the tree.
func TestErofsCompression(t *testing.T) {
	needRoot(t, "the reader restores owners only as root")
	needTools(t, "mkfs.erofs", "fsck.erofs", "dump.erofs")
	tr, c := trickyTree(t)
	for _, comp := range []string{"lz4", "lz4hc"} {
		res, err := Write(context.Background(), tr, c, Options{Format: FormatErofs, Compression: comp, SourceDateEpoch: testEpoch}, filepath.Join(t.TempDir(), "img"))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(listing(tr), readBack[FormatErofs].read(t, res)); diff != "" {
			t.Errorf("%s listing (-manifest +erofs):\n%s", comp, diff)
		}
	}
}

// TestOCIConfig: config, version and annotations reach the image as skopeo
// and umoci read it, and the reference is named after the version.
func TestOCIConfig(t *testing.T) {
	tr, c := testTree(t)
	p, err := DecodePlanOptions([]byte(`{"version": "1.2.3", "annotations": {"org.example.team": "os"},
		"config": {"entrypoint": ["/bin/sh", "-c"], "cmd": ["echo hi"], "env": ["LANG=C.UTF-8"], "user": "1000:1000",
		"workdir": "/home/user", "labels": {"com.example.role": "base"}, "exposed_ports": ["8080", "53/udp"]}}`))
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{Format: FormatOCI, SourceDateEpoch: testEpoch, Platform: Platform{Architecture: "amd64"}}
	p.Apply(&opts)
	res, res2 := writeTwice(t, tr, c, opts, "layout")
	if diff := cmp.Diff(dirDigests(t, res.Path), dirDigests(t, res2.Path)); diff != "" {
		t.Errorf("layouts differ (-first +second):\n%s", diff)
	}
	if ref := ociRef(t, res.Path); ref != "1.2.3" {
		t.Errorf("reference name %q, want the version", ref)
	}
	var index ocispec.Index
	readJSON(t, filepath.Join(res.Path, "index.json"), &index)
	var man ocispec.Manifest
	if err := json.Unmarshal(readBlob(t, res.Path, index.Manifests[0]), &man); err != nil {
		t.Fatal(err)
	}
	wantAnn := map[string]string{"org.example.team": "os", ocispec.AnnotationVersion: "1.2.3"}
	if diff := cmp.Diff(wantAnn, man.Annotations); diff != "" {
		t.Errorf("manifest annotations (-want +got):\n%s", diff)
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(readBlob(t, res.Path, man.Config), &cfg); err != nil {
		t.Fatal(err)
	}
	wantCfg := ocispec.ImageConfig{
		User:         "1000:1000",
		ExposedPorts: map[string]struct{}{"8080/tcp": {}, "53/udp": {}},
		Env:          []string{defaultEnv[0], "LANG=C.UTF-8"},
		Entrypoint:   []string{"/bin/sh", "-c"},
		Cmd:          []string{"echo hi"},
		WorkingDir:   "/home/user",
		Labels:       map[string]string{"com.example.role": "base"},
	}
	if diff := cmp.Diff(wantCfg, cfg.Config); diff != "" {
		t.Errorf("image config (-want +got):\n%s", diff)
	}
	if _, err := exec.LookPath("skopeo"); err == nil {
		var insp struct {
			Labels       map[string]string
			Env          []string
			Architecture string
		}
		if err := json.Unmarshal([]byte(run(t, "skopeo", "inspect", "oci:"+res.Path+":1.2.3")), &insp); err != nil {
			t.Fatal(err)
		}
		if insp.Labels["com.example.role"] != "base" || insp.Architecture != "amd64" || len(insp.Env) != 2 {
			t.Errorf("skopeo inspect: %+v", insp)
		}
	}
	if _, err := exec.LookPath("umoci"); err == nil {
		needRoot(t, "umoci unpack keeps owners only as root")
		bundle := filepath.Join(extractDir(t), "bundle")
		run(t, "umoci", "--log", "error", "unpack", "--image", res.Path+":1.2.3", bundle)
		var spec struct {
			Process struct {
				Args []string
				Cwd  string
				User struct{ UID, GID int }
			}
		}
		readJSON(t, filepath.Join(bundle, "config.json"), &spec)
		if !cmp.Equal(spec.Process.Args, []string{"/bin/sh", "-c", "echo hi"}) || spec.Process.Cwd != "/home/user" || spec.Process.User.UID != 1000 {
			t.Errorf("umoci runtime config: %+v", spec.Process)
		}
	}
	if _, err := Write(context.Background(), tr, c, Options{Format: FormatOCI, Platform: Platform{Architecture: "amd64"}, ExposedPorts: []string{"http"}}, filepath.Join(t.TempDir(), "x")); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("bad port: %v, want ErrInvalidOptions", err)
	}
}

// TestDecodePlanOptions: unknown output options are refused, not ignored.
func TestDecodePlanOptions(t *testing.T) {
	if _, err := DecodePlanOptions([]byte(`{"colour": "blue"}`)); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("unknown option: %v, want ErrInvalidOptions", err)
	}
	p, err := DecodePlanOptions([]byte(`{"size": 8192, "label": "l", "inodes_extra": 3, "compression": "xz"}`))
	if err != nil {
		t.Fatal(err)
	}
	var o Options
	p.Apply(&o)
	if o.Size != 8192 || o.Label != "l" || o.InodesExtra != 3 || o.Compression != "xz" {
		t.Errorf("applied %+v", o)
	}
}
