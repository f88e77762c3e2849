package control_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"microlab/services/contracts"
	"microlab/services/platform/control"
	"microlab/services/platform/testenv"
)

// A hidden fault (a diagnosis's) acts as any other — the services find it in the
// snapshot they read — but its changes on the timeline, and so in the announcements,
// say only that an exercise holds a hidden fault, until it is revealed: then the
// reveal names it, and clearing it names it too. The API's JSON cannot ask for one.
func TestHiddenFault(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store := openStore(t, ctx)
	b := testenv.Dial(t, testenv.VHost(t))
	anns := b.Tap(t, contracts.ExchangeControl, "")
	plane := &control.Plane{Store: store, Pub: b.Pub}
	announced := func() string {
		t.Helper()
		select {
		case m := <-anns:
			return string(m.Body)
		case <-time.After(30 * time.Second):
			t.Fatal("no announcement on lab.control")
		}
		return ""
	}

	f, ch, err := plane.AddFault(ctx, control.FaultSpec{Service: "catalog", Kind: "latency", Value: "800ms", On: "http", Hidden: true}, "exercise 13-x")
	if err != nil {
		t.Fatal(err)
	}
	if !f.Hidden || ch.Key != "fault (hidden)" || ch.New != control.HiddenFaultText || strings.Contains(ch.Key+ch.New, "catalog") {
		t.Errorf("a hidden fault's change says where it is: %+v (fault %+v)", ch, f)
	}
	if a := announced(); strings.Contains(a, "catalog") || strings.Contains(a, "800ms") || !strings.Contains(a, control.HiddenFaultText) {
		t.Errorf("lab.control announced where the hidden fault is: %s", a)
	}
	s, err := store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.FaultsFor("catalog", "catalog-1", time.Now()); len(got) != 1 || !got[0].Hidden || got[0].Value != "800ms" {
		t.Errorf("catalog-1 sees %+v, want the hidden latency (it must act)", got)
	}

	chs, err := plane.RevealFaults(ctx, []int64{f.ID}, "exercise 13-x")
	if err != nil || len(chs) != 1 || chs[0].Key != "fault catalog" || chs[0].Old != control.HiddenFaultText ||
		!strings.Contains(chs[0].New, "latency=800ms on=http") {
		t.Fatalf("reveal: %+v, %v", chs, err)
	}
	if a := announced(); !strings.Contains(a, "fault catalog") || !strings.Contains(a, "latency=800ms") {
		t.Errorf("the reveal's announcement does not name the fault: %s", a)
	}
	if chs, err := plane.RevealFaults(ctx, []int64{f.ID}, "exercise 13-x"); err != nil || len(chs) != 0 {
		t.Errorf("a second reveal changed something: %+v, %v", chs, err)
	}
	fs, err := store.Faults(ctx)
	if err != nil || len(fs) != 1 || fs[0].Hidden {
		t.Fatalf("after the reveal: %+v, %v", fs, err)
	}

	// Cleared while hidden: the change does not say what it was.
	g, _, err := plane.AddFault(ctx, control.FaultSpec{Service: "payments", Kind: "error_rate", Value: "1", On: "messages", Hidden: true}, "exercise 14-x")
	if err != nil {
		t.Fatal(err)
	}
	chs, err = plane.ClearFaults(ctx, "payments", "exercise 14-x")
	if err != nil || len(chs) != 1 || chs[0].Key != "fault (hidden)" || chs[0].Old != control.HiddenFaultText {
		t.Errorf("clearing a hidden fault (%d): %+v, %v", g.ID, chs, err)
	}

	var spec control.FaultSpec
	if err := jsonUnmarshal(`{"service":"catalog","kind":"down","Hidden":true,"hidden":true}`, &spec); err != nil || spec.Hidden {
		t.Errorf("the API's JSON asked for a hidden fault: %+v, %v", spec, err)
	}
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }
