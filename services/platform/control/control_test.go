package control_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"microlab/services/platform/bus"
	"microlab/services/platform/control"
	"microlab/services/platform/testenv"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		key, value, want, err string
	}{
		{"saga.mode", "orchestration", "orchestration", ""},
		{"saga.mode", "chaos", "", "want one of"},
		{"outbox.enabled", "FALSE", "false", ""},
		{"inbox.enabled", "maybe", "", "want true or false"},
		{"saga.step_timeout", "2s", "2s", ""},
		{"saga.step_timeout", "0s", "", "between"},
		{"nope", "1", "", "unknown setting"},
	} {
		got, err := control.Validate(tc.key, tc.value)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || strings.Contains(err.Error(), "\n") {
				t.Errorf("%s=%s: want one-line error containing %q, got %v", tc.key, tc.value, tc.err, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s=%s: got %q, %v", tc.key, tc.value, got, err)
		}
	}
}

// A change stored and announced reaches a watching instance quickly; a change whose
// announcement is lost still arrives with the periodic re-read.
func TestSetAnnounceWatch(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	store, err := control.OpenStore(ctx, testenv.DB(t, testenv.Name("t_lab_")))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	conn, err := bus.Dial(ctx, testenv.VHost(t), "control-test", log)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	changes := make(chan control.Settings, 10)
	w, err := control.NewWatcher(ctx, store, log, func(_, s control.Settings) { changes <- s })
	if err != nil {
		t.Fatal(err)
	}
	w.Resync = time.Hour // prove the announcement alone is enough
	go func() { _ = w.Run(ctx, conn) }()
	if w.Current().SagaMode() != "choreography" || !w.Current().Outbox() {
		t.Fatalf("defaults: %+v", w.Current())
	}
	time.Sleep(300 * time.Millisecond) // let the exclusive queue bind
	ch, err := store.Set(ctx, control.SagaMode, "orchestration", "test")
	if err != nil {
		t.Fatal(err)
	}
	if ch.Old != "choreography" || ch.New != "orchestration" || ch.Revision == 0 {
		t.Fatalf("change %+v", ch)
	}
	if err := control.Announce(ctx, bus.NewPublisher(conn, log), ch); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-changes:
		if s.SagaMode() != "orchestration" {
			t.Fatalf("applied %+v", s.Values)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("announced change not applied")
	}
	list, err := store.List(ctx)
	if err != nil || len(list) != len(control.Defs()) {
		t.Fatalf("list: %v %v", list, err)
	}
	hist, err := store.Changes(ctx, 10)
	if err != nil || len(hist) != 1 || hist[0].Key != control.SagaMode {
		t.Fatalf("history: %v %v", hist, err)
	}
	if _, err := store.Set(ctx, "saga.mode", "sideways", "test"); err == nil {
		t.Fatal("bad value accepted")
	}
}
