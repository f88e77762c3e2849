package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// TypeStats is the Message type a client receives about its own connection; its data is
// a ClientStats.
const TypeStats = "stats"

// ClientStats is the data of a "stats" message: how many updates this browser missed
// because it could not keep up, so the page can say "N updates dropped (slow
// connection)" instead of silently showing a thinned-out stream.
type ClientStats struct {
	Dropped uint64 `json:"dropped"`
}

// Config tunes the hub. Zero values take the defaults noted on each field.
type Config struct {
	// SendBuffer is how many messages may wait for one client's writer (256). Beyond
	// that, new messages are dropped for that client only.
	SendBuffer int
	// WriteTimeout bounds one write to one client (10s). A client that cannot take a
	// single message within it is disconnected: it is not slow, it is gone.
	WriteTimeout time.Duration
	// PongTimeout is how long a client may stay silent, pongs included, before it is
	// considered dead and removed (60s).
	PongTimeout time.Duration
	// PingInterval is how often the server pings (PongTimeout*9/10). It must be shorter
	// than PongTimeout, so that a live client's pong can arrive in time; a longer value
	// is replaced by the default.
	PingInterval time.Duration
	// StatsInterval is how often a client that has lost messages is told its drop count
	// (5s). Nothing is sent while the count does not change.
	StatsInterval time.Duration
	// AllowedOrigins are exact "scheme://host[:port]" origins allowed besides the
	// dashboard's own (e.g. a dev server on another port).
	AllowedOrigins []string
	// MaxClients bounds concurrent websockets (64); each costs two goroutines and a send
	// buffer, and a teaching lab has a handful of tabs open, not thousands.
	MaxClients int
	// OnConnect, when set, returns the messages a new client receives before anything
	// else, e.g. the current trace list, so that a freshly opened page is never blank.
	OnConnect func() []Message
}

// Stats is a snapshot of the hub's counters since it was created.
type Stats struct {
	Clients int    `json:"clients"` // connected now
	Sent    uint64 `json:"sent"`    // messages written to clients (snapshots and broadcasts)
	Dropped uint64 `json:"dropped"` // messages dropped because a client's buffer was full
	Refused uint64 `json:"refused"` // connections refused (origin, capacity, shutdown)
}

// readLimit bounds a message from a browser. The protocol is server → browser; the
// browser sends nothing but control frames, so anything big is a misbehaving client.
const readLimit = 512

// closeGrace is how long shutdown waits for writers to say goodbye (a close frame)
// before it cuts the remaining sockets.
const closeGrace = time.Second

// Hub fans messages out to the connected browsers.
//
// Design: no central goroutine (unlike the gorilla chat example, whose hub loop owns
// the client set and receives broadcasts on a channel). Here the client set is guarded
// by a RWMutex: Broadcast takes the read lock and does one non-blocking channel send per
// client, so it costs O(clients) and never waits on a socket, on a slow browser, or on a
// busy hub loop; concurrent publishers don't queue behind each other; connect and
// disconnect, which are rare, take the write lock. With a central loop, Broadcast would
// be a send into the loop's channel, and that send blocks whenever the loop is behind:
// exactly the coupling between producers and slow consumers this package exists to cut.
//
// Each client has two goroutines: a writer, the only one that writes to its socket
// (gorilla allows one concurrent writer), and a reader, which must run for pongs and
// close frames to be processed at all.
type Hub struct {
	cfg      Config
	log      *slog.Logger
	upgrader websocket.Upgrader
	clock    clock // realClock; the package's tests substitute their own

	mu      sync.RWMutex
	clients map[*client]struct{}
	slots   int  // connections counted against MaxClients: upgrading or registered
	closed  bool // Run's context has ended; no new clients

	wg     sync.WaitGroup // every client goroutine
	nextID atomic.Uint64

	sent, dropped, refused atomic.Uint64
}

// New returns a hub ready to serve; call Run to own its lifetime. log may be nil.
func New(cfg Config, log *slog.Logger) *Hub {
	if cfg.SendBuffer <= 0 {
		cfg.SendBuffer = 256
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.PongTimeout <= 0 {
		cfg.PongTimeout = 60 * time.Second
	}
	if cfg.PingInterval <= 0 || cfg.PingInterval >= cfg.PongTimeout {
		cfg.PingInterval = cfg.PongTimeout * 9 / 10
	}
	if cfg.StatsInterval <= 0 {
		cfg.StatsInterval = 5 * time.Second
	}
	if cfg.MaxClients <= 0 {
		cfg.MaxClients = 64
	}
	cfg.AllowedOrigins = append([]string(nil), cfg.AllowedOrigins...)
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Hub{
		cfg: cfg,
		log: log,
		upgrader: websocket.Upgrader{
			HandshakeTimeout: cfg.WriteTimeout,
			ReadBufferSize:   1024, // we read only control frames
			WriteBufferSize:  4096,
			// ServeWS has already checked the origin, with a JSON answer a person can
			// read; this is the same rule again, in case someone reorders ServeWS.
			CheckOrigin: func(r *http.Request) bool { return SameOrigin(r, cfg.AllowedOrigins) },
		},
		clients: make(map[*client]struct{}),
		clock:   realClock{},
	}
}

// Run owns the hub's lifetime: it returns when ctx ends, after closing every client
// (each gets a "going away" close frame, so the page can say so and reconnect later)
// and waiting for their goroutines. Connections are refused from then on. Broadcasting
// needs no Run: the hub works without it, it just never shuts down.
func (h *Hub) Run(ctx context.Context) error {
	for _, o := range h.cfg.AllowedOrigins {
		if _, _, ok := parseOrigin(o); !ok {
			h.log.WarnContext(ctx, "hub: ignoring allowed origin, want scheme://host[:port]", "origin", o)
		}
	}
	h.log.InfoContext(ctx, "hub running",
		"send_buffer", h.cfg.SendBuffer, "max_clients", h.cfg.MaxClients,
		"ping_interval", h.cfg.PingInterval, "pong_timeout", h.cfg.PongTimeout,
		"allowed_origins", h.cfg.AllowedOrigins)
	<-ctx.Done()

	h.mu.Lock()
	h.closed = true
	clients := make([]*client, 0, len(h.clients))
	for c := range h.clients {
		clients = append(clients, c)
	}
	h.mu.Unlock()
	for _, c := range clients {
		h.remove(c, errShutdown)
	}

	// Writers that are idle send their close frame at once; one stuck in a write to a
	// browser that stopped reading would sit there until WriteTimeout. Give them a
	// moment, then close the sockets under them, which fails any blocked write.
	done := make(chan struct{})
	go func() { h.wg.Wait(); close(done) }()
	grace := make(chan struct{})
	graceTimer := h.clock.AfterFunc(closeGrace, func() { close(grace) })
	defer graceTimer.Stop()
	select {
	case <-done:
	case <-grace:
		for _, c := range clients {
			_ = c.conn.Close()
		}
		<-done
	}
	h.log.InfoContext(ctx, "hub stopped", "sent", h.sent.Load(), "dropped", h.dropped.Load())
	return nil
}

// Broadcast queues m for every connected client and never blocks: a client whose
// buffer is full misses m, and the miss is counted for it and in total. The message is
// encoded once, whatever the number of clients. Messages reach each client in the order
// Broadcast was called (for calls from one goroutine), with gaps where drops happened.
func (h *Hub) Broadcast(m Message) {
	b, err := json.Marshal(m)
	if err != nil {
		// Only an invalid Data can fail; that's a bug in the caller, not a runtime
		// condition. There is no request here, hence Background.
		h.log.ErrorContext(context.Background(), "hub: broadcast: invalid message", "type", m.Type, "err", err)
		return
	}
	h.broadcast(b)
}

// Publish encodes v as the data of a message of type typ and broadcasts it.
func (h *Hub) Publish(typ string, v any) error {
	// One encoding pass, same wire shape as Message.
	b, err := json.Marshal(struct {
		Type string `json:"type"`
		Data any    `json:"data"`
	}{typ, v})
	if err != nil {
		return fmt.Errorf("publish %s: %w", typ, err)
	}
	h.broadcast(b)
	return nil
}

func (h *Hub) broadcast(b []byte) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for c := range h.clients {
		select {
		case c.send <- b: // the slice is shared, read-only, by every writer
		default:
			c.dropped.Add(1)
			h.dropped.Add(1)
		}
	}
}

// Stats returns the hub's counters.
func (h *Hub) Stats() Stats {
	h.mu.RLock()
	n := len(h.clients)
	h.mu.RUnlock()
	return Stats{Clients: n, Sent: h.sent.Load(), Dropped: h.dropped.Load(), Refused: h.refused.Load()}
}

// ServeWS upgrades a browser's request to the dashboard's websocket. Refusals happen
// before the upgrade, as plain HTTP answers in the usual JSON error shape:
// 403 forbidden_origin (see SameOrigin; a request without Origin is refused too),
// 400 not_websocket, 503 too_many_clients or shutting_down.
func (h *Hub) ServeWS(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if !SameOrigin(r, h.cfg.AllowedOrigins) {
		h.refused.Add(1)
		h.log.WarnContext(ctx, "hub: refused websocket from foreign origin",
			"origin", r.Header.Get("Origin"), "host", r.Host, "remote", r.RemoteAddr)
		writeError(w, http.StatusForbidden, "forbidden_origin", forbiddenMessage(r))
		return
	}
	if !websocket.IsWebSocketUpgrade(r) {
		writeError(w, http.StatusBadRequest, "not_websocket", "this endpoint speaks websocket only")
		return
	}
	if err := h.reserve(); err != nil {
		h.refused.Add(1)
		h.log.WarnContext(ctx, "hub: refused websocket", "reason", err.code, "remote", r.RemoteAddr)
		writeError(w, http.StatusServiceUnavailable, err.code, err.message)
		return
	}
	conn, err := h.upgrader.Upgrade(w, r, nil)
	if err != nil {
		// The upgrader has already answered the request with an HTTP error.
		h.release()
		h.log.WarnContext(ctx, "hub: upgrade failed", "err", err, "remote", r.RemoteAddr)
		return
	}

	id := h.nextID.Add(1)
	c := &client{
		id:   id,
		conn: conn,
		send: make(chan []byte, h.cfg.SendBuffer),
		done: make(chan struct{}),
		// The client outlives this handler: keep the request's values (trace ids for
		// the log handler) but not its cancellation, which fires when we return.
		ctx: context.WithoutCancel(ctx),
		log: h.log.With("client", id, "remote", r.RemoteAddr),
	}

	h.mu.Lock()
	if h.closed {
		h.slots--
		h.mu.Unlock()
		h.refused.Add(1)
		_ = conn.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseGoingAway, "dashboard shutting down"),
			time.Now().Add(time.Second))
		_ = conn.Close()
		return
	}
	// Registered before the snapshot is taken (in the writer), so nothing published
	// from now on is missed; see writeLoop for why that order is the right one.
	h.clients[c] = struct{}{}
	h.wg.Add(2) // under mu, so that Run's Wait (after closed is set) sees it
	h.mu.Unlock()

	c.log.InfoContext(c.ctx, "hub: client connected", "origin", r.Header.Get("Origin"))
	go h.writeLoop(c)
	go h.readLoop(c)
}

// refusal is why reserve said no.
type refusal struct{ code, message string }

// reserve takes one of MaxClients slots before upgrading, so that the limit holds even
// while several upgrades are in flight and a refusal can still be an HTTP answer.
func (h *Hub) reserve() *refusal {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return &refusal{"shutting_down", "the dashboard is shutting down"}
	}
	if h.slots >= h.cfg.MaxClients {
		return &refusal{"too_many_clients", "too many dashboard connections; close a tab and reload"}
	}
	h.slots++
	return nil
}

func (h *Hub) release() {
	h.mu.Lock()
	h.slots--
	h.mu.Unlock()
}
