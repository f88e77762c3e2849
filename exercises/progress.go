package exercises

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"microlab/services/platform/control"
	"microlab/services/platform/pg"
)

//go:embed migrations/*.sql
var migrations embed.FS

// migrationTable is the goose version table of the exercises' own migrations: database
// lab is shared with the control plane (goose_control), and two kits recording their
// versions in one table would each think the other's migrations were theirs.
const migrationTable = "exercises_goose_version"

// Run states.
const (
	RunOpen      = "open"      // started, steps still to do
	RunCompleted = "completed" // every step done (cleanup has run)
	RunReset     = "reset"     // left with reset (or started again): the lab was put back
)

// Run is one go at an exercise, as recorded in database lab.
type Run struct {
	ID       int64      `json:"id"`
	Exercise string     `json:"exercise"`
	Who      string     `json:"who"` // who started it: "dashboard", "lab exercise"
	Started  time.Time  `json:"started"`
	State    string     `json:"state"`
	Done     *time.Time `json:"completed,omitempty"`
	ResetAt  *time.Time `json:"reset,omitempty"`
	// Snapshot is the settings and faults in force before setup: what Reset restores.
	Snapshot Snapshot `json:"snapshot"`
	// Injected are the faults setup added, random draws resolved. Never serialised: while
	// a diagnosis is open, where its fault is is the answer.
	Injected []control.Fault `json:"-"`
	// Traffic: setup switched the shop's traffic on, so reset switches it off.
	Traffic bool `json:"-"`
	Cleaned bool `json:"-"`
	// Revealed: the learner gave up on the diagnosis and asked to see its fault.
	Revealed bool `json:"revealed,omitempty"`
	// Steps are the exercise's steps, in order, each with its progress.
	Steps []StepProgress `json:"steps"`
}

// Snapshot is the lab's switches at one moment.
type Snapshot struct {
	Settings map[string]string `json:"settings"` // every setting, defaults included
	Faults   []control.Fault   `json:"faults"`
}

// StepProgress is one step of a run.
type StepProgress struct {
	ID       string     `json:"id"`
	DoneAt   *time.Time `json:"doneAt,omitempty"`
	Order    string     `json:"order,omitempty"` // the order whose evidence ticked it
	Evidence []Evidence `json:"evidence,omitempty"`
	Hints    int        `json:"hints"` // revealed so far
	Answers  []Given    `json:"answers,omitempty"`
}

// Done reports whether the step is done. A done step stays done.
func (s StepProgress) Done() bool { return s.DoneAt != nil }

// Given is an answer the learner gave, and its verdict.
type Given struct {
	Answer string    `json:"answer"`
	Right  bool      `json:"right"`
	At     time.Time `json:"at"`
}

// Evidence kinds: what ticked a step, and where the learner finds it.
const (
	EvidenceTrace   = "trace"   // ID: trace id; Span: the span's id
	EvidenceEvent   = "event"   // ID: the message's id
	EvidenceSaga    = "saga"    // ID: the order id
	EvidenceOrder   = "order"   // ID: the order id (read through the gateway)
	EvidenceLedger  = "ledger"  // ID: the order id (payments' ledger)
	EvidencePromQL  = "promql"  // ID: the expression; Value: its value
	EvidenceSetting = "setting" // ID: the key; Value: its value
	EvidenceFault   = "fault"   // ID: the fault's id; Value: the fault as people read it
	EvidenceAnswer  = "answer"  // Value: the answer given
)

// Evidence is one thing that made a check hold: a link the page can follow.
type Evidence struct {
	Kind  string `json:"kind"`
	ID    string `json:"id,omitempty"`
	Order string `json:"order,omitempty"` // the order it is about, if any
	Trace string `json:"trace,omitempty"` // its trace, if known
	Span  string `json:"span,omitempty"`
	Value string `json:"value,omitempty"`
}

// progress is the store of runs in database lab.
type progress struct{ pool *pgxpool.Pool }

func openProgress(ctx context.Context, pool *pgxpool.Pool) (*progress, error) {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return nil, err
	}
	if err := pg.Migrate(ctx, pool, sub, migrationTable); err != nil {
		return nil, fmt.Errorf("exercises progress: %w", err)
	}
	return &progress{pool: pool}, nil
}

const runColumns = `id, exercise, who, started_at, state, completed_at, reset_at, snapshot, injected, traffic, cleaned, revealed`

func scanRun(row pgx.Row) (*Run, error) {
	r := &Run{}
	var snap, injected []byte
	if err := row.Scan(&r.ID, &r.Exercise, &r.Who, &r.Started, &r.State, &r.Done, &r.ResetAt, &snap, &injected, &r.Traffic, &r.Cleaned, &r.Revealed); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(snap, &r.Snapshot); err != nil {
		return nil, fmt.Errorf("run %d: snapshot: %w", r.ID, err)
	}
	if err := json.Unmarshal(injected, &r.Injected); err != nil {
		return nil, fmt.Errorf("run %d: injected: %w", r.ID, err)
	}
	return r, nil
}

// current returns the exercise's run that is not reset (open or completed), with its
// steps laid out as e's; nil if there is none.
func (p *progress) current(ctx context.Context, e *Exercise) (*Run, error) {
	r, err := scanRun(p.pool.QueryRow(ctx, `SELECT `+runColumns+` FROM exercise_runs
		WHERE exercise = $1 AND state <> 'reset'`, e.ID))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read run of %s: %w", e.ID, err)
	}
	if err := p.steps(ctx, r, e); err != nil {
		return nil, err
	}
	return r, nil
}

// openOther is the id of an open run of an exercise other than id ("" if none).
func (p *progress) openOther(ctx context.Context, id string) (string, error) {
	var other string
	err := p.pool.QueryRow(ctx, `SELECT exercise FROM exercise_runs
		WHERE state = 'open' AND exercise <> $1 ORDER BY started_at LIMIT 1`, id).Scan(&other)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read open runs: %w", err)
	}
	return other, nil
}

// steps fills in r's steps: one per step of e, in e's order, with what is recorded.
func (p *progress) steps(ctx context.Context, r *Run, e *Exercise) error {
	byID := map[string]*StepProgress{}
	r.Steps = make([]StepProgress, len(e.Steps))
	for i, s := range e.Steps {
		r.Steps[i] = StepProgress{ID: s.ID}
		byID[s.ID] = &r.Steps[i]
	}
	rows, err := p.pool.Query(ctx, `SELECT step, done_at, order_id, evidence, hints FROM exercise_steps WHERE run_id = $1`, r.ID)
	if err != nil {
		return fmt.Errorf("read steps of run %d: %w", r.ID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id       string
			sp       StepProgress
			evidence []byte
		)
		if err := rows.Scan(&id, &sp.DoneAt, &sp.Order, &evidence, &sp.Hints); err != nil {
			return fmt.Errorf("read steps of run %d: %w", r.ID, err)
		}
		if err := json.Unmarshal(evidence, &sp.Evidence); err != nil {
			return fmt.Errorf("run %d step %s: evidence: %w", r.ID, id, err)
		}
		if s := byID[id]; s != nil { // a step since removed from the exercise is dropped
			sp.ID = id
			*s = sp
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read steps of run %d: %w", r.ID, err)
	}
	arows, err := p.pool.Query(ctx, `SELECT step, answer, correct, given_at FROM exercise_answers WHERE run_id = $1 ORDER BY id`, r.ID)
	if err != nil {
		return fmt.Errorf("read answers of run %d: %w", r.ID, err)
	}
	defer arows.Close()
	for arows.Next() {
		var (
			id string
			g  Given
		)
		if err := arows.Scan(&id, &g.Answer, &g.Right, &g.At); err != nil {
			return fmt.Errorf("read answers of run %d: %w", r.ID, err)
		}
		if s := byID[id]; s != nil {
			s.Answers = append(s.Answers, g)
		}
	}
	return arows.Err()
}

// create records a new open run (before setup changes anything, so that a reset can
// restore its snapshot even if setup fails half-way).
func (p *progress) create(ctx context.Context, r *Run) error {
	snap, err := json.Marshal(r.Snapshot)
	if err != nil {
		return err
	}
	err = p.pool.QueryRow(ctx, `INSERT INTO exercise_runs (exercise, who, started_at, snapshot)
		VALUES ($1, $2, $3, $4) RETURNING id`, r.Exercise, r.Who, r.Started, snap).Scan(&r.ID)
	if pg.IsUniqueViolation(err) {
		return fmt.Errorf("start %s: another start of it got there first", r.Exercise)
	}
	if err != nil {
		return fmt.Errorf("record run of %s: %w", r.Exercise, err)
	}
	return nil
}

// setup records what setup did: the faults it injected and whether it started traffic.
func (p *progress) setup(ctx context.Context, r *Run) error {
	injected, err := json.Marshal(r.Injected)
	if err != nil {
		return err
	}
	if injected == nil || string(injected) == "null" {
		injected = []byte("[]")
	}
	_, err = p.pool.Exec(ctx, `UPDATE exercise_runs SET injected = $2, traffic = $3 WHERE id = $1`, r.ID, injected, r.Traffic)
	if err != nil {
		return fmt.Errorf("record setup of run %d: %w", r.ID, err)
	}
	return nil
}

// tick records a step done, with its evidence. A step done already stays as it was.
func (p *progress) tick(ctx context.Context, runID int64, step string, at time.Time, order string, ev []Evidence) error {
	raw, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	if ev == nil {
		raw = []byte("[]")
	}
	_, err = p.pool.Exec(ctx, `INSERT INTO exercise_steps (run_id, step, done_at, order_id, evidence) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (run_id, step) DO UPDATE SET done_at = $3, order_id = $4, evidence = $5
		WHERE exercise_steps.done_at IS NULL`, runID, step, at, order, raw)
	if err != nil {
		return fmt.Errorf("record step %s done: %w", step, err)
	}
	return nil
}

// hint counts one more hint revealed of step and returns how many are now.
func (p *progress) hint(ctx context.Context, runID int64, step string) (int, error) {
	var n int
	err := p.pool.QueryRow(ctx, `INSERT INTO exercise_steps (run_id, step, hints) VALUES ($1, $2, 1)
		ON CONFLICT (run_id, step) DO UPDATE SET hints = exercise_steps.hints + 1 RETURNING hints`, runID, step).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("record hint of %s: %w", step, err)
	}
	return n, nil
}

// answer records an answer given, with its verdict.
func (p *progress) answer(ctx context.Context, runID int64, step string, g Given) error {
	_, err := p.pool.Exec(ctx, `INSERT INTO exercise_answers (run_id, step, answer, correct, given_at) VALUES ($1, $2, $3, $4, $5)`,
		runID, step, g.Answer, g.Right, g.At)
	if err != nil {
		return fmt.Errorf("record answer to %s: %w", step, err)
	}
	return nil
}

// cleaned records that cleanup has run.
func (p *progress) cleaned(ctx context.Context, runID int64) error {
	if _, err := p.pool.Exec(ctx, `UPDATE exercise_runs SET cleaned = true WHERE id = $1`, runID); err != nil {
		return fmt.Errorf("record cleanup of run %d: %w", runID, err)
	}
	return nil
}

// complete marks an open run completed.
func (p *progress) complete(ctx context.Context, runID int64, at time.Time) error {
	if _, err := p.pool.Exec(ctx, `UPDATE exercise_runs SET state = 'completed', completed_at = $2
		WHERE id = $1 AND state = 'open'`, runID, at); err != nil {
		return fmt.Errorf("record run %d completed: %w", runID, err)
	}
	return nil
}

// reset marks a run reset: it is no longer the exercise's current run.
func (p *progress) reset(ctx context.Context, runID int64, at time.Time) error {
	if _, err := p.pool.Exec(ctx, `UPDATE exercise_runs SET state = 'reset', reset_at = $2 WHERE id = $1`, runID, at); err != nil {
		return fmt.Errorf("record run %d reset: %w", runID, err)
	}
	return nil
}

// reveal records that the learner asked to see the diagnosis's fault.
func (p *progress) reveal(ctx context.Context, runID int64) error {
	if _, err := p.pool.Exec(ctx, `UPDATE exercise_runs SET revealed = true WHERE id = $1`, runID); err != nil {
		return fmt.Errorf("record reveal of run %d: %w", runID, err)
	}
	return nil
}
