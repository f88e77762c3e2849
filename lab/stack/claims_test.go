package stack

import (
	"testing"

	"microlab/services/platform/testenv"
)

// FreeOffset's claims and the tests' (testenv.ClaimPorts) are one set: a port either
// claimed is refused by the other, so lab bench's and lab chaos's own labs never take
// ports a test's lab holds, nor the reverse (the suite once failed on a Jaeger port
// taken between a test's claim and its bind).
func TestClaimsAgreeWithTestenv(t *testing.T) {
	t.Parallel()
	a, b := 100000+testenv.FreePort(t), 200000+testenv.FreePort(t) // claim files no real port has
	if !claimForProcess([]int{a}) {
		t.Fatalf("port %d claimed already", a)
	}
	if testenv.ClaimPorts(t)([]int{a}) {
		t.Errorf("testenv claimed port %d, which FreeOffset's claim holds", a)
	}
	if !testenv.ClaimPorts(t)([]int{b}) {
		t.Fatalf("port %d claimed already", b)
	}
	if claimForProcess([]int{b}) {
		t.Errorf("FreeOffset's claim took port %d, which a test's lab holds", b)
	}
	off, err := FreeOffset(nil)
	if err != nil {
		t.Fatal(err)
	}
	if testenv.ClaimPorts(t)([]int{JaegerQueryPort + off}) {
		t.Errorf("offset %d from FreeOffset: its Jaeger port is not claimed", off)
	}
}
