package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"microlab/lab/stack"
	"microlab/lab/topology"
	"microlab/services/contracts"
	"microlab/services/platform/bus"
	"microlab/services/platform/control"
	"microlab/services/platform/pg"
	"microlab/services/platform/testenv"
)

// Shared database vs database-per-service, for real (docs/architecture.md): the four
// checkout outcomes in both topologies and both saga modes; inventory's schema change
// leaves the per-service shop working and breaks shared checkout (a 5xx at the gateway,
// a clear message from orders) until it is reverted; and switching back and forth
// twice, each time under a trickle of orders, loses no order and no setting. The switch
// is the one `lab up` runs (topology.Follow reacting to the db.topology setting), with
// this lab's supervisor.
func TestDatabaseTopology(t *testing.T) {
	t.Parallel()
	// Settings no step below touches: they must survive every switch, applied by every
	// restarted instance.
	kept := map[string]string{control.SagaStepTimeout: "20s", control.HTTPRetries: "1"}
	l := startLab(t, labOptions{settings: kept, tracing: true}) // one failed checkout's trace is read

	t.Cleanup(func() { // before the roles go (startLab's cleanup): they own its schemas
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = pg.DropShared(ctx, l.cfg.AdminDatabaseURL, l.cfg.DBName(stack.SharedDB))
	})
	sw := l.follow(t)

	var ledger placedBatch // every order of the trickles, checked again at the end

	t.Run("per-service", func(t *testing.T) { bothModes(t, l) })
	t.Run("per-service survives inventory's schema change", func(t *testing.T) {
		l.set(control.InventorySchema, control.InventorySchemaV2)
		testCheckoutOutcomes(t, l)
		l.set(control.InventorySchema, control.InventorySchemaV1)
	})
	t.Run("to shared under a trickle", func(t *testing.T) { ledger = l.switchUnderTrickle(t, sw, stack.TopologyShared, ledger) })
	t.Run("shared", func(t *testing.T) { bothModes(t, l) })
	t.Run("shared breaks on inventory's schema change, and heals on revert", func(t *testing.T) { l.schemaChangeBreaksShared(t) })
	t.Run("back to per-service", func(t *testing.T) { ledger = l.switchUnderTrickle(t, sw, stack.TopologyPerService, ledger) })
	t.Run("to shared again", func(t *testing.T) { ledger = l.switchUnderTrickle(t, sw, stack.TopologyShared, ledger) })
	t.Run("and back again", func(t *testing.T) { ledger = l.switchUnderTrickle(t, sw, stack.TopologyPerService, ledger) })
	if t.Failed() {
		return
	}

	// No order lost: every order placed during the four switches is still there, final,
	// with the outcome it had, and its ledgers agree; and no setting lost.
	awaitBatch(t, l, ledger.batch, ledger.ids, ledger.tokens, 3*time.Minute)
	for k, v := range kept {
		l.awaitSetting(k, v)
	}
	t.Logf("%d orders carried through four switches", len(ledger.ids))
}

// bothModes runs the four outcomes in choreography, then orchestration, and leaves the
// lab in choreography.
func bothModes(t *testing.T, l *lab) {
	testCheckoutOutcomes(t, l)
	l.set(control.SagaMode, contracts.ModeOrchestration)
	testCheckoutOutcomes(t, l)
	l.set(control.SagaMode, contracts.ModeChoreography)
}

// follow runs topology.Follow, as `lab up` does, until the test ends. Its progress
// lines come back on the returned channel.
func (l *lab) follow(t *testing.T) <-chan string {
	t.Helper()
	progress := make(chan string, 1000)
	l.runFollow(t, topology.Supervised{Sup: l.sup, Bin: binaries(t), Scale: l.scale}, func(step string) {
		select {
		case progress <- step:
		default:
		}
	})
	return progress
}

// runFollow runs topology.Follow with services (what stops and starts the processes),
// as `lab up` does, until the test ends, and returns its switcher.
func (l *lab) runFollow(t *testing.T, services topology.Services, progress func(string)) *topology.Switcher {
	t.Helper()
	sw := &topology.Switcher{Cfg: l.cfg, Migrations: topology.DirMigrations(repoRoot()), Services: services, Progress: progress}
	ctx, cancel := context.WithCancel(context.Background())
	oc, cctx := context.WithTimeout(ctx, time.Minute)
	defer cctx()
	conn, err := bus.Dial(oc, l.cfg.AMQPURL, "e2e-topology", discard())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- topology.Follow(ctx, sw, l.store, conn, bus.NewPublisher(conn, discard()), discard()) }()
	t.Cleanup(func() { // before the services stop (registered after startLab)
		cancel()
		if err := <-done; err != nil {
			t.Errorf("follow: %v", err)
		}
		conn.Close()
	})
	return sw
}

// switchUnderTrickle sets db.topology to `to` while four shoppers place orders, waits
// for the switch's last step, checks every order placed meanwhile, and adds them to
// ledger.
func (l *lab) switchUnderTrickle(t *testing.T, progress <-chan string, to string, ledger placedBatch) placedBatch {
	const minOrders = 20
	tokens := users(t, l, 4)
	// While the services are stopped their ports are free, and another test's lab
	// choosing its ports at that moment could take them (and answer in their place): the
	// machine's start lock keeps other labs from starting until the switch is over.
	started := testenv.StartLock(t)
	stop := make(chan struct{})
	type result struct {
		b    placedBatch
		errs []error
	}
	placed := make(chan result, 1)
	go func() {
		b, errs := placeUntil(l, stop, 4, minOrders, tokens, time.Now().Add(3*time.Minute))
		placed <- result{b, errs}
	}()
	l.announce(t, control.DBTopology, to)
	awaitStep(t, progress, "db.topology is "+to)
	started()
	l.awaitExported(t, control.DBTopology, to)
	close(stop)
	r := <-placed
	for _, err := range r.errs {
		t.Errorf("placing an order: %v", err)
	}
	if got, err := topology.Where(context.Background(), l.cfg); err != nil || got != to {
		t.Fatalf("the lab database says the data is in %q (%v), want %q", got, err, to)
	}
	// The dashboard's timeline has the switch's steps (it pushes them live as they come).
	chs, err := l.store.Changes(context.Background(), 20)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(chs, func(c control.Change) bool {
		return c.Key == control.TopologySwitchKey && c.Source == "lab up" && strings.HasPrefix(c.New, "db.topology is "+to)
	}) {
		t.Errorf("the timeline has no %q step of the switch to %s: %+v", control.TopologySwitchKey, to, chs)
	}
	t.Logf("%d orders placed around the switch to %s", len(r.b.ids), to)
	awaitBatch(t, l, r.b.batch, r.b.ids, r.b.tokens, 3*time.Minute)
	ledger.batch = append(ledger.batch, r.b.batch...)
	ledger.ids = append(ledger.ids, r.b.ids...)
	ledger.tokens = append(ledger.tokens, r.b.tokens...)
	return ledger
}

// awaitExported is awaitSetting on t (a subtest's), saying on failure what the instance
// exports instead.
func (l *lab) awaitExported(t *testing.T, key, value string) {
	t.Helper()
	insts, err := l.cfg.Instances(l.scale)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`lab_setting_info{key=%q,value=%q} 1`, key, value)
	deadline := time.Now().Add(time.Minute)
	for _, in := range insts {
		for {
			body, err := metricsOf(in.URL())
			if err == nil && (strings.Contains(body, want) || !strings.Contains(body, "lab_setting_info{")) {
				break
			}
			if time.Now().After(deadline) {
				var got []string
				for _, line := range strings.Split(body, "\n") {
					if strings.Contains(line, fmt.Sprintf("key=%q", key)) {
						got = append(got, line)
					}
				}
				t.Fatalf("%s never applied %s=%s: exports %q (scrape error: %v)", in.ID, key, value, got, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// awaitStep waits for the switch to report a step starting with prefix; a failed switch
// fails the test at once.
func awaitStep(t *testing.T, progress <-chan string, prefix string) {
	t.Helper()
	deadline := time.After(4 * time.Minute)
	for {
		select {
		case step := <-progress:
			t.Log("switch:", step)
			if strings.HasPrefix(step, "switch failed") {
				t.Fatal(step)
			}
			if strings.HasPrefix(step, prefix) {
				return
			}
		case <-deadline:
			t.Fatalf("no %q from the switch", prefix)
		}
	}
}

// announce changes a setting like l.set, without waiting for every instance to apply it
// (a topology switch restarts them).
func (l *lab) announce(t *testing.T, key, value string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ch, err := l.store.Set(ctx, key, value, "e2e")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := bus.Dial(ctx, l.cfg.AMQPURL, "e2e-control", discard())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := control.Announce(ctx, bus.NewPublisher(conn, discard()), ch); err != nil {
		t.Fatal(err)
	}
}

// schemaChangeBreaksShared: inventory renames stock.on_hand; orders' join fails, the
// gateway answers 5xx (counted in its metrics), orders' own answer says what happened;
// reverting heals checkout.
func (l *lab) schemaChangeBreaksShared(t *testing.T) {
	token := l.api.login(t, "alice@example.com", "alice-secret")
	fivexx := func() float64 {
		return l.metric(t, "gateway", "http_server_requests_total", `method="POST"`, `code="5`)
	}
	before := fivexx()
	l.set(control.InventorySchema, control.InventorySchemaV2)

	// Inventory applies the rename a moment after it hears of the setting: wait for the
	// first refused placement (no retries: the failure is what this is about).
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var status int
	var traceID string
	for {
		status, traceID = placeRaw(ctx, l, token)
		if status >= 500 || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if status < 500 {
		t.Fatalf("shared checkout still works after inventory renamed its column: %d", status)
	}
	// The failed checkout's trace: orders' SQL span is an error naming the column.
	sqlError := func(tr *jaegerTrace) bool {
		for _, sp := range tr.Spans {
			if tr.service(sp) == "orders" && sp.tag("otel.status_code") == "ERROR" &&
				strings.Contains(sp.tag("otel.status_description"), "on_hand") {
				return true
			}
		}
		return false
	}
	if tr := awaitTrace(t, l.jaeger, traceID, sqlError); !sqlError(tr) {
		t.Errorf("trace %s has no orders span failing on on_hand: %s", traceID, describe(tr))
	}
	if after := fivexx(); after <= before {
		t.Errorf("gateway's 5xx count for POST did not move (%v → %v)", before, after)
	}
	// What the learner's client sees: the gateway passes this one failure on (it is the
	// lesson, not an inside to hide), with the clear message.
	var body struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	code, _ := doJSON(ctx, l.api.base+"/api/v1/orders", map[string]string{"Authorization": "Bearer " + token},
		newOrder(cardOK, skuOK, "DE"), &body)
	if code != 502 || body.Error.Code != "schema_coupling" || !strings.Contains(body.Error.Message, "on_hand") {
		t.Errorf("the gateway answered %d %+v; want 502 schema_coupling naming on_hand", code, body.Error)
	}

	l.set(control.InventorySchema, control.InventorySchemaV1)
	id, err := placeOne(l, token, newOrder(cardOK, skuOK, "DE")) // retries the 5xx until healed
	if err != nil {
		t.Fatal(err)
	}
	o, err := l.api.waitFinal(ctx, token, id)
	if err != nil || o.Status != "confirmed" {
		t.Fatalf("after the revert: order %s %+v (%v)", id, o, err)
	}
}

// placeRaw places one order without retrying and returns the gateway's status and the
// trace id of its answer (traceresponse: version-traceid-spanid-flags).
func placeRaw(ctx context.Context, l *lab, token string) (int, string) {
	body, _ := json.Marshal(newOrder(cardOK, skuOK, "DE"))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.api.base+"/api/v1/orders", bytes.NewReader(body))
	if err != nil {
		return 0, ""
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := l.api.http.Do(req)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	parts := strings.Split(resp.Header.Get("traceresponse"), "-")
	if len(parts) != 4 {
		return resp.StatusCode, ""
	}
	return resp.StatusCode, parts[1]
}

// doJSON posts body to an internal URL (no token) and decodes the answer, errors too.
func doJSON(ctx context.Context, url string, hdr map[string]string, body, out any) (int, error) {
	c := &client{base: "", http: &http.Client{Timeout: 10 * time.Second}}
	return c.do(ctx, "POST", url, "", body, hdr, out)
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
