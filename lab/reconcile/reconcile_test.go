package reconcile_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/lab/reconcile"
	"microlab/lab/stack"
	"microlab/services/platform/pg"
	"microlab/services/platform/testenv"
)

// shop is the three databases a reconciliation reads, with the services' own schemas
// (their migrations, applied from the repository), and no service running: the test
// writes the rows a saga would have left.
type shop struct {
	t   *testing.T
	cfg stack.Config
	db  map[string]string // service → URL
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func newShop(t *testing.T) *shop {
	t.Helper()
	s := &shop{t: t, db: map[string]string{},
		cfg: stack.Config{AdminDatabaseURL: testenv.AdminDatabaseURL(), DBPrefix: testenv.Name("t_rc_") + "_",
			AMQPURL: "amqp://guest:guest@127.0.0.1:5672/"}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, svc := range []string{"orders", "payments", "inventory"} {
		s.db[svc] = testenv.DB(t, s.cfg.DBName(svc))
		pool, err := pg.Open(ctx, s.db[svc])
		if err != nil {
			t.Fatal(err)
		}
		err = pg.Migrate(ctx, pool, os.DirFS(filepath.Join(repoRoot(), "services", svc, "migrations")), "goose_db_version")
		pool.Close()
		if err != nil {
			t.Fatalf("migrate %s: %v", svc, err)
		}
	}
	return s
}

func (s *shop) exec(svc, sql string, args ...any) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pg.Open(ctx, s.db[svc])
	if err != nil {
		s.t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, sql, args...); err != nil {
		s.t.Fatalf("%s: %s: %v", svc, sql, err)
	}
}

// order writes an order of one line (qty 1 of sku at total cents).
func (s *shop) order(id, status, reason, sku string, total int64) {
	s.t.Helper()
	s.exec("orders", `INSERT INTO orders (order_id, user_id, status, cancel_reason, saga_mode, total_cents, currency,
		shipping_address, card_last4) VALUES ($1, 'u1', $2, $3, 'choreography', $4, 'EUR', '{}', '4242')`, id, status, reason, total)
	s.exec("orders", `INSERT INTO order_items (order_id, line, sku, qty, price_cents) VALUES ($1, 1, $2, 1, $3)`, id, sku, total)
}

func (s *shop) ledger(id, kind string, cents int64) {
	s.t.Helper()
	s.exec("payments", `INSERT INTO payment_ledger (order_id, kind, amount_cents) VALUES ($1, $2, $3)`, id, kind, cents)
}

func (s *shop) reservation(id, sku, status string) {
	s.t.Helper()
	s.exec("inventory", `INSERT INTO reservations (order_id, sku, qty, status) VALUES ($1, $2, 1, $3)`, id, sku, status)
}

// confirmed writes an order whose saga went through: authorized, reserved, captured.
func (s *shop) confirmed(id string) {
	s.order(id, "confirmed", "", "LAB-MUG", 1200)
	s.ledger(id, "authorize", 1200)
	s.reservation(id, "LAB-MUG", "reserved")
	s.ledger(id, "capture", 1200)
}

// each way a saga can end in order, its rows as the services leave them.
func (s *shop) cleanLedgers() {
	s.confirmed("ok-1")
	s.confirmed("ok-2")
	s.order("declined-1", "cancelled", "payment_declined", "LAB-TEE", 900)
	s.ledger("declined-1", "decline", 0)
	s.order("oos-1", "cancelled", "out_of_stock", "LAB-UNICORN", 500)
	s.ledger("oos-1", "authorize", 500)
	s.ledger("oos-1", "refund", 500)
	s.order("xx-1", "cancelled", "shipping_unavailable", "LAB-CAP", 700)
	s.ledger("xx-1", "authorize", 700)
	s.reservation("xx-1", "LAB-CAP", "released")
	s.ledger("xx-1", "refund", 700)
	// The orchestrator gave up before the authorization arrived: a 0-cent tombstone.
	s.order("timeout-1", "cancelled", "step_timeout", "LAB-PEN", 300)
	s.ledger("timeout-1", "refund", 0)
}

func run(t *testing.T, s *shop, opts reconcile.Options) *reconcile.Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := reconcile.Run(ctx, s.cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestCleanLedgersReportClean(t *testing.T) {
	t.Parallel()
	s := newShop(t)
	s.cleanLedgers()
	r := run(t, s, reconcile.Options{Accepted: []string{"ok-1", "ok-2", "declined-1", "oos-1", "xx-1", "timeout-1"}})
	if !r.Clean() || len(r.Findings) != 0 {
		t.Fatalf("clean ledgers reported: %v", r.Findings)
	}
	if r.Placed() != 6 || r.InDatabase != 6 || r.Final() != 6 || r.Confirmed != 2 || r.Cancelled != 4 || r.Pending != 0 {
		t.Errorf("figures: placed %d, in db %d, final %d (%d confirmed, %d cancelled, %d pending)",
			r.Placed(), r.InDatabase, r.Final(), r.Confirmed, r.Cancelled, r.Pending)
	}
	var b bytes.Buffer
	r.Table(&b)
	for _, want := range []string{"orders placed", "verdict: clean", "not inspected"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
	if got := figure(t, b.String(), reconcile.Label(reconcile.Lost)); got != 0 {
		t.Errorf("table says %d lost:\n%s", got, b.String())
	}
	// Without the gateway's list, the database is the list of orders placed.
	if r := run(t, s, reconcile.Options{}); !r.Clean() || r.Placed() != 6 || r.Accepted != -1 {
		t.Errorf("without accepted ids: clean %v, placed %d, accepted %d", r.Clean(), r.Placed(), r.Accepted)
	}
	// A broker without the management API lists its queues otherwise: only *.dlq count.
	list := func(context.Context) (map[string]int, error) {
		return map[string]int{"payments.dlq": 1, "shipping.dlq": 0, "payments.events": 7}, nil
	}
	if r := run(t, s, reconcile.Options{ListQueues: list}); r.Clean() || r.DLQMessages() != 1 || len(r.DLQ) != 2 {
		t.Errorf("listed queues: clean %v, %d DLQ messages in %v; want 1 in payments.dlq, shipping.dlq empty", r.Clean(), r.DLQMessages(), r.DLQ)
	}
}

// Each anomaly, written into otherwise clean ledgers, is found, counted under its kind
// and makes the report unclean.
func TestEachAnomalyIsDetected(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		kind     reconcile.Kind
		write    func(s *shop)
		accepted []string // besides the clean ledgers' orders
		what     string   // in the finding
	}{
		{"accepted, never written", reconcile.Lost, func(s *shop) {}, []string{"ghost-1"}, "not in the orders database"},
		{"pending after recovery", reconcile.Lost, func(s *shop) {
			s.order("stuck-1", "pending", "", "LAB-MUG", 1200)
			s.ledger("stuck-1", "authorize", 1200)
		}, []string{"stuck-1"}, "still pending"},
		{"authorized twice", reconcile.DoubleCharge, func(s *shop) {
			s.confirmed("dup-1")
			s.ledger("dup-1", "authorize", 1200)
		}, nil, "authorized 2 times"},
		{"captured twice", reconcile.DoubleCharge, func(s *shop) {
			s.confirmed("dup-2")
			s.ledger("dup-2", "capture", 1200)
		}, nil, "captured 2 times"},
		{"captured though cancelled", reconcile.DoubleCharge, func(s *shop) {
			s.order("cc-1", "cancelled", "shipping_unavailable", "LAB-CAP", 700)
			s.ledger("cc-1", "authorize", 700)
			s.ledger("cc-1", "capture", 700)
			s.ledger("cc-1", "refund", 700)
		}, nil, "though cancelled"},
		{"capture is not the total", reconcile.DoubleCharge, func(s *shop) {
			s.order("amt-1", "confirmed", "", "LAB-MUG", 1200)
			s.ledger("amt-1", "authorize", 1200)
			s.reservation("amt-1", "LAB-MUG", "reserved")
			s.ledger("amt-1", "capture", 1300)
		}, nil, "captured 1300 cents of a 1200 cents total"},
		{"reserved twice", reconcile.DoubleReservation, func(s *shop) {
			s.confirmed("res-2")
			s.reservation("res-2", "LAB-MUG", "reserved")
		}, nil, "LAB-MUG reserved 2 times for 1 line"},
		{"unreleased reservation of a cancelled order", reconcile.Unreleased, func(s *shop) {
			s.order("held-1", "cancelled", "shipping_unavailable", "LAB-CAP", 700)
			s.ledger("held-1", "authorize", 700)
			s.reservation("held-1", "LAB-CAP", "reserved")
			s.ledger("held-1", "refund", 700)
		}, nil, "1 reservation(s) of LAB-CAP still held"},
		{"cancelled, authorization not refunded", reconcile.MissingRefund, func(s *shop) {
			s.order("norefund-1", "cancelled", "out_of_stock", "LAB-UNICORN", 500)
			s.ledger("norefund-1", "authorize", 500)
		}, nil, "authorized 500 cents, refunded 0"},
		{"confirmed, never captured", reconcile.Mismatch, func(s *shop) {
			s.order("nocap-1", "confirmed", "", "LAB-MUG", 1200)
			s.ledger("nocap-1", "authorize", 1200)
			s.reservation("nocap-1", "LAB-MUG", "reserved")
		}, nil, "never captured"},
		{"a charge for an order nobody placed", reconcile.Mismatch, func(s *shop) {
			s.ledger("orphan-1", "authorize", 1200)
		}, nil, "does not know it"},
	}
	// One shop holds them all, each anomaly on an order of its own: every one must be
	// found on its order, under its kind, and nothing on the orders in order.
	s := newShop(t)
	s.cleanLedgers()
	accepted := []string{"ok-1", "ok-2", "declined-1", "oos-1", "xx-1", "timeout-1"}
	want := map[reconcile.Kind]int{}
	for _, tc := range cases {
		tc.write(s)
		accepted = append(accepted, tc.accepted...)
		want[tc.kind]++
	}
	r := run(t, s, reconcile.Options{Accepted: accepted})
	if r.Clean() {
		t.Fatal("reported clean")
	}
	byOrder := map[string][]reconcile.Finding{}
	for _, f := range r.Findings {
		byOrder[f.OrderID] = append(byOrder[f.OrderID], f)
	}
	for _, id := range []string{"ok-1", "ok-2", "declined-1", "oos-1", "xx-1", "timeout-1"} {
		for _, f := range byOrder[id] {
			t.Errorf("an order in order reported: %s", f)
		}
	}
	var b bytes.Buffer
	r.Table(&b)
	for _, tc := range cases {
		found := false
		for _, fs := range byOrder {
			for _, f := range fs {
				found = found || f.Kind == tc.kind && strings.Contains(f.What, tc.what)
			}
		}
		if !found {
			t.Errorf("%s: no %s finding saying %q", tc.name, tc.kind, tc.what)
		}
	}
	for _, k := range reconcile.Kinds {
		if r.Count(k) != want[k] {
			t.Errorf("%d orders with a %s, want %d", r.Count(k), k, want[k])
		}
		if got := figure(t, b.String(), reconcile.Label(k)); got != want[k] {
			t.Errorf("table: %s %d, want %d", reconcile.Label(k), got, want[k])
		}
	}
	if !strings.Contains(b.String(), "verdict: NOT clean") || !strings.Contains(b.String(), "authorized 2 times") {
		t.Errorf("table lacks the verdict or a finding")
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("findings: %v\n%s", r.Findings, b.String())
	}
}

// Since leaves out what happened before: a double charge of an old order does not count.
func TestSinceLeavesOutTheHistory(t *testing.T) {
	t.Parallel()
	s := newShop(t)
	s.confirmed("old-1")
	s.ledger("old-1", "capture", 1200)
	s.exec("orders", `UPDATE orders SET created_at = now() - interval '1 hour'`)
	s.exec("payments", `UPDATE payment_ledger SET created_at = now() - interval '1 hour'`)
	s.exec("inventory", `UPDATE reservations SET created_at = now() - interval '1 hour'`)
	if r := run(t, s, reconcile.Options{}); r.Count(reconcile.DoubleCharge) != 1 {
		t.Fatalf("the whole history: %d double charges, want 1", r.Count(reconcile.DoubleCharge))
	}
	s.confirmed("new-1")
	r := run(t, s, reconcile.Options{Since: time.Now().Add(-time.Minute)})
	if !r.Clean() || r.InDatabase != 1 {
		t.Fatalf("since a minute ago: clean %v, %d orders, findings %v", r.Clean(), r.InDatabase, r.Findings)
	}
}

// The DLQs are every *.dlq queue of the lab's vhost, counted exactly, and a message in
// one makes the report unclean (unless it was there before the run).
func TestDLQMessagesAreCounted(t *testing.T) {
	t.Parallel()
	s := newShop(t)
	s.cleanLedgers()
	s.cfg.AMQPURL = testenv.VHost(t)
	conn, err := amqp.Dial(s.cfg.AMQPURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	for q, n := range map[string]int{"payments.dlq": 2, "orders-history.dlq": 0, "payments.events": 3} {
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if err := ch.PublishWithContext(context.Background(), "", q, false, false, amqp.Publishing{Body: []byte(strconv.Itoa(i))}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Publishes on one channel are ordered: a passive declare after them counts them all.
	if _, err := ch.QueueDeclarePassive("payments.dlq", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	r := run(t, s, reconcile.Options{ManagementURL: testenv.ManagementURL()})
	if r.Clean() || r.DLQMessages() != 2 || len(r.DLQ) != 2 || r.DLQ["payments.dlq"] != 2 || r.DLQ["orders-history.dlq"] != 0 {
		t.Fatalf("clean %v, %d DLQ messages, DLQs %v; want payments.dlq 2, orders-history.dlq 0", r.Clean(), r.DLQMessages(), r.DLQ)
	}
	var b bytes.Buffer
	r.Table(&b)
	if got := figure(t, b.String(), reconcile.LabelDLQ); got != 2 || !strings.Contains(b.String(), "payments.dlq 2") {
		t.Errorf("table: %d DLQ messages, want 2 and payments.dlq named:\n%s", got, b.String())
	}
	r = run(t, s, reconcile.Options{ManagementURL: testenv.ManagementURL(), DLQBefore: map[string]int{"payments.dlq": 2}})
	if !r.Clean() || r.DLQMessages() != 0 {
		t.Errorf("with 2 messages before the run: clean %v, %d new", r.Clean(), r.DLQMessages())
	}
}

// figure reads the number on the table's row labelled label.
func figure(t *testing.T, table, label string) int {
	t.Helper()
	m := regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(label) + `\s+(\d+)`).FindStringSubmatch(table)
	if m == nil {
		t.Fatalf("no row %q in:\n%s", label, table)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// Check is the rules themselves: an order in order yields nothing.
func TestCheckRules(t *testing.T) {
	t.Parallel()
	ok := reconcile.Order{ID: "o", Accepted: true, InOrders: true, Status: "confirmed", Total: 100,
		Lines:   map[string]int{"A": 1, "B": 2},
		Payment: reconcile.Payment{Authorizations: 1, AuthorizedCents: 100, Captures: 1, CapturedCents: 100},
		Stock:   map[string]reconcile.Reservation{"A": {Reserved: 1}, "B": {Reserved: 2}}}
	if fs := reconcile.Check(ok); len(fs) != 0 {
		t.Fatalf("two lines of B reserved twice: %v", fs)
	}
	if err := reconcile.Error(reconcile.Check(ok)); err != nil {
		t.Fatal(err)
	}
	bad := ok
	bad.Stock = map[string]reconcile.Reservation{"A": {Reserved: 1}, "B": {Reserved: 1, Released: 1}}
	fs := reconcile.Check(bad)
	if len(fs) != 2 || fs[0].Kind != reconcile.Mismatch {
		t.Fatalf("confirmed with one of B's lines released: %v", fs)
	}
	if err := reconcile.Error(fs); err == nil || !strings.Contains(err.Error(), "B reserved for 1 of 2") {
		t.Errorf("error %v", err)
	}
}
