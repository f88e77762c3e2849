//go:build unix && !linux

package supervisor

import "syscall"

// sysProcAttr puts the child in its own process group (Ctrl-C reaches only lab, which
// stops children in order).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
