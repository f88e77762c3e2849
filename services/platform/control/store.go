package control

import (
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/services/contracts"
	"microlab/services/platform/bus"
	"microlab/services/platform/pg"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store reads and writes settings in database lab.
type Store struct {
	pool *pgxpool.Pool
}

// OpenStore connects to the lab database and migrates it.
func OpenStore(ctx context.Context, url string) (*Store, error) {
	pool, err := pg.Open(ctx, url, func(c *pgxpool.Config) { c.MaxConns = 2 }) // a read every few seconds and the odd write
	if err != nil {
		return nil, fmt.Errorf("open lab database: %w", err)
	}
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		pool.Close()
		return nil, err
	}
	if err := pg.Migrate(ctx, pool, sub, "goose_control"); err != nil {
		pool.Close()
		return nil, fmt.Errorf("lab database: %w", err)
	}
	return &Store{pool: pool}, nil
}

// Close closes the pool.
func (s *Store) Close() { s.pool.Close() }

// Load returns the current snapshot: settings, faults in force and the revision of the
// last change, read in one transaction so they agree.
func (s *Store) Load(ctx context.Context) (Settings, error) {
	out := Defaults()
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT key, value FROM settings`)
		if err != nil {
			return err
		}
		for rows.Next() {
			var k, v string
			if err := rows.Scan(&k, &v); err != nil {
				rows.Close()
				return err
			}
			if _, known := Lookup(k); known {
				out.Values[k] = v
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if out.Faults, err = activeFaults(ctx, tx); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT coalesce(max(revision), 0) FROM setting_changes`).Scan(&out.Revision)
	})
	if err != nil {
		return Settings{}, fmt.Errorf("load settings: %w", err)
	}
	return out, nil
}

// Entry is a setting as listed for people.
type Entry struct {
	Def
	Value string
}

// List returns every setting with its current value, in definition order.
func (s *Store) List(ctx context.Context) ([]Entry, error) {
	cur, err := s.Load(ctx)
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, d := range Defs() {
		out = append(out, Entry{Def: d, Value: cur.Get(d.Key)})
	}
	return out, nil
}

// Change is one setting change, as stored and as announced on lab.control.
type Change struct {
	Key      string    `json:"key"`
	Old      string    `json:"old"`
	New      string    `json:"new"`
	Revision int64     `json:"revision"`
	Source   string    `json:"source"`
	At       time.Time `json:"at"`
}

// Set validates and stores a value; the change is recorded for the timeline. Setting a
// key to its current value is recorded too (a learner pressed the button; show it).
func (s *Store) Set(ctx context.Context, key, value, source string) (Change, error) {
	v, err := Validate(key, value)
	if err != nil {
		return Change{}, Invalid(err)
	}
	var ch Change
	err = s.writeTx(ctx, func(tx pgx.Tx) error {
		d, _ := Lookup(key)
		old := d.Default
		if err := tx.QueryRow(ctx, `SELECT value FROM settings WHERE key = $1`, key).Scan(&old); err != nil && err != pgx.ErrNoRows {
			return err
		}
		var err error
		if ch, err = record(ctx, tx, key, old, v, source); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO settings (key, value, revision, updated_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT (key) DO UPDATE SET value = $2, revision = $3, updated_at = $4`, key, v, ch.Revision, ch.At)
		return err
	})
	if err != nil {
		return Change{}, fmt.Errorf("set %s: %w", key, err)
	}
	return ch, nil
}

// Changes returns the most recent changes, newest first.
func (s *Store) Changes(ctx context.Context, limit int) ([]Change, error) {
	rows, err := s.pool.Query(ctx, `SELECT revision, key, old_value, new_value, source, changed_at
		FROM setting_changes ORDER BY revision DESC LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("list changes: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Change, error) {
		var c Change
		err := r.Scan(&c.Revision, &c.Key, &c.Old, &c.New, &c.Source, &c.At)
		return c, err
	})
}

// MessageType is the AMQP type of a settings announcement.
const MessageType = "lab.setting.changed"

// Announce broadcasts a stored change on lab.control. The database is the truth: an
// instance that misses the announcement still converges at its next periodic re-read.
func Announce(ctx context.Context, pub *bus.Publisher, ch Change) error {
	body, err := json.Marshal(ch)
	if err != nil {
		return fmt.Errorf("announce: %w", err)
	}
	return pub.Publish(ctx, contracts.ExchangeControl, "", amqp.Publishing{
		ContentType: "application/json", DeliveryMode: amqp.Transient, Type: MessageType,
		MessageId: fmt.Sprintf("setting-%d", ch.Revision), Timestamp: ch.At, Body: body,
	})
}
