package stack

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// Port claims: a lab that chooses its port offset (lab bench's and lab chaos's labs of
// their own, every lab the tests start) claims the ports it found free by flock(2)ing
// one file per port in a directory all of them share, so that two labs choosing at the
// same moment never pick the same ports: the kernel only tells each that a port is free
// now, not that nobody is about to take it. The directory and the file names are the
// ones services/platform/testenv's ClaimPorts uses (TestClaimsAgreeWithTestenv holds
// the two together; testenv cannot import lab/stack).
func claimDir() (string, error) {
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("microlab-test-slots-%d", os.Getuid()))
	return dir, os.MkdirAll(dir, 0o755)
}

var (
	claimsMu sync.Mutex
	claimed  []*os.File // held for the life of the process: its labs' ports
)

// claimForProcess claims ports until the process exits (false: one is claimed by
// another lab). A process that cannot make the directory claims nothing, as before.
func claimForProcess(ports []int) bool {
	dir, err := claimDir()
	if err != nil {
		return true
	}
	var held []*os.File
	for _, p := range ports {
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("port-%d", p)), os.O_CREATE|os.O_RDWR, 0o644)
		if err == nil {
			err = flockNB(f)
		}
		if err != nil {
			if f != nil {
				_ = f.Close()
			}
			for _, h := range held {
				_ = h.Close() // closing the descriptor drops its lock
			}
			return false
		}
		held = append(held, f)
	}
	claimsMu.Lock()
	claimed = append(claimed, held...)
	claimsMu.Unlock()
	return true
}

func flockNB(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err != syscall.EINTR {
			return err
		}
	}
}
