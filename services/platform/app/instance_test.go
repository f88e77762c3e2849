package app

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestInstanceID(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		host      string
		pid       int
		contained bool
		want      string
	}{
		{"3f2a1b2c3d4e", 1, true, "payments-3f2a1b2c3d4e"},          // compose: the container's id
		{"3f2a1b2c3d4e", 1, false, "payments-3f2a1b2c3d4e"},         // PID 1 alone says container
		{"payments-7d9f8c-x2x4z", 1, true, "payments-7d9f8c-x2x4z"}, // a pod: already its name
		{"3f2a1b2c3d4e", 7, true, "payments-3f2a1b2c3d4e-7"},        // under an init: host and pid
		{"alices-laptop", 4242, false, "payments-4242"},             // natively by hand
		{"", 1, true, "payments-1"},                                 // no host name
		{"", 4242, false, "payments-4242"},
	} {
		if got := instanceID("payments", tt.host, tt.pid, tt.contained); got != tt.want {
			t.Errorf("instanceID(payments, %q, %d, %v) = %q, want %q", tt.host, tt.pid, tt.contained, got, tt.want)
		}
	}
	if !inContainer(func(k string) string { return map[string]string{"KUBERNETES_SERVICE_HOST": "10.0.0.1"}[k] }) {
		t.Error("KUBERNETES_SERVICE_HOST set: want in a container")
	}
}

// LoadConfig keeps an INSTANCE_ID it is given (lab up's "payments-2") and otherwise
// names the process by DefaultInstanceID: two processes of one service on this machine
// (each a run of this test binary) get different names, both "<service>-…" as a
// per-instance fault requires.
func TestLoadConfigInstanceID(t *testing.T) {
	t.Parallel()
	if os.Getenv("INSTANCE_ID_CHILD") == "1" {
		return // the child's work is in TestInstanceIDChild
	}
	load := func(env map[string]string) Base {
		t.Helper()
		var b Base
		if err := LoadConfig(func(k string) string { return env[k] }, Options{Name: "payments", DefaultPort: 8104},
			&b, func() *Base { return &b }); err != nil {
			t.Fatal(err)
		}
		return b
	}
	if got := load(map[string]string{"INSTANCE_ID": "payments-2"}).InstanceID; got != "payments-2" {
		t.Fatalf("INSTANCE_ID=payments-2 became %q", got)
	}

	ids := map[string]bool{}
	for range 2 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestInstanceIDChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), "INSTANCE_ID_CHILD=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child: %v\n%s", err, out)
		}
		_, id, ok := strings.Cut(string(out), "instance=")
		if id, _, _ = strings.Cut(id, "\n"); !ok || !strings.HasPrefix(id, "payments-") {
			t.Fatalf("child printed no payments-… instance id:\n%s", out)
		}
		ids[id] = true
	}
	if len(ids) != 2 {
		t.Fatalf("two processes got one instance id: %v", ids)
	}
}

// TestInstanceIDChild prints the instance id a process gets without INSTANCE_ID; it does
// something only as TestLoadConfigInstanceID's child.
func TestInstanceIDChild(t *testing.T) {
	if os.Getenv("INSTANCE_ID_CHILD") != "1" {
		t.Skip("run by TestLoadConfigInstanceID")
	}
	var b Base
	if err := LoadConfig(func(string) string { return "" }, Options{Name: "payments"}, &b, func() *Base { return &b }); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("instance=%s\n", b.InstanceID)
}
