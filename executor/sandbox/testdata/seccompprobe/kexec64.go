//go:build amd64 || arm64

package main

import "golang.org/x/sys/unix"

var sysKexecFileLoad = int(unix.SYS_KEXEC_FILE_LOAD)
