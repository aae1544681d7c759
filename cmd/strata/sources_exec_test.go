package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestRemoteSourcesExec fetches an https source from a loopback TLS server (trusted
// through SSL_CERT_FILE, as a user's private CA would be) and a commit of a local
// git repository, and builds an image from both.
func TestRemoteSourcesExec(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	payload := []byte("fetched over https\n")
	sum := sha256.Sum256(payload)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/payload.txt" {
			http.NotFound(w, r)
			return
		}
		w.Write(payload)
	}))
	defer srv.Close()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	must(t, os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644))

	repo := t.TempDir()
	gitRun := func(args ...string) string {
		cmd := exec.Command("git", args...)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com",
			"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com", "GIT_CONFIG_GLOBAL=/dev/null")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	gitRun("init", "-q")
	must(t, os.WriteFile(filepath.Join(repo, "hello.txt"), []byte("first\n"), 0o644))
	gitRun("add", ".")
	gitRun("commit", "-qm", "first")
	commit := gitRun("rev-parse", "HEAD")
	// A later commit must not leak into the build: the source pins the first.
	must(t, os.WriteFile(filepath.Join(repo, "hello.txt"), []byte("second\n"), 0o644))
	gitRun("commit", "-qam", "second")

	spec := func(url string) string {
		return fmt.Sprintf(`package test

sources: dl: {url: %q, sha256: %q}
sources: repo: {git: %q, commit: %q}

images: remote: {
	version: "1"
	stages: [{
		type: "strata.run"
		inputs: {dl: "sources.dl", repo: "sources.repo"}
		options: command: ["/bin/sh", "-c", "cp /run/strata/inputs/dl /run/strata/tree/dl && cp -r /run/strata/inputs/repo /run/strata/tree/repo"]
	}]
	outputs: [{type: "tar"}]
}
`, url, hex.EncodeToString(sum[:]), repo, commit)
	}
	ws := writeWS(t, spec(srv.URL+"/payload.txt"))
	cache := t.TempDir()
	cmd := strataCmd(t, ws, cache, "--output", "json", "build")
	cmd.Env = append(cmd.Env, "SSL_CERT_FILE="+caFile)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("build: %v\n%s%s", err, out.String(), errb.String())
	}
	jb := parseJSONBuild(t, cliResult{0, out.String(), errb.String()})
	tarPath := jb.artifact(t, "remote.tar").Path
	for file, want := range map[string]string{"dl": string(payload), "repo/hello.txt": "first\n"} {
		got, err := exec.Command("tar", "-xOf", tarPath, file).Output()
		if err != nil || string(got) != want {
			t.Errorf("%s in the image = %q (%v), want %q", file, got, err, want)
		}
	}
	list, _ := exec.Command("tar", "-tf", tarPath).Output()
	if strings.Contains(string(list), "repo/.git") {
		t.Errorf("the git source kept its .git directory:\n%s", list)
	}

	// A missing file on the server is a clear error naming the source and status.
	ws404 := writeWS(t, spec(srv.URL+"/missing.txt"))
	cmd = strataCmd(t, ws404, t.TempDir(), "build", "sources.dl")
	cmd.Env = append(cmd.Env, "SSL_CERT_FILE="+caFile)
	b, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(b), "sources.dl") || !strings.Contains(string(b), "404") {
		t.Errorf("404: err %v, output lacks the source or the status:\n%s", err, b)
	}
	// Without trusting the server's certificate, the fetch is refused.
	r := runCLI(t, ws, t.TempDir(), "build", "sources.dl")
	if r.code != 1 || !strings.Contains(r.stderr, "certificate") {
		t.Errorf("untrusted TLS: exit %d\n%s", r.code, r.stderr)
	}
}
