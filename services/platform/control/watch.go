package control

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"microlab/services/contracts"
	"microlab/services/platform/bus"
)

// Watcher keeps an instance's view of the settings current.
type Watcher struct {
	store    *Store
	log      *slog.Logger
	cur      atomic.Pointer[Settings]
	onChange func(old, new Settings)
	// Resync is how often the database is re-read regardless of announcements.
	Resync time.Duration
}

// NewWatcher reads the settings once (retrying until ctx ends: an instance must not
// consume or serve with settings it has not read). onChange, if not nil, is called after
// every change with the previous and the new snapshot.
func NewWatcher(ctx context.Context, store *Store, log *slog.Logger, onChange func(old, new Settings)) (*Watcher, error) {
	w := &Watcher{store: store, log: log, onChange: onChange, Resync: 5 * time.Second}
	for {
		s, err := store.Load(ctx)
		if err == nil {
			w.cur.Store(&s)
			return w, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("read lab settings: %w", err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// Current is the snapshot in force.
func (w *Watcher) Current() Settings { return *w.cur.Load() }

// Run listens on lab.control (an exclusive queue per instance, re-declared after a
// reconnect) and re-reads the database on every announcement and every Resync interval.
// The re-read is what applies changes while conn has no broker to listen to (it is
// down, or conn is nil), so a missed announcement never leaves an instance behind.
func (w *Watcher) Run(ctx context.Context, conn *bus.Conn) error {
	nudges := make(chan struct{}, 1)
	if conn != nil {
		go w.listen(ctx, conn, nudges)
	}
	t := time.NewTicker(w.Resync)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-nudges:
		case <-t.C:
		}
		w.refresh(ctx)
	}
}

func (w *Watcher) refresh(ctx context.Context) {
	s, err := w.store.Load(ctx)
	if err != nil {
		if ctx.Err() == nil {
			w.log.WarnContext(ctx, "could not re-read lab settings; keeping the current ones", "err", err)
		}
		return
	}
	old := w.Current()
	if s.Revision <= old.Revision {
		return
	}
	w.cur.Store(&s)
	for k, v := range s.Values {
		if old.Values[k] != v {
			w.log.InfoContext(ctx, "lab setting applied", "key", k, "old", old.Values[k], "new", v, "revision", s.Revision)
		}
	}
	if w.onChange != nil {
		w.onChange(old, s)
	}
}

func (w *Watcher) listen(ctx context.Context, conn *bus.Conn, nudges chan<- struct{}) {
	nudge := func() {
		select {
		case nudges <- struct{}{}:
		default:
		}
	}
	_ = bus.Subscribe(ctx, conn, bus.Subscription{
		Exchange:     contracts.ExchangeControl,
		OnSubscribed: func(string) { nudge() }, // we may have missed announcements while disconnected
		OnLost:       func(err error) { w.log.Debug("lab.control listener reconnecting", "err", err) },
	}, func(_ context.Context, d bus.Delivery) {
		var c Change
		if err := json.Unmarshal(d.Body, &c); err != nil {
			w.log.Warn("ignoring malformed lab.control message", "err", err)
			return
		}
		nudge()
	})
}

// Follow calls apply with the settings in force, at once and again after every change
// (announced on lab.control, or seen at the watcher's periodic re-read), one call at a
// time, until ctx ends: changes that arrive during a call come together in the next.
// It is how `lab up` applies the settings that are its to apply (db.topology, the
// scale.<service> settings), where a service would read them itself.
func Follow(ctx context.Context, store *Store, conn *bus.Conn, log *slog.Logger, apply func(Settings)) error {
	nudge := make(chan struct{}, 1)
	poke := func() {
		select {
		case nudge <- struct{}{}:
		default:
		}
	}
	w, err := NewWatcher(ctx, store, log, func(_, _ Settings) { poke() })
	if err != nil {
		return err
	}
	go func() { _ = w.Run(ctx, conn) }()
	poke()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-nudge:
		}
		apply(w.Current())
	}
}
