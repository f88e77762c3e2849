package control_test

import (
	"context"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"log/slog"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"microlab/services/platform/bus"
	"microlab/services/platform/control"
	"microlab/services/platform/testenv"
)

// Poison for a service that consumes no messages is refused like any bad fault: an
// InvalidError with one line naming the services that have a queue, and nothing stored,
// recorded or published. (Before, the control plane published into <service>.events
// anyway: with no such queue the broker returned the messages unroutable and the caller
// got a 500; here the test declares the queue, so a publish would land in it and count.)
// A service with a queue gets its messages, through the same Plane.
func TestPoisonNeedsAQueue(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store := openStore(t, ctx)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	amqpURL := testenv.VHost(t)
	conn, err := bus.Dial(ctx, amqpURL, "poison-test", log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	plane := &control.Plane{Store: store, Pub: bus.NewPublisher(conn, log)}
	ch, err := conn.Channel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ch.Close() })
	depth := func(svc string) int {
		t.Helper()
		q, err := ch.QueueDeclare(svc+".events", false, true, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		return q.Messages
	}
	for _, svc := range control.FaultServices {
		depth(svc) // every <service>.events exists: nothing published is lost unseen
	}

	for _, svc := range []string{"gateway", "users", "catalog"} {
		_, _, err := plane.AddFault(ctx, control.FaultSpec{Service: svc, Kind: control.FaultPoison, Value: "2"}, "test")
		want := "poison: " + svc + " consumes no messages; pick a service with a queue: orders, payments, inventory, shipping, notifications"
		if !control.IsInvalid(err) || err.Error() != want {
			t.Errorf("poison on %s: %v, want the InvalidError %q", svc, err, want)
		}
		if n := depth(svc); n != 0 {
			t.Errorf("poison on %s: %d messages were published into %s.events, want none", svc, n, svc)
		}
	}
	if timeline, err := store.Changes(ctx, 10); err != nil || len(timeline) != 0 {
		t.Errorf("refused poison left changes on the timeline: %+v %v", timeline, err)
	}
	if faults, err := store.Faults(ctx); err != nil || len(faults) != 0 {
		t.Errorf("refused poison left faults: %+v %v", faults, err)
	}

	if _, _, err := plane.AddFault(ctx, control.FaultSpec{Service: "payments", Kind: control.FaultPoison, Value: "2"}, "test"); err != nil {
		t.Fatalf("poison on payments: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for depth("payments") != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("payments.events holds %d messages after poison=2, want 2", depth("payments"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// QueueServices is the services that declare a queue: those whose package (under
// services/, beside platform and contracts) builds a bus.Queue. A service that gains a
// queue, or loses its last one, fails here until the list follows.
func TestQueueServicesAreTheServicesWithAQueue(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	services := filepath.Join(filepath.Dir(file), "..", "..")
	var found []string
	dirs, err := filepath.Glob(filepath.Join(services, "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range dirs {
		name := filepath.Base(dir)
		if name == "platform" || name == "contracts" {
			continue
		}
		queue := false
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
			if err != nil {
				return err
			}
			ast.Inspect(f, func(n ast.Node) bool {
				if lit, ok := n.(*ast.CompositeLit); ok {
					if sel, ok := lit.Type.(*ast.SelectorExpr); ok && sel.Sel.Name == "Queue" {
						if pkg, ok := sel.X.(*ast.Ident); ok && pkg.Name == "bus" {
							queue = true
						}
					}
				}
				return !queue
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if queue {
			found = append(found, name)
		}
	}
	if len(found) == 0 {
		t.Fatalf("no service under %s declares a bus.Queue: the scan is wrong", services)
	}
	slices.Sort(found)
	want := slices.Sorted(slices.Values(control.QueueServices))
	if !slices.Equal(found, want) {
		t.Errorf("services declaring a bus.Queue: %v; control.QueueServices: %v", found, want)
	}
	for _, svc := range control.QueueServices {
		if !slices.Contains(control.FaultServices, svc) {
			t.Errorf("%s has a queue but is not one of control.FaultServices", svc)
		}
	}
}
