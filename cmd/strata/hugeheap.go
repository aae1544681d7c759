package main

import (
	"os"
	"runtime"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// hugeHeapBytes is how much of the heap hugeHeap asks transparent huge pages
// for: what compiling a workspace of a hundred images and building it use.
const hugeHeapBytes = 32 << 20

// hugeHeap, called before a workspace is evaluated (once: a cache hit, like a
// no-op build, does not pay for it), maps the next hugeHeapBytes of the Go
// heap and asks the kernel to back them with transparent huge pages
// (madvise(MADV_HUGEPAGE), which hosts whose THP mode is "madvise" honour
// only for flagged ranges). On the VMs CI
// runs on, a first touch of a 4 KiB page costs 13 µs, and evaluating a
// workspace allocates tens of megabytes in a fresh process: a third of a
// compile was page faults. Growing into 2 MiB pages costs one fault each.
// The range is reserved by allocating it and given back to the heap by a
// collection while it is still small; untouched, it costs no memory.
// GODEBUG=disablethp=1, the Go runtime's own switch, turns it off.
var hugeHeap = sync.OnceFunc(func() {
	if strings.Contains(os.Getenv("GODEBUG"), "disablethp=1") {
		return
	}
	// A large allocation is page-aligned and untouched; the kernel backs
	// the 2 MiB-aligned parts of the flagged range with huge pages. Advice
	// only: a kernel without THP refuses it, and then nothing changes.
	buf := make([]byte, hugeHeapBytes)
	unix.Madvise(buf, unix.MADV_HUGEPAGE)
	runtime.GC()
})
