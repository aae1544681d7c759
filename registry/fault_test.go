package registry

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"oras.land/oras-go/v2/registry/remote/retry"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/strata-build/strata/executor/store"
	"github.com/strata-build/strata/internal/regtest"
)

// helperEnv selects what TestHelperProcess does in a child test process.
const helperEnv = "STRATA_REGISTRY_TEST_HELPER"

// child starts this test binary as a helper process doing what, with env.
func child(t *testing.T, what string, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(append(os.Environ(), helperEnv+"="+what), env...)
	cmd.Stderr = os.Stderr
	return cmd
}

// killedAt is a hook that kills the process (SIGKILL: nothing runs after it)
// when it reaches the given step for the n-th time (n counts from 1).
func killedAt(step string, n int) func(string) {
	var seen atomic.Int64
	return func(s string) {
		if (step == "" || s == step) && seen.Add(1) == int64(n) {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}
}

// TestHelperProcess is not a test: it is what child processes run.
func TestHelperProcess(t *testing.T) {
	what := os.Getenv(helperEnv)
	if what == "" {
		t.Skip("helper process only")
	}
	ctx := context.Background()
	err := func() error {
		switch what {
		case "tag-layout":
			l, err := openLayout(os.Getenv("LAYOUT"), "test")
			if err != nil {
				return err
			}
			for i := range 40 {
				b := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[],"annotations":{"n":"%s-%d"}}`, os.Getenv("NAME"), i))
				d := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromBytes(b), Size: int64(len(b))}
				if err := l.tag(ctx, d, b, fmt.Sprintf("%s-%d", os.Getenv("NAME"), i)); err != nil {
					return err
				}
			}
		case "hold-layout-lock":
			l, err := openLayout(os.Getenv("LAYOUT"), "test")
			if err != nil {
				return err
			}
			l.hook = func(s string) {
				if s == "index-locked" {
					fmt.Println("locked")
					select {}
				}
			}
			return l.update(func(*ocispec.Index) error { return nil })
		case "publish":
			st, err := store.Open(os.Getenv("STORE"))
			if err != nil {
				return err
			}
			defer st.Close()
			ti := faultImage
			opts := Options{Registry: os.Getenv("REGISTRY"), DockerConfig: os.Getenv("STORE") + "/none.json"}
			if s := os.Getenv("KILL_AT"); s != "" {
				opts.hook = killedAt(s, 1)
			}
			c, err := New(st, opts)
			if err != nil {
				return err
			}
			_, err = c.Publish(ctx, ti.request(t, st))
			return err
		case "install":
			st, err := store.Open(os.Getenv("STORE"))
			if err != nil {
				return err
			}
			defer st.Close()
			var n int
			fmt.Sscan(os.Getenv("KILL_AT"), &n)
			c, err := New(st, Options{DockerConfig: os.Getenv("STORE") + "/none.json", hook: killedAt("", n)})
			if err != nil {
				return err
			}
			_, err = c.Install(ctx, os.Getenv("REF"), os.Getenv("TARGET"), InstallOptions{DeviceType: os.Getenv("DEVICE"), AllowDowngrade: os.Getenv("ALLOW_DOWNGRADE") != ""})
			return err
		default:
			return fmt.Errorf("unknown helper %q", what)
		}
		return nil
	}()
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// TestSecurityRow07TwoProcessesTagLayout: two processes tag one local OCI
// layout at once; every tag of both is there and index.json parses.
func TestSecurityRow07TwoProcessesTagLayout(t *testing.T) {
	dir := t.TempDir()
	if _, err := openLayout(dir, "test"); err != nil {
		t.Fatal(err)
	}
	var cmds []*exec.Cmd
	for _, name := range []string{"x", "y"} {
		cmd := child(t, "tag-layout", "LAYOUT="+dir, "NAME="+name)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	for _, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	l, err := openLayout(dir, "test")
	if err != nil {
		t.Fatal(err)
	}
	tags, err := l.tags(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(tags) != 80 {
		t.Fatalf("%d tags, want 80: %v", len(tags), tags)
	}
	for _, tag := range tags {
		if _, err := l.resolve(context.Background(), tag); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSecurityRow08LayoutLockHolderDies: a process killed while it holds the
// layout's lock leaves nothing to clean up: the next tag proceeds.
func TestSecurityRow08LayoutLockHolderDies(t *testing.T) {
	dir := t.TempDir()
	cmd := child(t, "hold-layout-lock", "LAYOUT="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "locked\n" {
		t.Fatalf("child: %q %v", line, err)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	l, err := openLayout(dir, "test")
	if err != nil {
		t.Fatal(err)
	}
	b := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`)
	d := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromBytes(b), Size: int64(len(b))}
	if err := l.tag(context.Background(), d, b, "after"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.resolve(context.Background(), "after"); err != nil {
		t.Fatal(err)
	}
}

// faultImage is a small image with two files, for the fault tests.
var faultImage = testImage{name: "probe", version: "1.0.0", devices: []string{"test/probe"}, repo: "fault/probe",
	files: []testFile{{"probe.squashfs", "squashfs", bytes.Repeat([]byte("squashfs bytes "), 20000)}, {"probe.ext4", "ext4", bytes.Repeat([]byte{7}, 300000)}}}

// faults wraps a registry handler with a function that may serve a request
// itself (returning true) instead of the registry.
func faults(f func(w http.ResponseWriter, r *http.Request) bool) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !f(w, r) {
				next.ServeHTTP(w, r)
			}
		})
	}
}

func isBlobUpload(r *http.Request) bool {
	return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/blobs/uploads/")
}

// resetAfter reads n bytes of the request body and closes the connection
// under the client (a reset mid-upload).
func resetAfter(w http.ResponseWriter, r *http.Request, n int64) {
	io.CopyN(io.Discard, r.Body, n)
	conn, _, err := http.NewResponseController(w).Hijack()
	if err == nil {
		if tc, ok := conn.(interface{ SetLinger(int) error }); ok {
			tc.SetLinger(0) // RST, not FIN
		}
		conn.Close()
	}
}

// tagOf returns what tag points at in the registry, or an error.
func tagOf(t *testing.T, c *Client, repo, tag string) (ocispec.Descriptor, error) {
	t.Helper()
	r, err := ParseRef(repo)
	if err != nil {
		t.Fatal(err)
	}
	tg, err := c.target(r)
	if err != nil {
		t.Fatal(err)
	}
	return tg.resolve(context.Background(), tag)
}

// TestSecurityRow09ConnectionResetDuringUpload: a connection reset in the
// middle of a blob upload is retried from the store (a rewindable source); a
// blob that never gets through leaves no tag.
func TestSecurityRow09ConnectionResetDuringUpload(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		resets int64 // uploads of the big blob that are cut
		ok     bool
	}{{"once", 1, true}, {"always", 1 << 30, false}} {
		t.Run(tc.name, func(t *testing.T) {
			var cut atomic.Int64
			srv := startRegistry(t, regtest.Options{Wrap: faults(func(w http.ResponseWriter, r *http.Request) bool {
				if isBlobUpload(r) && r.ContentLength > 200000 && cut.Add(1) <= tc.resets {
					resetAfter(w, r, 100000)
					return true
				}
				return false
			})})
			st := newStore(t)
			c := newClient(t, st, Options{Registry: srv.Host})
			var retries atomic.Int64
			c.opts.Events = func(ev Event) {
				if ev.Kind == EventRetry {
					retries.Add(1)
				}
			}
			_, err := c.Publish(ctx, faultImage.request(t, st))
			if tc.ok != (err == nil) {
				t.Fatalf("publish: %v (cut %d uploads)", err, cut.Load())
			}
			if tc.ok && retries.Load() == 0 {
				t.Error("no retry reported")
			}
			_, terr := tagOf(t, c, srv.Host+"/fault/probe", "1.0.0")
			if tc.ok && terr != nil {
				t.Errorf("tag after a retried upload: %v", terr)
			}
			if !tc.ok {
				if !errors.Is(terr, ErrNotFound) {
					t.Errorf("a failed push left a tag: %v", terr)
				}
				t.Log(err)
			}
		})
	}
}

// TestSecurityRow10RetryAfterThen503: a 429 with Retry-After and then a 503
// are waited out (the wait capped at MaxWait); when the retries run out the
// error names the registry and the status.
func TestSecurityRow10RetryAfterThen503(t *testing.T) {
	ctx := context.Background()
	t.Run("recovers", func(t *testing.T) {
		var n atomic.Int64
		srv := startRegistry(t, regtest.Options{Wrap: faults(func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method != http.MethodHead || !strings.Contains(r.URL.Path, "/blobs/") {
				return false
			}
			switch n.Add(1) {
			case 1:
				w.Header().Set("Retry-After", "30") // capped: the test never waits 30 s
				w.WriteHeader(http.StatusTooManyRequests)
				return true
			case 2:
				w.WriteHeader(http.StatusServiceUnavailable)
				return true
			}
			return false
		})})
		st := newStore(t)
		c := newClient(t, st, Options{Registry: srv.Host})
		if _, err := c.Publish(ctx, faultImage.request(t, st)); err != nil {
			t.Fatal(err)
		}
		if n.Load() < 3 {
			t.Fatalf("the scripted answers were not all served (%d requests)", n.Load())
		}
	})
	t.Run("gives up", func(t *testing.T) {
		srv := startRegistry(t, regtest.Options{Wrap: faults(func(w http.ResponseWriter, r *http.Request) bool {
			if strings.Contains(r.URL.Path, "/blobs/") {
				w.WriteHeader(http.StatusServiceUnavailable)
				return true
			}
			return false
		})})
		st := newStore(t)
		c := newClient(t, st, Options{Registry: srv.Host, Retries: 2})
		_, err := c.Publish(ctx, faultImage.request(t, st))
		if err == nil || !strings.Contains(err.Error(), srv.Host) || !strings.Contains(err.Error(), "503") {
			t.Fatalf("error %v does not name the registry and the status", err)
		}
		t.Log(err)
	})
	t.Run("wait is Retry-After capped", func(t *testing.T) {
		st := newStore(t)
		resp := &http.Response{StatusCode: http.StatusTooManyRequests, Header: http.Header{"Retry-After": {"2"}}}
		for _, tc := range []struct{ max, want time.Duration }{{time.Second, time.Second}, {time.Minute, 2 * time.Second}} {
			c := newClient(t, st, Options{MinWait: time.Millisecond, MaxWait: tc.max})
			rt := c.http.Client.Transport.(*retry.Transport)
			if got, err := rt.Policy().Retry(0, resp, nil); err != nil || got != tc.want {
				t.Errorf("MaxWait %v: wait %v (%v), want %v", tc.max, got, err, tc.want)
			}
		}
	})
}

// tokenServer is a registry behind bearer tokens that expire: every token is
// refused once the registry has seen its first blob upload (the token expires
// mid-push), and tokens are only given for the docker config's credentials.
type tokenServer struct {
	user, pass string
	mu         sync.Mutex
	epoch      int
	issued     int
	badLogins  int
	realm      string
}

func (ts *tokenServer) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			u, p, ok := r.BasicAuth()
			ts.mu.Lock()
			defer ts.mu.Unlock()
			if !ok || u != ts.user || p != ts.pass {
				ts.badLogins++
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			ts.issued++
			json.NewEncoder(w).Encode(map[string]string{"token": fmt.Sprintf("tok-%d-%d", ts.epoch, ts.issued)})
			return
		}
		ts.mu.Lock()
		want := fmt.Sprintf("Bearer tok-%d-", ts.epoch)
		ok := strings.HasPrefix(r.Header.Get("Authorization"), want)
		if ok && isBlobUpload(r) && ts.epoch == 0 {
			ts.epoch++ // this token, and every other so far, expires now
		}
		ts.mu.Unlock()
		if !ok {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm=%q,service="test"`, ts.realm))
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func dockerConfig(t *testing.T, host, user, pass string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.json")
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	b, _ := json.Marshal(map[string]any{"auths": map[string]any{host: map[string]string{"auth": auth}}})
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSecurityRow11TokenExpiresMidPush: the token expires while blobs are
// uploading; strata authenticates again with the docker config's credentials
// and resends the whole body. With a wrong password the push fails, and the
// password appears in no error or event.
func TestSecurityRow11TokenExpiresMidPush(t *testing.T) {
	ctx := context.Background()
	const secret = "s3cret-pass-7f3a"
	ts := &tokenServer{user: "ci", pass: secret}
	srv := startRegistry(t, regtest.Options{Wrap: ts.wrap})
	ts.realm = srv.URL + "/token"
	st := newStore(t)
	var events bytes.Buffer
	c := newClient(t, st, Options{Registry: srv.Host, DockerConfig: dockerConfig(t, srv.Host, "ci", secret),
		Events: func(ev Event) { json.NewEncoder(&events).Encode(ev) }})
	if _, err := c.Publish(ctx, faultImage.request(t, st)); err != nil {
		t.Fatal(err)
	}
	if ts.epoch == 0 || ts.issued < 2 {
		t.Fatalf("the token never expired (epoch %d, %d tokens)", ts.epoch, ts.issued)
	}
	if _, err := tagOf(t, c, srv.Host+"/fault/probe", "1.0.0"); err != nil {
		t.Fatal(err)
	}

	wrong := newClient(t, newStore(t), Options{Registry: srv.Host, DockerConfig: dockerConfig(t, srv.Host, "ci", secret+"-wrong"),
		Events: func(ev Event) { json.NewEncoder(&events).Encode(ev) }})
	_, err := wrong.Publish(ctx, faultImage.request(t, wrong.c.store()))
	if err == nil || ts.badLogins == 0 {
		t.Fatalf("a wrong password was accepted: %v", err)
	}
	if strings.Contains(err.Error(), secret) || strings.Contains(events.String(), secret) {
		t.Fatalf("the password leaked: %v\n%s", err, events.String())
	}
	t.Log(err)
}

// TestSecurityRow12KilledBeforeTag: a push killed after its blobs and before
// its manifests and tags leaves no tag; the rerun uploads no blob again.
func TestSecurityRow12KilledBeforeTag(t *testing.T) {
	srv := startRegistry(t, regtest.Options{})
	dir := t.TempDir()
	for _, step := range []string{"blobs-pushed", "manifests-pushed"} {
		cmd := child(t, "publish", "STORE="+dir, "REGISTRY="+srv.Host, "KILL_AT="+step)
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ProcessState.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("child was not killed at %s: %v", step, err)
		}
		st, err := store.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		c := newClient(t, st, Options{Registry: srv.Host})
		if _, err := tagOf(t, c, srv.Host+"/fault/probe", "1.0.0"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("killed at %s: the tag exists: %v", step, err)
		}
		st.Close()
	}
	srv.Reset()
	if err := child(t, "publish", "STORE="+dir, "REGISTRY="+srv.Host).Run(); err != nil {
		t.Fatal(err)
	}
	if n, b := srv.BlobUploads(); n != 0 || b != 0 {
		t.Errorf("the rerun uploaded %d blobs (%d bytes) again", n, b)
	}
	st := newStore(t)
	c := newClient(t, st, Options{})
	if _, err := tagOf(t, c, srv.Host+"/fault/probe", "1.0.0"); err != nil {
		t.Fatal(err)
	}
}

// noneCommitted fails if a pull left anything of what failed: a tag, the
// bad blob or a partial one in the local layout, or a file in the out
// directory. (Other blobs that verified may stay: they are right, and a
// rerun need not fetch them again.)
func noneCommitted(t *testing.T, c *Client, ref, out string, bad digest.Digest) {
	t.Helper()
	r, _ := ParseRef(ref)
	dir, _ := c.LayoutDir(r)
	l, err := openLayout(dir, r.Name())
	if err != nil {
		t.Fatal(err)
	}
	if tags, _ := l.tags(context.Background()); len(tags) > 0 {
		t.Errorf("local layout tagged %v", tags)
	}
	if p, _ := l.blobPath(ocispec.Descriptor{Digest: bad}); bad != "" {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("local layout holds %s", bad)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, layoutIngest)); len(ents) > 0 {
		t.Errorf("local layout holds %d partial blobs", len(ents))
	}
	if ents, _ := os.ReadDir(out); len(ents) > 0 {
		t.Errorf("out directory holds %d entries", len(ents))
	}
}

// blobProxy starts a registry holding faultImage that serves the blob target
// by fetching it from srv and handing its bytes to serve; count tells how many
// times it did.
func blobProxy(t *testing.T, srv *regtest.Server, st *store.Store, target digest.Digest, serve func(w http.ResponseWriter, b []byte)) (proxy *regtest.Server, count *atomic.Int64) {
	t.Helper()
	count = new(atomic.Int64)
	proxy = startRegistry(t, regtest.Options{Wrap: faults(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+target.String()) {
			return false
		}
		resp, err := http.Get(srv.URL + r.URL.Path)
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		count.Add(1)
		serve(w, b)
		return true
	})})
	// The proxy serves everything else from its own storage: give it the
	// same content.
	if _, err := newClient(t, st, Options{Registry: proxy.Host}).Publish(context.Background(), faultImage.request(t, st)); err != nil {
		t.Fatal(err)
	}
	return proxy, count
}

// TestSecurityRow13WrongShortPaddedBytes: a registry that serves a blob with
// a flipped byte, short or padded fails the pull with a digest error, and
// nothing is kept or tagged.
func TestSecurityRow13WrongShortPaddedBytes(t *testing.T) {
	ctx := context.Background()
	target := digest.FromBytes(faultImage.files[1].content)
	for _, tc := range []struct {
		name  string
		alter func([]byte) []byte
	}{
		{"flipped", func(b []byte) []byte { b[len(b)/2] ^= 1; return b }},
		{"short", func(b []byte) []byte { return b[:len(b)-1] }},
		{"padded", func(b []byte) []byte { return append(b, 0) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startRegistry(t, regtest.Options{})
			st := newStore(t)
			c := newClient(t, st, Options{Registry: srv.Host})
			if _, err := c.Publish(ctx, faultImage.request(t, st)); err != nil {
				t.Fatal(err)
			}
			proxy, altered := blobProxy(t, srv, st, target, func(w http.ResponseWriter, b []byte) {
				w.Header().Del("Content-Length")
				w.WriteHeader(http.StatusOK)
				w.(http.Flusher).Flush() // chunked: no length to give the change away
				w.Write(tc.alter(b))
			})
			c2 := newClient(t, newStore(t), Options{})
			out := t.TempDir()
			ref := proxy.Host + "/fault/probe:1.0.0"
			_, err := c2.Pull(ctx, ref, PullOptions{OutDir: out})
			if !errors.Is(err, ErrDigest) || altered.Load() == 0 {
				t.Fatalf("pull: %v (altered %d)", err, altered.Load())
			}
			t.Log(err)
			noneCommitted(t, c2, ref, out, target)
		})
	}
}

// TestSecurityRow14OversizedOrMalformedManifest: an index of 100 MB is
// refused by its size before a byte of it is read; invalid JSON is a clear
// error; neither leaves anything behind.
func TestSecurityRow14OversizedOrMalformedManifest(t *testing.T) {
	ctx := context.Background()
	garbage := []byte("{this is not json")
	for _, tc := range []struct {
		name  string
		serve func(w http.ResponseWriter, r *http.Request)
		want  string
	}{
		{"oversized", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", ocispec.MediaTypeImageIndex)
			w.Header().Set("Docker-Content-Digest", digest.FromString("x").String())
			w.Header().Set("Content-Length", fmt.Sprint(100<<20))
			w.WriteHeader(http.StatusOK)
			if r.Method == http.MethodGet {
				zero := make([]byte, 1<<20)
				for range 100 {
					if _, err := w.Write(zero); err != nil {
						return
					}
				}
			}
		}, "over the"},
		{"invalid JSON", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", ocispec.MediaTypeImageIndex)
			w.Header().Set("Docker-Content-Digest", digest.FromBytes(garbage).String())
			w.Header().Set("Content-Length", fmt.Sprint(len(garbage)))
			w.WriteHeader(http.StatusOK)
			if r.Method == http.MethodGet {
				w.Write(garbage)
			}
		}, "invalid artifact"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var bodyBytes atomic.Int64
			var armed atomic.Bool
			srv := startRegistry(t, regtest.Options{Wrap: faults(func(w http.ResponseWriter, r *http.Request) bool {
				if !armed.Load() || !strings.Contains(r.URL.Path, "/manifests/") {
					return false
				}
				if r.Method == http.MethodGet {
					bodyBytes.Add(1)
				}
				tc.serve(w, r)
				return true
			})})
			st := newStore(t)
			if _, err := newClient(t, st, Options{Registry: srv.Host}).Publish(ctx, faultImage.request(t, st)); err != nil {
				t.Fatal(err)
			}
			armed.Store(true)
			c := newClient(t, newStore(t), Options{})
			out := t.TempDir()
			ref := srv.Host + "/fault/probe:1.0.0"
			_, err := c.Pull(ctx, ref, PullOptions{OutDir: out})
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("pull: %v", err)
			}
			if tc.name == "oversized" && bodyBytes.Load() > 0 {
				t.Errorf("the oversized index was downloaded")
			}
			t.Log(err)
			noneCommitted(t, c, ref, out, "")
			if _, err := c.Versions(ctx, ref); !errors.Is(err, ErrInvalid) {
				t.Errorf("versions: %v", err)
			}
		})
	}
}

// TestSecurityRow13CutContentLength: a blob whose body ends before its
// Content-Length (Go's HTTP client reports io.ErrUnexpectedEOF, not io.EOF)
// is an error, retried and then refused: it is never kept as the blob, and
// the version is not tagged in the local layout.
func TestSecurityRow13CutContentLength(t *testing.T) {
	ctx := context.Background()
	target := digest.FromBytes(faultImage.files[1].content)
	srv := startRegistry(t, regtest.Options{})
	st := newStore(t)
	if _, err := newClient(t, st, Options{Registry: srv.Host}).Publish(ctx, faultImage.request(t, st)); err != nil {
		t.Fatal(err)
	}
	proxy, cut := blobProxy(t, srv, st, target, func(w http.ResponseWriter, b []byte) {
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.WriteHeader(http.StatusOK)
		w.Write(b[:len(b)/2])
		w.(http.Flusher).Flush()
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
	})
	c := newClient(t, newStore(t), Options{})
	ref := proxy.Host + "/fault/probe:1.0.0"
	if p, err := c.Pull(ctx, ref, PullOptions{}); err == nil || cut.Load() == 0 {
		t.Fatalf("a pull whose blob was cut short: %v (cut %d times, files %+v)", err, cut.Load(), p)
	}
	noneCommitted(t, c, ref, t.TempDir(), target)
}

// TestSecurityRow07TwoProcessesOneVersion: two processes (two Clients, each
// with its own lock files' descriptors) publish two images into one version
// of a local layout; the second starts while the first is inside its
// read-merge-tag. The version's index ends up with both: neither merge is
// made from an index the other was about to replace.
func TestSecurityRow07TwoProcessesOneVersion(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	imgA := testImage{name: "a", version: "1.0.0", devices: []string{"dev/a"}, repo: "fleet/x", files: []testFile{{"a.squashfs", "squashfs", []byte("aaaa")}}}
	imgB := testImage{name: "b", version: "1.0.0", devices: []string{"dev/b"}, repo: "fleet/x", arch: "arm64", files: []testFile{{"b.squashfs", "squashfs", []byte("bbbb")}}}
	reqA, reqB := imgA.request(t, st), imgB.request(t, st)
	bWaits := make(chan struct{})
	cB := newClient(t, st, Options{hook: func(step string) {
		if step == "repo-locking" {
			close(bWaits)
		}
	}})
	bDone := make(chan error, 1)
	started := false
	cA := newClient(t, st, Options{hook: func(step string) {
		if step == "index-locked" && !started {
			// A is tagging its merged index: B starts now and must wait.
			started = true
			go func() { _, err := cB.Publish(ctx, reqB); bDone <- err }()
			<-bWaits
		}
	}})
	if _, err := cA.Publish(ctx, reqA); err != nil {
		t.Fatal(err)
	}
	if err := <-bDone; err != nil {
		t.Fatal(err)
	}
	h, err := cA.Versions(ctx, "fleet/x")
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Versions) != 1 || !slices.Equal(h.Versions[0].Images, []string{"a", "b"}) {
		t.Fatalf("versions after two concurrent publishes: %+v, want 1.0.0 with images a and b", h.Versions)
	}
}
