package output

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/strata-build/strata/executor/tree"
)

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

// runTool runs an external tool with a minimal, fixed environment (PATH, LC_ALL=C and
// env) so that host settings such as SOURCE_DATE_EPOCH cannot change its output. It
// returns the tool's stderr and, on failure, a *ToolError with the tail of its output.
//
// The tool runs in a process group of its own that dies with strata: the kernel
// sends it SIGKILL when strata exits, even by kill -9 (an orphaned mksquashfs
// would otherwise keep writing for minutes), and cancelling ctx kills the whole
// group, helpers the tool started included.
func runTool(ctx context.Context, env []string, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C"}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	stdout := &tailBuffer{max: 16 << 10}
	stderr := &tailBuffer{max: 64 << 10}
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = ctxErr
		}
		msg := tail(stderr.b)
		if msg == "" {
			msg = tail(stdout.b)
		}
		return stderr.b, &ToolError{Tool: name, Err: err, Stderr: msg}
	}
	return stderr.b, nil
}

// derivedUUID returns an RFC 9562 version 8 UUID derived from the tree, the format,
// the epoch and a purpose label, so a filesystem's identifiers are fixed by its content.
func derivedUUID(t *tree.Tree, opts Options, purpose string) (string, error) {
	td, err := t.Digest()
	if err != nil {
		return "", err
	}
	// The label took Name's place here when it became its own field.
	h := sha256.Sum256(fmt.Appendf(nil, "strata output uuid\x00%s\x00%s\x00%d\x00%s\x00%s",
		opts.Format, td, opts.SourceDateEpoch, opts.Label, purpose))
	u := h[:16]
	u[6] = u[6]&0x0f | 0x80 // version 8
	u[8] = u[8]&0x3f | 0x80 // RFC 9562 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16]), nil
}
