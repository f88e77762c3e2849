package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// errShutdown is the cause recorded for clients closed because Run's context ended.
var errShutdown = errors.New("hub shutting down")

// client is one browser connection.
type client struct {
	id   uint64
	conn *websocket.Conn
	// send is the client's queue. Broadcast only ever does non-blocking sends into it,
	// and it is never closed (a close racing a send would panic); done says "stop".
	send    chan []byte
	done    chan struct{}
	once    sync.Once // removal happens once, whoever notices first
	dropped atomic.Uint64
	ctx     context.Context
	log     *slog.Logger
}

// remove takes c out of the hub and tells its writer to stop. Either goroutine of the
// client, or Run at shutdown, may call it, in any order; only the first call counts, and
// its cause is the one logged.
func (h *Hub) remove(c *client, cause error) {
	c.once.Do(func() {
		h.mu.Lock()
		if _, ok := h.clients[c]; ok {
			delete(h.clients, c)
			h.slots--
		}
		h.mu.Unlock()
		close(c.done)
		c.log.InfoContext(c.ctx, "hub: client disconnected", "cause", cause.Error(), "dropped", c.dropped.Load())
	})
}

// writeLoop is the only goroutine that writes to c's socket (gorilla supports one
// concurrent writer): the snapshot, then queued messages, pings and stats.
func (h *Hub) writeLoop(c *client) {
	defer h.wg.Done()
	// Closing the socket also ends readLoop, whose next read fails.
	defer func() { _ = c.conn.Close() }()

	// The client was registered before this snapshot is taken. Whatever is published
	// while OnConnect runs waits in c.send and is written after the snapshot, so the
	// page sees the snapshot first and misses nothing; an update may show up both in the
	// snapshot and after it, which is harmless because the browser applies messages as
	// upserts (by trace id, saga id, ...). The other orders are worse: snapshot then
	// register loses what happens in between; one lock around both would make Broadcast
	// wait for OnConnect.
	if err := h.writeSnapshot(c); err != nil {
		h.remove(c, err)
		return
	}

	ping := h.clock.NewTicker(h.cfg.PingInterval)
	defer ping.Stop()
	stats := h.clock.NewTicker(h.cfg.StatsInterval)
	defer stats.Stop()
	var reported uint64 // the drop count the browser has last been told
	for {
		select {
		case <-c.done:
			// Best effort: the browser may already be gone.
			_ = c.conn.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(websocket.CloseGoingAway, "dashboard closed the connection"),
				time.Now().Add(time.Second))
			return
		case b := <-c.send:
			if err := h.write(c, b); err != nil {
				h.remove(c, err)
				return
			}
			h.sent.Add(1)
		case <-ping.Chan():
			// A ping both proves the browser alive (its pong restarts the pong timer in
			// readLoop) and keeps idle proxies and NATs from dropping a quiet connection.
			if err := c.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(h.cfg.WriteTimeout)); err != nil {
				h.remove(c, fmt.Errorf("ping: %w", err))
				return
			}
		case <-stats.Chan():
			// Written directly, not queued: the queue is full exactly when this news
			// matters, and queuing it would drop it.
			d := c.dropped.Load()
			if d == reported {
				continue
			}
			data, _ := json.Marshal(ClientStats{Dropped: d}) // cannot fail
			b, _ := json.Marshal(Message{Type: TypeStats, Data: data})
			if err := h.write(c, b); err != nil {
				h.remove(c, err)
				return
			}
			reported = d
		}
	}
}

// writeSnapshot writes the OnConnect messages, if any.
func (h *Hub) writeSnapshot(c *client) error {
	if h.cfg.OnConnect == nil {
		return nil
	}
	for _, m := range h.cfg.OnConnect() {
		b, err := json.Marshal(m)
		if err != nil {
			c.log.ErrorContext(c.ctx, "hub: snapshot: invalid message", "type", m.Type, "err", err)
			continue
		}
		if err := h.write(c, b); err != nil {
			return fmt.Errorf("snapshot: %w", err)
		}
		h.sent.Add(1)
	}
	return nil
}

// write sends one text frame, bounded by WriteTimeout. A browser that cannot accept a
// single frame in that time is not slow but stuck (a sleeping laptop, a dead network);
// the caller then removes it. Mere slowness is handled by the queue dropping messages.
func (h *Hub) write(c *client, b []byte) error {
	if err := c.conn.SetWriteDeadline(time.Now().Add(h.cfg.WriteTimeout)); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if err := c.conn.WriteMessage(websocket.TextMessage, b); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// readLoop reads from c until the connection fails. The browser sends nothing the hub
// uses (the protocol is server → browser), but reading is still required: gorilla
// processes pongs and close frames only inside a read. The liveness check is a timer of
// PongTimeout that each pong starts again; a browser that stops answering pings lets it
// run out, which moves the socket's read deadline into the past: the blocked read fails
// with a timeout, exactly as if the deadline had been set PongTimeout after the last
// pong, and the client is removed. (A timer rather than the deadline itself, so that the
// hub's clock, and with it a test, decides when PongTimeout has passed.)
func (h *Hub) readLoop(c *client) {
	defer h.wg.Done()
	c.conn.SetReadLimit(readLimit)
	// net.Conn deadlines may be set from any goroutine; the timer's runs on its own.
	expire := h.clock.AfterFunc(h.cfg.PongTimeout, func() { _ = c.conn.NetConn().SetReadDeadline(time.Unix(1, 0)) })
	defer expire.Stop()
	c.conn.SetPongHandler(func(string) error {
		expire.Reset(h.cfg.PongTimeout)
		return nil
	})
	for {
		if _, _, err := c.conn.ReadMessage(); err != nil {
			h.remove(c, fmt.Errorf("read: %w", err))
			return
		}
		// Messages from the browser are read and ignored.
	}
}
