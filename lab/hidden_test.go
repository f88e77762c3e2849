package main

import (
	"context"
	"strings"
	"testing"

	"microlab/lab/stack"
	"microlab/services/platform/control"
	"microlab/services/platform/testenv"
)

// `lab fault list` reads the control store directly: a fault a diagnosis holds hidden
// is listed as an exercise's hidden fault, not where it is nor how much; revealed, it
// is listed as any other.
func TestFaultListHidesADiagnosis(t *testing.T) {
	t.Parallel()
	prefix := testenv.Name("h") + "_"
	env := map[string]string{"LAB_DB_PREFIX": prefix}
	_, store := testenv.LabDB(t, prefix+stack.LabDB)
	ctx := context.Background()
	f, _, err := store.AddFault(ctx, control.FaultSpec{Service: "inventory", Kind: "latency", Value: "800ms", Hidden: true},
		"exercise 13-find-the-slow-service")
	if err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runLab(t, env, "fault", "list")
	if code != exitOK || !strings.Contains(stdout, control.HiddenFaultText) || strings.Contains(stdout, "inventory") ||
		strings.Contains(stdout, "800ms") || !strings.Contains(stdout, "exercise 13-find-the-slow-service") {
		t.Errorf("fault list while hidden: exit %d\n%s%s", code, stdout, stderr)
	}
	if _, err := store.RevealFaults(ctx, []int64{f.ID}, "exercise 13-find-the-slow-service"); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = runLab(t, env, "fault", "list")
	if code != exitOK || strings.Contains(stdout, control.HiddenFaultText) || !strings.Contains(stdout, "inventory") ||
		!strings.Contains(stdout, "latency=800ms") {
		t.Errorf("fault list once revealed: exit %d\n%s%s", code, stdout, stderr)
	}
}
