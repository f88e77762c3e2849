package testenv_test

import (
	"testing"

	"microlab/services/platform/testenv"
)

// A claimed port is refused to every other claim (the lock is the file's, so it holds
// between test binaries as between tests), a refused claim holds nothing, and a claim
// ends with its test.
func TestClaimPorts(t *testing.T) {
	ports := []int{31901, 31902}
	t.Run("holder", func(t *testing.T) {
		if !testenv.ClaimPorts(t)(ports) {
			t.Fatal("first claim refused")
		}
		other := testenv.ClaimPorts(t)
		if other([]int{31903, 31902}) {
			t.Fatal("a port claimed already was claimed again")
		}
		if !other([]int{31903}) {
			t.Fatal("a refused claim kept 31903")
		}
	})
	if !testenv.ClaimPorts(t)(append(ports, 31903)) {
		t.Fatal("claims outlived their test")
	}
}
