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

// Load returns the current snapshot.
func (s *Store) Load(ctx context.Context) (Settings, error) {
	out := Defaults()
	rows, err := s.pool.Query(ctx, `SELECT key, value, revision FROM settings`)
	if err != nil {
		return Settings{}, fmt.Errorf("load settings: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var k, v string
		var rev int64
		if err := rows.Scan(&k, &v, &rev); err != nil {
			return Settings{}, fmt.Errorf("load settings: %w", err)
		}
		if _, known := Lookup(k); known {
			out.Values[k] = v
		}
		out.Revision = max(out.Revision, rev)
	}
	return out, rows.Err()
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
		return Change{}, err
	}
	var ch Change
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Serialise writers so old/new are exact even with two dashboards clicking.
		if _, err := tx.Exec(ctx, `LOCK TABLE settings IN SHARE ROW EXCLUSIVE MODE`); err != nil {
			return err
		}
		d, _ := Lookup(key)
		old := d.Default
		if err := tx.QueryRow(ctx, `SELECT value FROM settings WHERE key = $1`, key).Scan(&old); err != nil && err != pgx.ErrNoRows {
			return err
		}
		ch = Change{Key: key, Old: old, New: v, Source: source}
		if err := tx.QueryRow(ctx, `SELECT nextval('settings_revision'), now()`).Scan(&ch.Revision, &ch.At); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO settings (key, value, revision, updated_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT (key) DO UPDATE SET value = $2, revision = $3, updated_at = $4`, key, v, ch.Revision, ch.At); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO setting_changes (revision, key, old_value, new_value, source, changed_at)
			VALUES ($1, $2, $3, $4, $5, $6)`, ch.Revision, key, old, v, source, ch.At)
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
