package compilecache

import (
	"errors"
	"os"
	"syscall"
)

// sendFile copies size bytes of src from off to dst with sendfile(2). handled is
// false, with nothing written, when the kernel cannot do it for these files.
func sendFile(dst, src *os.File, off, size int64) (written int64, handled bool, err error) {
	dc, err := dst.SyscallConn()
	if err != nil {
		return 0, false, nil
	}
	sc, err := src.SyscallConn()
	if err != nil {
		return 0, false, nil
	}
	var serr error
	cerr := sc.Read(func(sfd uintptr) bool {
		werr := dc.Write(func(dfd uintptr) bool {
			for written < size {
				chunk := size - written
				if chunk > 1<<30 {
					chunk = 1 << 30
				}
				n, err := syscall.Sendfile(int(dfd), int(sfd), &off, int(chunk))
				if n > 0 {
					written += int64(n)
				}
				switch {
				case errors.Is(err, syscall.EINTR):
					continue
				case errors.Is(err, syscall.EAGAIN):
					// A non-blocking destination (a pipe in the runtime's poller):
					// let the poller wait for it.
					return false
				case err != nil:
					serr = err
					return true
				case n == 0:
					serr = errors.New("sendfile: unexpected end of file")
					return true
				}
			}
			return true
		})
		if werr != nil && serr == nil {
			serr = werr
		}
		return true
	})
	if cerr != nil && serr == nil {
		serr = cerr
	}
	if serr != nil && written == 0 && (errors.Is(serr, syscall.EINVAL) || errors.Is(serr, syscall.ENOSYS) || errors.Is(serr, syscall.EOPNOTSUPP)) {
		return 0, false, nil
	}
	if serr != nil {
		return written, true, &os.PathError{Op: "sendfile", Path: dst.Name(), Err: serr}
	}
	return written, true, nil
}
