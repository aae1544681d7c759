package sandbox

import (
	"slices"
	"strings"
)

//go:generate go run gensyscalls.go

// sysArch is an architecture the seccomp filters know: its audit number and
// its system calls by name. The tables (zsyscalls.go) are generated from
// go-seccomp-bpf's, which follow Linux, and TestSyscallTables checks that they
// still agree. They are static data, where the library's are maps built at
// start-up: a millisecond of every strata process and of every run of the
// sandbox companion, most of which never assemble a filter.
type sysArch struct {
	Name  string
	ID    uint32 // AUDIT_ARCH_*
	calls []sysCall
}

// sysCall is a system call's name and number; a table is sorted by name.
type sysCall struct {
	name string
	nr   int
}

// nr returns the number of the system call name, if the architecture has it.
func (a *sysArch) nr(name string) (int, bool) {
	i, ok := slices.BinarySearchFunc(a.calls, name, func(c sysCall, n string) int { return strings.Compare(c.name, n) })
	if !ok {
		return 0, false
	}
	return a.calls[i].nr, true
}
