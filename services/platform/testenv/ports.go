package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// ClaimPorts returns a function that claims TCP ports for the rest of t: a flock(2)ed
// file per port, shared by every test binary on this machine. A lab checks that its
// ports are free when it starts; a claim also keeps them its own while it runs, through
// the moments a test stops one of its services and the port is free for anyone. Without
// it, another lab starting then could pick an offset that lands on that port, and the
// restarted service would find its port taken by a stranger that answers in its place.
//
// The claim func returns false, holding nothing, when any of the ports is claimed by
// another test already.
func ClaimPorts(t testing.TB) func(ports []int) bool {
	t.Helper()
	dir, err := budgetDir()
	if err != nil {
		t.Fatalf("port claims: %v", err)
	}
	return func(ports []int) bool {
		var held []*os.File
		release := func() {
			for _, f := range held {
				_ = f.Close() // closing the descriptor drops its lock
			}
		}
		for _, p := range ports {
			f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("port-%d", p)), os.O_CREATE|os.O_RDWR, 0o644)
			if err != nil {
				release()
				t.Fatalf("port claims: %v", err)
			}
			if err := flock(f, false); err != nil {
				_ = f.Close()
				release()
				return false
			}
			held = append(held, f)
		}
		t.Cleanup(release)
		return true
	}
}
