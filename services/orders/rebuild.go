package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"microlab/observability"
	"microlab/services/platform/httpx"
	"microlab/services/platform/pg"
)

// Projection rebuild (event sourcing's other half, docs/patterns/event-sourcing.md): the
// order history read model (history.go) thrown away and rebuilt from zero by replaying
// every order's stream from order_events. Proof that the stream is the source of truth:
// the read model is a disposable function of it. POST /projections/order-history/rebuild
// starts a job and answers its id; GET /projections/order-history/rebuild/{job} its
// progress (orders done of total). One job at a time, across instances: a second POST
// while one runs is 409.
//
// While the job runs, the live read model keeps applying events. Both follow the same
// rule (a final status outranks pending), so whichever writes a row last, the row ends
// as the stream says; only the listing is incomplete until the job has passed by.

const projectionHistory = "order-history"

// rebuildBatch orders are replayed per transaction (one progress update each).
const rebuildBatch = 100

// abandonedAfter: a running job not touched for this long lost its instance.
const abandonedAfter = time.Minute

// Rebuild is one job as GET answers it.
type Rebuild struct {
	JobID      string     `json:"jobId"`
	Projection string     `json:"projection"`
	Status     string     `json:"status"`
	Done       int        `json:"done"`
	Total      int        `json:"total"`
	Error      string     `json:"error,omitempty"`
	StartedAt  time.Time  `json:"startedAt"`
	FinishedAt *time.Time `json:"finishedAt,omitempty"`
}

// Rebuilder runs rebuild jobs in this instance's background loop (app.Go): a job is
// stopped with the service, not with the request that started it.
type Rebuilder struct {
	store *Store
	jobs  chan rebuildJob
	log   *slog.Logger
	tel   *observability.Telemetry // a span per job: the rebuild's SQL is its children
}

// rebuildJob is a job handed to the loop, with the span of the request that started it:
// the job's span is its child, so the rebuild is part of that request's trace (a root
// span in a background loop would be dropped by the sampler, observability.Sampler).
type rebuildJob struct {
	id     string
	parent trace.SpanContext
}

var errRebuildRunning = errors.New("a rebuild is running")

// Start records a new job (errRebuildRunning when one runs) and hands it to the loop.
func (r *Rebuilder) Start(ctx context.Context) (string, error) {
	id := uuid.NewString()
	err := pg.InTx(ctx, r.store.pool, func(ctx context.Context) error {
		q := pg.Q(ctx, r.store.pool)
		if _, err := q.Exec(ctx, `UPDATE projection_rebuilds SET status = 'failed', error = 'abandoned: its instance stopped',
			finished_at = clock_timestamp() WHERE status = 'running' AND updated_at < clock_timestamp() - make_interval(secs => $1)`,
			abandonedAfter.Seconds()); err != nil {
			return fmt.Errorf("expire abandoned rebuilds: %w", err)
		}
		_, err := q.Exec(ctx, `INSERT INTO projection_rebuilds (job_id, projection) VALUES ($1, $2)`, id, projectionHistory)
		if pg.IsUniqueViolation(err) {
			return errRebuildRunning
		}
		if err != nil {
			return fmt.Errorf("record rebuild: %w", err)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	select {
	case r.jobs <- rebuildJob{id: id, parent: trace.SpanContextFromContext(ctx)}:
	default: // cannot happen: the index allows one running job, the channel holds one
		return "", fmt.Errorf("rebuild %s: the loop is busy", id)
	}
	return id, nil
}

// Get returns a job, or errNotFound.
func (r *Rebuilder) Get(ctx context.Context, id string) (Rebuild, error) {
	var j Rebuild
	err := pg.Q(ctx, r.store.pool).QueryRow(ctx, `SELECT job_id, projection, status, done, total, error, started_at, finished_at
		FROM projection_rebuilds WHERE job_id = $1`, id).Scan(&j.JobID, &j.Projection, &j.Status, &j.Done, &j.Total,
		&j.Error, &j.StartedAt, &j.FinishedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Rebuild{}, errNotFound
	}
	if err != nil {
		return Rebuild{}, fmt.Errorf("read rebuild: %w", err)
	}
	return j, nil
}

// run is the background loop: one job at a time, as they come.
func (r *Rebuilder) run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case job := <-r.jobs:
			id := job.id
			jctx, span := r.tel.Step(trace.ContextWithSpanContext(ctx, job.parent), "projection rebuild "+projectionHistory,
				attribute.String("rebuild.job_id", id))
			err := r.rebuild(jctx, id)
			observability.Fail(span, err)
			span.End()
			status, msg := "completed", ""
			if err != nil {
				status, msg = "failed", err.Error()
				r.log.Error("projection rebuild failed", "job_id", id, "err", err)
			} else {
				r.log.Info("projection rebuilt", "job_id", id, "projection", projectionHistory)
			}
			if _, err := r.store.pool.Exec(context.WithoutCancel(ctx), `UPDATE projection_rebuilds SET status = $2, error = $3,
				finished_at = clock_timestamp(), updated_at = clock_timestamp() WHERE job_id = $1`, id, status, msg); err != nil {
				r.log.Error("projection rebuild: recording its end failed", "job_id", id, "err", err)
			}
		}
	}
}

// rebuild empties order_history and refills it from the streams, rebuildBatch orders
// per transaction, keyset-paged by order id.
func (r *Rebuilder) rebuild(ctx context.Context, id string) error {
	pool := r.store.pool
	if _, err := pool.Exec(ctx, `TRUNCATE order_history`); err != nil {
		return fmt.Errorf("empty order_history: %w", err)
	}
	var total int
	if err := pool.QueryRow(ctx, `WITH t AS (SELECT count(DISTINCT order_id) AS n FROM order_events)
		UPDATE projection_rebuilds SET total = t.n, updated_at = clock_timestamp() FROM t WHERE job_id = $1
		RETURNING total`, id).Scan(&total); err != nil {
		return fmt.Errorf("count streams: %w", err)
	}
	after := ""
	for done := 0; ; {
		n, last, err := r.batch(ctx, id, after, done)
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		done, after = done+n, last
	}
}

// batch replays the streams of up to rebuildBatch orders after order id after and
// writes their rows, with the job's progress, in one transaction.
func (r *Rebuilder) batch(ctx context.Context, job, after string, done int) (int, string, error) {
	var n int
	var last string
	err := pg.InTx(ctx, r.store.pool, func(ctx context.Context) error {
		rows, err := pg.Q(ctx, r.store.pool).Query(ctx, `SELECT order_id, version, type, data, occurred_at FROM order_events
			WHERE order_id IN (SELECT DISTINCT order_id FROM order_events WHERE order_id > $1 ORDER BY order_id LIMIT $2)
			ORDER BY order_id, version`, after, rebuildBatch)
		if err != nil {
			return fmt.Errorf("read streams: %w", err)
		}
		streams := map[string][]Event{}
		var ids []string
		for rows.Next() {
			var id string
			var e Event
			if err := rows.Scan(&id, &e.Version, &e.Type, &e.Data, &e.OccurredAt); err != nil {
				rows.Close()
				return fmt.Errorf("read streams: %w", err)
			}
			if _, ok := streams[id]; !ok {
				ids = append(ids, id)
			}
			streams[id] = append(streams[id], e)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read streams: %w", err)
		}
		for _, id := range ids {
			o, _, err := Replay(id, streams[id])
			if err != nil {
				return err
			}
			items, err := json.Marshal(o.Items)
			if err != nil {
				return err
			}
			// The live read model's rule: a final status outranks pending.
			if err := pg.Later(ctx, r.store.pool, `INSERT INTO order_history AS h (order_id, user_id, status, cancel_reason,
				saga_mode, total_cents, currency, items, trace_id, created_at)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
				ON CONFLICT (order_id) DO UPDATE SET user_id = EXCLUDED.user_id, saga_mode = EXCLUDED.saga_mode,
					total_cents = EXCLUDED.total_cents, currency = EXCLUDED.currency, items = EXCLUDED.items,
					trace_id = EXCLUDED.trace_id, created_at = EXCLUDED.created_at, applied_at = clock_timestamp(),
					status = CASE WHEN EXCLUDED.status = 'pending' THEN h.status ELSE EXCLUDED.status END,
					cancel_reason = CASE WHEN EXCLUDED.status = 'pending' THEN h.cancel_reason ELSE EXCLUDED.cancel_reason END`,
				o.ID, o.UserID, o.Status, o.CancelReason, o.SagaMode, o.TotalCents, o.Currency, items, o.TraceID,
				o.CreatedAt); err != nil {
				return fmt.Errorf("write order_history: %w", err)
			}
		}
		n = len(ids)
		if n > 0 {
			last = ids[n-1]
		}
		return pg.Later(ctx, r.store.pool, `UPDATE projection_rebuilds SET done = $2, updated_at = clock_timestamp()
			WHERE job_id = $1`, job, done+n)
	})
	if err != nil {
		return 0, "", fmt.Errorf("rebuild batch after %q: %w", after, err)
	}
	return n, last, nil
}

// startRebuild is POST /projections/order-history/rebuild: 202 with the job, 409 while
// another runs.
func (s *Service) startRebuild(w http.ResponseWriter, r *http.Request) error {
	id, err := s.rebuilder.Start(r.Context())
	if errors.Is(err, errRebuildRunning) {
		return httpx.Errorf(http.StatusConflict, "rebuild_running", "a rebuild of %s is running: wait for it to finish", projectionHistory)
	}
	if err != nil {
		return err
	}
	j, err := s.rebuilder.Get(r.Context(), id)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusAccepted, j)
	return nil
}

// rebuildStatus is GET /projections/order-history/rebuild/{job}.
func (s *Service) rebuildStatus(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("job")
	if uuid.Validate(id) != nil {
		return httpx.Errorf(http.StatusNotFound, "not_found", "no such rebuild")
	}
	j, err := s.rebuilder.Get(r.Context(), id)
	if errors.Is(err, errNotFound) {
		return httpx.Errorf(http.StatusNotFound, "not_found", "no such rebuild")
	}
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, j)
	return nil
}
