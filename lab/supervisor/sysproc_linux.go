package supervisor

import "syscall"

// sysProcAttr puts the child in its own process group (Ctrl-C reaches only lab, which
// stops children in order) and has the kernel send it SIGTERM if lab itself dies
// without cleaning up (kill -9 of lab), so no orphan keeps a port busy.
//
// Caveat: Pdeathsig fires when the forking OS thread exits, not the process. Go only
// ends a thread when a goroutine exits while locked to it (runtime.LockOSThread), which
// lab does not do; were it to happen, the child would get a spurious SIGTERM and be
// restarted like any crashed process.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
