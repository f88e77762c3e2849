package control

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

const faultColumns = `id, service, instance, kind, value, "on", created_at, expires_at, source, hidden`

func scanFaults(rows pgx.Rows) ([]Fault, error) {
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Fault, error) {
		var f Fault
		err := r.Scan(&f.ID, &f.Service, &f.Instance, &f.Kind, &f.Value, &f.On, &f.Created, &f.Expires, &f.Source, &f.Hidden)
		return f, err
	})
}

func activeFaults(ctx context.Context, q pgx.Tx) ([]Fault, error) {
	rows, err := q.Query(ctx, `SELECT `+faultColumns+` FROM faults WHERE expires_at > now() ORDER BY id`)
	if err != nil {
		return nil, err
	}
	return scanFaults(rows)
}

// Faults returns the faults in force, oldest first.
func (s *Store) Faults(ctx context.Context) ([]Fault, error) {
	var out []Fault
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		out, err = activeFaults(ctx, tx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list faults: %w", err)
	}
	return out, nil
}

// faultKey is how a fault shows on the timeline: "fault payments" or "fault payments-2";
// a hidden one's, "fault (hidden)".
func faultKey(f Fault) string {
	if f.Hidden {
		return hiddenKey
	}
	return "fault " + f.Target()
}

// faultText is the fault as the timeline shows it: its String, or HiddenFaultText.
func faultText(f Fault) string {
	if f.Hidden {
		return HiddenFaultText
	}
	return f.String()
}

// record stores a change for the timeline and returns it; tx holds the settings lock.
func record(ctx context.Context, tx pgx.Tx, key, old, new, source string) (Change, error) {
	ch := Change{Key: key, Old: old, New: new, Source: source}
	if err := tx.QueryRow(ctx, `SELECT nextval('settings_revision'), now()`).Scan(&ch.Revision, &ch.At); err != nil {
		return Change{}, err
	}
	_, err := tx.Exec(ctx, `INSERT INTO setting_changes (revision, key, old_value, new_value, source, changed_at)
		VALUES ($1, $2, $3, $4, $5, $6)`, ch.Revision, key, old, new, source, ch.At)
	return ch, err
}

// writeTx runs fn serialised with every other change (settings and faults), so that
// revisions and old → new values are exact.
func (s *Store) writeTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `LOCK TABLE settings IN SHARE ROW EXCLUSIVE MODE`); err != nil {
			return err
		}
		// Expired faults go at the next change: they are out of force already.
		if _, err := tx.Exec(ctx, `DELETE FROM faults WHERE expires_at <= now()`); err != nil {
			return err
		}
		return fn(tx)
	})
}

// AddFault validates spec and stores the fault (a poison fault is recorded only: the
// control plane injects its messages). The change is recorded for the timeline.
func (s *Store) AddFault(ctx context.Context, spec FaultSpec, source string) (Fault, Change, error) {
	f, err := spec.Validate(time.Now())
	if err != nil {
		return Fault{}, Change{}, Invalid(err)
	}
	f.Source = source
	var ch Change
	err = s.writeTx(ctx, func(tx pgx.Tx) error {
		until := f.Expires.Sub(f.Created).Round(time.Second)
		new := fmt.Sprintf("%s for %s", f, until)
		if f.Kind == FaultPoison {
			new = fmt.Sprintf("%s: %d malformed messages into %s.events", f, f.Count(), f.Service)
		} else if err := f.insert(ctx, tx, until); err != nil {
			return err
		}
		if f.Hidden {
			new = HiddenFaultText
		}
		var err error
		ch, err = record(ctx, tx, faultKey(f), "", new, source)
		return err
	})
	if err != nil {
		return Fault{}, Change{}, fmt.Errorf("add fault: %w", err)
	}
	return f, ch, nil
}

// insert stores f, in force for until from now, and fills in its id and times.
func (f *Fault) insert(ctx context.Context, tx pgx.Tx, until time.Duration) error {
	return tx.QueryRow(ctx, `INSERT INTO faults (service, instance, kind, value, "on", expires_at, source, hidden)
		VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6), $7, $8) RETURNING id, created_at, expires_at`,
		f.Service, f.Instance, f.Kind, f.Value, f.On, until.Seconds(), f.Source, f.Hidden).Scan(&f.ID, &f.Created, &f.Expires)
}

// RevealFaults shows the hidden faults among ids as they are (a diagnosis answered, or
// given up on), recording one change each, from HiddenFaultText to the fault, on its
// own key ("fault catalog"). Faults not hidden, or gone, are left alone.
func (s *Store) RevealFaults(ctx context.Context, ids []int64, source string) ([]Change, error) {
	var out []Change
	if len(ids) == 0 {
		return nil, nil
	}
	err := s.writeTx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `UPDATE faults SET hidden = false WHERE id = ANY($1) AND hidden
			RETURNING `+faultColumns, ids)
		if err != nil {
			return err
		}
		shown, err := scanFaults(rows)
		if err != nil {
			return err
		}
		for _, f := range shown {
			ch, err := record(ctx, tx, faultKey(f), HiddenFaultText, fmt.Sprintf("%s (revealed)", f), source)
			if err != nil {
				return err
			}
			out = append(out, ch)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reveal faults: %w", err)
	}
	return out, nil
}

// ClearFaults removes the faults in force on target ("" every fault; a service: its
// faults and its instances'; an instance: that instance's), recording one change each.
func (s *Store) ClearFaults(ctx context.Context, target, source string) ([]Change, error) {
	var out []Change
	err := s.writeTx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `DELETE FROM faults WHERE $1 = '' OR service = $1 OR instance = $1
			RETURNING `+faultColumns, target)
		if err != nil {
			return err
		}
		out, err = recordCleared(ctx, tx, rows, source, out)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("clear faults: %w", err)
	}
	return out, nil
}

// recordCleared records a "cleared" change for each fault in rows (the RETURNING of a
// DELETE) and appends them to out.
func recordCleared(ctx context.Context, tx pgx.Tx, rows pgx.Rows, source string, out []Change) ([]Change, error) {
	gone, err := scanFaults(rows)
	if err != nil {
		return out, err
	}
	for _, f := range gone {
		ch, err := record(ctx, tx, faultKey(f), faultText(f), "cleared", source)
		if err != nil {
			return out, err
		}
		out = append(out, ch)
	}
	return out, nil
}

// ErrFaultGone means a one-shot fault was claimed already (by another instance, or it
// was cleared or expired).
var ErrFaultGone = errors.New("fault no longer in force")

// ClaimFault removes a one-shot fault that instance is about to carry out, so that it
// fires once (a crash fault must not crash the restarted process again), and records
// that it fired. ErrFaultGone if another instance claimed it first.
func (s *Store) ClaimFault(ctx context.Context, id int64, instance string) (Change, error) {
	var ch Change
	err := s.writeTx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `DELETE FROM faults WHERE id = $1 AND expires_at > now() RETURNING `+faultColumns, id)
		if err != nil {
			return err
		}
		gone, err := scanFaults(rows)
		if err != nil {
			return err
		}
		if len(gone) == 0 {
			return ErrFaultGone
		}
		ch, err = record(ctx, tx, faultKey(gone[0]), faultText(gone[0]), "fired in "+instance, instance)
		return err
	})
	if errors.Is(err, ErrFaultGone) {
		return Change{}, err
	}
	if err != nil {
		return Change{}, fmt.Errorf("claim fault %d: %w", id, err)
	}
	return ch, nil
}

// Reset puts every setting back to its default and clears every fault, recording a
// change for each setting that was not at its default and each fault cleared.
func (s *Store) Reset(ctx context.Context, source string) ([]Change, error) {
	var out []Change
	err := s.writeTx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `DELETE FROM settings RETURNING key, value`)
		if err != nil {
			return err
		}
		type kv struct{ k, v string }
		olds, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (kv, error) {
			var p kv
			return p, r.Scan(&p.k, &p.v)
		})
		if err != nil {
			return err
		}
		for _, p := range olds {
			d, known := Lookup(p.k)
			if !known || p.v == d.Default {
				continue
			}
			ch, err := record(ctx, tx, p.k, p.v, d.Default, source)
			if err != nil {
				return err
			}
			out = append(out, ch)
		}
		rows, err = tx.Query(ctx, `DELETE FROM faults RETURNING `+faultColumns)
		if err != nil {
			return err
		}
		if out, err = recordCleared(ctx, tx, rows, source, out); err != nil {
			return err
		}
		if len(out) == 0 { // nothing to undo: still a revision, so a reset shows and announces
			ch, err := record(ctx, tx, "reset", "", "defaults", source)
			if err != nil {
				return err
			}
			out = append(out, ch)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reset: %w", err)
	}
	return out, nil
}

// InvalidError is a request the control plane refuses: a bad key, value or fault. Its
// message is the one every face shows (400 in the API, exit 2 in the CLI, inline in the
// browser); nothing was stored.
type InvalidError struct{ Err error }

func (e *InvalidError) Error() string { return e.Err.Error() }
func (e *InvalidError) Unwrap() error { return e.Err }

// Invalid wraps err as an InvalidError.
func Invalid(err error) error { return &InvalidError{Err: err} }

// IsInvalid reports whether err is a refusal of bad input.
func IsInvalid(err error) bool {
	var ie *InvalidError
	return errors.As(err, &ie)
}
