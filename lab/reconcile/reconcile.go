package reconcile

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"microlab/lab/stack"
	"microlab/services/platform/pg"
)

// Options narrow and complete a reconciliation.
type Options struct {
	// Accepted are the ids of the orders the gateway accepted (loadgen's Summary.Orders);
	// one the orders database lacks is lost. Nil: not known, the orders database is the
	// list of orders placed.
	Accepted []string
	// Since, if set, limits the reconciliation to what happened from then on (orders
	// created, ledger and reservation rows written): a run against a lab with a history.
	Since time.Time
	// ManagementURL is RabbitMQ's management API (http://guest:guest@127.0.0.1:15672),
	// which lists the dead-letter queues of the lab's virtual host. "": DLQs are not
	// inspected (unless ListQueues is set).
	ManagementURL string
	// ListQueues, if set, lists the vhost's queues with their depths instead of the
	// management API: for a broker without it (a private node, whose rabbitmqctl
	// list_queues does; see testenv/private.Broker.Queues).
	ListQueues func(context.Context) (map[string]int, error)
	// DLQBefore are the DLQs' depths before the run (a lab with a history): only
	// messages beyond them count against Clean.
	DLQBefore map[string]int
}

// Report is one reconciliation.
type Report struct {
	At    time.Time `json:"at"`
	VHost string    `json:"vhost"`
	// Accepted is how many orders the gateway accepted, -1 when Options.Accepted was nil.
	Accepted   int `json:"accepted"`
	InDatabase int `json:"inDatabase"` // orders in the orders database (since Options.Since)
	Confirmed  int `json:"confirmed"`
	Cancelled  int `json:"cancelled"`
	Pending    int `json:"pending"`
	// Orders counts, per kind of anomaly, the orders with at least one finding of it.
	Orders   map[Kind]int `json:"orders"`
	Findings []Finding    `json:"findings"`
	// DLQ is the depth of every dead-letter queue (*.dlq) of the vhost; nil when DLQs
	// were not inspected.
	DLQ       map[string]int `json:"dlq"`
	DLQBefore map[string]int `json:"dlqBefore,omitempty"`
}

// Placed is the number of orders placed: those the gateway accepted when known,
// otherwise those in the orders database.
func (r *Report) Placed() int {
	if r.Accepted >= 0 {
		return r.Accepted
	}
	return r.InDatabase
}

// Final is the number of orders confirmed or cancelled.
func (r *Report) Final() int { return r.Confirmed + r.Cancelled }

// Count is the number of orders with an anomaly of kind k.
func (r *Report) Count(k Kind) int { return r.Orders[k] }

// DLQMessages is how many messages the DLQs hold beyond what they held before the run.
func (r *Report) DLQMessages() int {
	n := 0
	for q, d := range r.DLQ {
		n += max(0, d-r.DLQBefore[q])
	}
	return n
}

// DLQChecked reports whether the DLQs were inspected.
func (r *Report) DLQChecked() bool { return r.DLQ != nil }

// Clean reports whether nothing is wrong: no finding, and no new message in any DLQ.
func (r *Report) Clean() bool { return len(r.Findings) == 0 && r.DLQMessages() == 0 }

// Run reconciles the lab cfg describes (its databases as cfg.ServiceDatabaseURL names
// them, its vhost as cfg.AMQPURL names it).
func Run(ctx context.Context, cfg stack.Config, opts Options) (*Report, error) {
	orders, err := Ledgers(ctx, cfg, opts.Since)
	if err != nil {
		return nil, err
	}
	r := &Report{At: time.Now(), Accepted: -1, Orders: map[Kind]int{}, Findings: []Finding{}}
	if opts.Accepted != nil {
		r.Accepted = len(opts.Accepted)
		for _, id := range opts.Accepted {
			o := orders[id]
			if o == nil {
				o = &Order{ID: id}
				orders[id] = o
			}
			o.Accepted = true
		}
	}
	ids := make([]string, 0, len(orders))
	for id := range orders {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		o := orders[id]
		if o.InOrders {
			r.InDatabase++
			switch o.Status {
			case StatusConfirmed:
				r.Confirmed++
			case StatusCancelled:
				r.Cancelled++
			default:
				r.Pending++
			}
		}
		fs := Check(*o)
		seen := map[Kind]bool{}
		for _, f := range fs {
			if !seen[f.Kind] {
				seen[f.Kind] = true
				r.Orders[f.Kind]++
			}
		}
		r.Findings = append(r.Findings, fs...)
	}
	// By kind, in report order; within a kind, by order id.
	slices.SortStableFunc(r.Findings, func(a, b Finding) int {
		return slices.Index(Kinds, a.Kind) - slices.Index(Kinds, b.Kind)
	})
	if r.VHost, err = vhostOf(cfg.AMQPURL); err != nil {
		return nil, err
	}
	switch {
	case opts.ListQueues != nil:
		qs, err := opts.ListQueues(ctx)
		if err != nil {
			return nil, fmt.Errorf("reconcile: list the queues of vhost %s: %w", r.VHost, err)
		}
		r.DLQ = onlyDLQs(qs)
	case opts.ManagementURL != "":
		if r.DLQ, err = DLQs(ctx, cfg.AMQPURL, opts.ManagementURL); err != nil {
			return nil, err
		}
	}
	if r.DLQ != nil {
		r.DLQBefore = opts.DLQBefore
	}
	return r, nil
}

// Ledgers reads every order of the lab (created at or after since) from the orders
// database, and every payment ledger and reservation row (written at or after since)
// from payments' and inventory's, put together by order id. Rows of an order the orders
// database does not have make an Order with InOrders false.
func Ledgers(ctx context.Context, cfg stack.Config, since time.Time) (map[string]*Order, error) {
	out := map[string]*Order{}
	get := func(id string) *Order {
		o := out[id]
		if o == nil {
			o = &Order{ID: id}
			out[id] = o
		}
		return o
	}
	err := query(ctx, cfg, "orders", func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT order_id, status, cancel_reason, total_cents
			FROM orders WHERE created_at >= $1`, since)
		if err != nil {
			return err
		}
		var id, status, reason string
		var total int64
		_, err = pgx.ForEachRow(rows, []any{&id, &status, &reason, &total}, func() error {
			o := get(id)
			o.InOrders, o.Status, o.Reason, o.Total = true, status, reason, total
			return nil
		})
		if err != nil {
			return err
		}
		rows, err = tx.Query(ctx, `SELECT i.order_id, i.sku, count(*)
			FROM order_items i JOIN orders o USING (order_id)
			WHERE o.created_at >= $1 GROUP BY i.order_id, i.sku`, since)
		if err != nil {
			return err
		}
		var sku string
		var n int
		_, err = pgx.ForEachRow(rows, []any{&id, &sku, &n}, func() error {
			o := get(id)
			if o.Lines == nil {
				o.Lines = map[string]int{}
			}
			o.Lines[sku] = n
			return nil
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	err = query(ctx, cfg, "payments", func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT order_id,
				count(*) FILTER (WHERE kind = 'authorize'), count(*) FILTER (WHERE kind = 'capture'),
				count(*) FILTER (WHERE kind = 'refund'), count(*) FILTER (WHERE kind = 'decline'),
				coalesce(sum(amount_cents) FILTER (WHERE kind = 'authorize'), 0),
				coalesce(sum(amount_cents) FILTER (WHERE kind = 'capture'), 0),
				coalesce(sum(amount_cents) FILTER (WHERE kind = 'refund'), 0)
			FROM payment_ledger WHERE created_at >= $1 GROUP BY order_id`, since)
		if err != nil {
			return err
		}
		var id string
		var p Payment
		_, err = pgx.ForEachRow(rows, []any{&id, &p.Authorizations, &p.Captures, &p.Refunds, &p.Declines,
			&p.AuthorizedCents, &p.CapturedCents, &p.RefundedCents}, func() error {
			get(id).Payment = p
			return nil
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	err = query(ctx, cfg, "inventory", func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT order_id, sku,
				count(*) FILTER (WHERE status = 'reserved'), count(*) FILTER (WHERE status = 'released')
			FROM reservations WHERE created_at >= $1 GROUP BY order_id, sku`, since)
		if err != nil {
			return err
		}
		var id, sku string
		var r Reservation
		_, err = pgx.ForEachRow(rows, []any{&id, &sku, &r.Reserved, &r.Released}, func() error {
			o := get(id)
			if o.Stock == nil {
				o.Stock = map[string]Reservation{}
			}
			o.Stock[sku] = r
			return nil
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	for id, o := range out {
		if !o.InOrders && !o.touched() {
			delete(out, id) // order_items of an order outside the window
		}
	}
	return out, nil
}

// query runs fn in one read-only snapshot of service's database, opened the way the
// service opens it (its own database, or its schema of the shared one): rows committed
// between two of fn's queries (an order and its lines) cannot disagree.
func query(ctx context.Context, cfg stack.Config, service string, fn func(pgx.Tx) error) error {
	url, err := cfg.ServiceDatabaseURL(service)
	if err != nil {
		return fmt.Errorf("reconcile %s: %w", service, err)
	}
	pool, err := pg.Open(ctx, url, func(c *pgxpool.Config) { c.MaxConns = 1 })
	if err != nil {
		return fmt.Errorf("reconcile: %s's database: %w", service, err)
	}
	defer pool.Close()
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("reconcile: %s's database: %w", service, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }() // read only: nothing to keep
	if err := fn(tx); err != nil {
		return fmt.Errorf("reconcile: read %s's database: %w", service, err)
	}
	return nil
}
