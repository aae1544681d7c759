package store

import (
	osexec "os/exec"

	"golang.org/x/sys/unix"
)

// ENOSPC returns the errno a full disk gives.
func ENOSPC() error { return unix.ENOSPC }

// exec_ runs a command and returns its combined output.
func exec_(name string, args ...string) ([]byte, error) {
	return osexec.Command(name, args...).CombinedOutput()
}
