package testenv

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The suite's resource budget. A lab is about ten -race processes; on a 2-core machine
// a handful of them starting at once, or one of them under load beside others, makes
// every deadline a coin toss. So labs take slots of a machine-wide budget before they
// start: LabCapacity slots in all (one per core unless MICROLAB_TEST_LABS says
// otherwise), one for a lab that is mostly idle, Heavy of them (all, on two cores) for a
// lab that a test loads to saturation. The slots are flock(2)ed files, so the budget
// holds across the test binaries `go test -p N` runs side by side, and a crashed test
// process releases its slots with its file descriptors.

// LabCapacity is how many light labs may run at once on this machine.
func LabCapacity() int {
	if n, err := strconv.Atoi(os.Getenv("MICROLAB_TEST_LABS")); err == nil && n > 0 {
		return n
	}
	return max(1, runtime.NumCPU())
}

// Weights of HoldLab.
const (
	Light = 1 // a lab that serves a few requests at a time
	Heavy = 2 // a lab a test drives at its limit (load, chaos): it gets a core pair to itself
)

// HoldLab blocks until weight slots of the machine's lab budget are free, holds them
// until the test ends and logs how long it waited. weight is capped at LabCapacity.
//
// A test holding slots must not wait for anything that tests waiting for slots hold: in
// particular its subtests must not call t.Parallel (they would wait for a parallel-test
// slot, and the tests blocked here hold those).
func HoldLab(t testing.TB, weight int) {
	t.Helper()
	capacity := LabCapacity()
	weight = min(max(weight, 1), capacity)
	dir, err := budgetDir()
	if err != nil {
		t.Fatalf("lab budget: %v", err)
	}
	start := time.Now()
	var held []*os.File
	release := func() {
		for _, f := range held {
			_ = f.Close() // closing the descriptor drops its lock
		}
	}
	open := func(i int) *os.File {
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("slot-%d", i)), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			release()
			t.Fatalf("lab budget: %v", err)
		}
		return f
	}
	if weight == capacity {
		// Every slot, taken in order: two heavy labs never hold one each and wait for
		// the other's.
		for i := range capacity {
			f := open(i)
			if err := flock(f, true); err != nil {
				_ = f.Close()
				release()
				t.Fatalf("lab budget: %v", err)
			}
			held = append(held, f)
		}
	} else {
		// Any weight free slots; a lab holding some never waits for more (it gives
		// them back and tries again), so light labs cannot deadlock each other.
		for len(held) < weight {
			for _, i := range rand.Perm(capacity) {
				if len(held) == weight {
					break
				}
				f := open(i)
				if err := flock(f, false); err != nil {
					_ = f.Close()
					continue
				}
				held = append(held, f)
			}
			if len(held) < weight {
				release()
				held = nil
				time.Sleep(100*time.Millisecond + rand.N(100*time.Millisecond))
			}
		}
	}
	if waited := time.Since(start); waited > time.Second {
		t.Logf("lab budget: waited %s for %d of %d slots", waited.Round(time.Millisecond), weight, capacity)
	}
	t.Cleanup(release)
}

// StartLock serialises what must not happen in two labs at once on this machine —
// choosing free ports and binding them, and the CPU-heavy start of ten -race processes —
// across test binaries. It blocks until no other lab is starting; call the returned
// function once started (the test's end calls it too).
func StartLock(t testing.TB) (unlock func()) {
	t.Helper()
	dir, err := budgetDir()
	if err != nil {
		t.Fatalf("lab start lock: %v", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "start.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatalf("lab start lock: %v", err)
	}
	if err := flock(f, true); err != nil {
		_ = f.Close()
		t.Fatalf("lab start lock: %v", err)
	}
	unlock = sync.OnceFunc(func() { _ = f.Close() })
	t.Cleanup(unlock)
	return unlock
}

func budgetDir() (string, error) {
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("microlab-test-slots-%d", os.Getuid()))
	return dir, os.MkdirAll(dir, 0o755)
}

// flock takes an exclusive lock on f, waiting for it if wait is true.
func flock(f *os.File, wait bool) error {
	how := syscall.LOCK_EX
	if !wait {
		how |= syscall.LOCK_NB
	}
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if err != syscall.EINTR {
			return err
		}
	}
}
