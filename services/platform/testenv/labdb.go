package testenv

import (
	"context"
	"testing"
	"time"

	"microlab/services/platform/control"
)

// LabDB provisions a lab database of the test's own under name (as DB does: a role of
// the same name, both dropped when the test ends), migrates the control plane's tables
// into it and opens a settings store on it, closed when the test ends. It returns the
// database's URL (for LAB_DATABASE_URL, or the CLI, which find it already there) and
// the store.
func LabDB(t testing.TB, name string) (string, *control.Store) {
	t.Helper()
	url := DB(t, name)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := control.OpenStore(ctx, url) // migrates
	if err != nil {
		t.Fatalf("lab database %s: %v", name, err)
	}
	t.Cleanup(store.Close) // before DB's drop: cleanups run last in, first out
	return url, store
}
