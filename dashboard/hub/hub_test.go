package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// patience bounds every wait for something that must happen. It only costs time when
// the test fails anyway, so it is long enough for a loaded machine running -race.
const patience = time.Minute

// testHub is a hub served by a real HTTP server on 127.0.0.1, with Run going.
type testHub struct {
	*Hub
	srv    *httptest.Server
	stop   context.CancelFunc
	runErr chan error
}

func startHub(t *testing.T, cfg Config) *testHub {
	t.Helper()
	return startHubWithClock(t, cfg, nil)
}

// startHubWithClock is startHub with the hub's timers on clk (nil: the real clock).
func startHubWithClock(t *testing.T, cfg Config, clk clock) *testHub {
	t.Helper()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := New(cfg, log)
	if clk != nil {
		h.clock = clk
	}
	ctx, cancel := context.WithCancel(context.Background())
	th := &testHub{Hub: h, stop: cancel, runErr: make(chan error, 1)}
	go func() { th.runErr <- h.Run(ctx) }()
	th.srv = httptest.NewServer(http.HandlerFunc(h.ServeWS)) // binds 127.0.0.1
	t.Cleanup(func() {
		cancel()
		select {
		case <-th.runErr:
		case <-time.After(patience):
			t.Errorf("Run did not return within %s of its context ending", patience)
		}
		th.srv.Close()
	})
	return th
}

// origin is the hub's own origin, what the dashboard page would send.
func (th *testHub) origin() string { return "http://" + th.srv.Listener.Addr().String() }

func (th *testHub) dial(t *testing.T, d *websocket.Dialer, origin string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	if d == nil {
		d = &websocket.Dialer{HandshakeTimeout: patience}
	}
	hdr := http.Header{}
	if origin != "" {
		hdr.Set("Origin", origin)
	}
	c, resp, err := d.Dial("ws://"+th.srv.Listener.Addr().String()+"/ws", hdr)
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, resp, err
}

// connect dials with the hub's own origin and waits until the hub has registered the
// client (the handshake completes just before registration), so that broadcasts made
// after connect returns reach it.
func (th *testHub) connect(t *testing.T, d *websocket.Dialer) *websocket.Conn {
	t.Helper()
	before := th.Stats().Clients
	c, _, err := th.dial(t, d, th.origin())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	waitFor(t, "client registered", func() bool { return th.Stats().Clients > before })
	return c
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// wire is a received message with its data decoded as far as the tests need.
type wire struct {
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
}

func readMsg(t *testing.T, c *websocket.Conn) wire {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(patience))
	_, b, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var m wire
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("message %q is not JSON: %v", b, err)
	}
	return m
}

func TestServeWSOriginCheck(t *testing.T) {
	th := startHub(t, Config{AllowedOrigins: []string{"http://localhost:5173"}})

	t.Run("foreign origin is refused before the upgrade", func(t *testing.T) {
		_, resp, err := th.dial(t, nil, "https://evil.example")
		assertRefused(t, resp, err, http.StatusForbidden, "forbidden_origin")
	})
	t.Run("missing origin is refused (tools can set one)", func(t *testing.T) {
		_, resp, err := th.dial(t, nil, "")
		assertRefused(t, resp, err, http.StatusForbidden, "forbidden_origin")
	})
	if s := th.Stats(); s.Clients != 0 || s.Refused != 2 {
		t.Fatalf("after two refusals: %+v, want 0 clients, 2 refused", s)
	}

	t.Run("same origin connects and receives broadcasts in order", func(t *testing.T) {
		c := th.connect(t, nil)
		const n = 200 // a burst within the default SendBuffer (256), so nothing may drop
		for i := range n {
			if err := th.Publish("seq", i); err != nil {
				t.Fatal(err)
			}
		}
		for i := range n {
			m := readMsg(t, c)
			if m.Type != "seq" || string(m.Data) != fmt.Sprint(i) {
				t.Fatalf("message %d = %s %s, want seq %d", i, m.Type, m.Data, i)
			}
		}
		c.Close()
		waitFor(t, "client removed", func() bool { return th.Stats().Clients == 0 })
		// The writer counts a message once its write has returned, which may be just after
		// the browser has read it: wait for the count rather than catch it mid-update.
		waitFor(t, fmt.Sprintf("%d messages counted as sent", n), func() bool { return th.Stats().Sent >= n })
		if s := th.Stats(); s.Sent != n || s.Dropped != 0 {
			t.Fatalf("stats %+v, want %d sent and none dropped", s, n)
		}
	})

	t.Run("allowed extra origin connects", func(t *testing.T) {
		c, _, err := th.dial(t, nil, "http://localhost:5173")
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		waitFor(t, "client registered", func() bool { return th.Stats().Clients == 1 })
		th.Broadcast(Message{Type: "hello", Data: json.RawMessage(`{"x":1}`)})
		if m := readMsg(t, c); m.Type != "hello" || string(m.Data) != `{"x":1}` {
			t.Fatalf("got %s %s", m.Type, m.Data)
		}
	})
}

func TestServeWSRefusesPlainHTTPAndTooManyClients(t *testing.T) {
	th := startHub(t, Config{MaxClients: 1})

	req, _ := http.NewRequest(http.MethodGet, th.srv.URL+"/ws", nil)
	req.Header.Set("Origin", th.origin())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("plain GET: status %d, want 400", resp.StatusCode)
	}
	assertErrorBody(t, resp.Header.Get("Content-Type"), body, "not_websocket")

	first := th.connect(t, nil)
	_, resp, err = th.dial(t, nil, th.origin())
	assertRefused(t, resp, err, http.StatusServiceUnavailable, "too_many_clients")

	first.Close() // frees the slot
	waitFor(t, "slot freed", func() bool { return th.Stats().Clients == 0 })
	th.connect(t, nil)
}

func assertRefused(t *testing.T, resp *http.Response, err error, status int, code string) {
	t.Helper()
	if !errors.Is(err, websocket.ErrBadHandshake) {
		t.Fatalf("dial error = %v, want a refused handshake", err)
	}
	if resp == nil || resp.StatusCode != status {
		t.Fatalf("response %v, want status %d", resp, status)
	}
	body, _ := io.ReadAll(resp.Body)
	assertErrorBody(t, resp.Header.Get("Content-Type"), body, code)
}

// A browser that stops reading must not delay the others, and Broadcast must not wait
// for it. The slow client shrinks its socket's receive buffer and reads nothing while
// 20k messages of ~1 KiB (20 MiB, far more than the kernel buffers between the two
// sockets hold) are broadcast; the fast client reads them all, in order.
//
// No wall-clock bound: the slow client is stuck for the whole loop (it reads nothing until
// the loop is over, and its writer, blocked in a write, could only get free through
// WriteTimeout, an hour away). A Broadcast that waited for it would therefore never
// return, and the fast client, which gets each message only after its Broadcast, would
// wait in vain: its read deadline fails the test.
func TestSlowClientDoesNotDelayFastOne(t *testing.T) {
	const (
		n          = 20_000
		sendBuffer = 256
	)
	th := startHub(t, Config{
		SendBuffer: sendBuffer,
		// Far longer than any run of the test, however slow: the stuck client is neither
		// cut off by a write timeout nor removed for missing pongs, so only Broadcast
		// waiting for it, or evicting it to make room, could change the counts below.
		WriteTimeout:  time.Hour,
		PongTimeout:   time.Hour,
		StatsInterval: 100 * time.Millisecond,
	})

	slowDialer := &websocket.Dialer{
		HandshakeTimeout: patience,
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			_ = c.(*net.TCPConn).SetReadBuffer(4096)
			return c, nil
		},
	}
	slow := th.connect(t, slowDialer)
	fast := th.connect(t, nil)

	// The fast client checks order and counts what it got.
	var fastGot atomic.Int64
	fastErr := make(chan error, 1)
	go func() {
		for i := range n {
			_ = fast.SetReadDeadline(time.Now().Add(patience))
			_, b, err := fast.ReadMessage()
			if err != nil {
				fastErr <- fmt.Errorf("after %d messages: %w", i, err)
				return
			}
			var m struct{ Data struct{ I int } }
			if err := json.Unmarshal(b, &m); err != nil || m.Data.I != i {
				fastErr <- fmt.Errorf("message %d: got i=%d (%v)", i, m.Data.I, err)
				return
			}
			fastGot.Add(1)
		}
		fastErr <- nil
	}()

	// The broadcasts run on their own goroutine, so that a Broadcast stuck on the slow
	// client shows up as the fast client's failure rather than as a hung test.
	pad := strings.Repeat("x", 1000)
	var slowest time.Duration
	loopDone := make(chan time.Duration, 1)
	quit := make(chan struct{}) // a failed test stops the loop
	t.Cleanup(func() { close(quit) })
	start := time.Now()
	go func() {
		for i := range n {
			// Pace to the fast reader so that its own queue never fills: it should get
			// every message, and any drop for it would be the test's doing. The pacing
			// follows the fast client only; the slow one reads nothing throughout.
			for int64(i)-fastGot.Load() > sendBuffer/2 {
				select {
				case <-quit:
					return
				case <-time.After(20 * time.Microsecond):
				}
			}
			t0 := time.Now()
			th.Broadcast(Message{Type: "n", Data: json.RawMessage(fmt.Sprintf(`{"i":%d,"pad":%q}`, i, pad))})
			slowest = max(slowest, time.Since(t0))
		}
		loopDone <- time.Since(start)
	}()

	if err := <-fastErr; err != nil {
		t.Fatalf("fast client: %v (a Broadcast waiting for the stuck client would starve it)", err)
	}
	fastDone := time.Since(start)
	loop := <-loopDone // the fast client got the last message, so the last Broadcast has been made
	st := th.Stats()
	t.Logf("broadcast loop %v, fast client done after %v, slowest Broadcast %v, stats %+v", loop, fastDone, slowest, st)

	if st.Clients != 2 {
		t.Fatalf("clients = %d, want 2: the slow client must be kept (it only drops)", st.Clients)
	}
	if st.Dropped == 0 {
		t.Fatal("nothing dropped: the slow client was never stuck, so the test proves nothing")
	}
	dropped := st.Dropped // all the slow client's: the fast one got all n

	// The slow client wakes up: it gets what was queued, in order, with gaps where the
	// drops were, and a stats message telling it how many it missed. Its receive buffer
	// goes back to a usual size first: through a 4 KiB window, with TCP's zero-window
	// probes backed off after the long stall, draining takes minutes.
	_ = slow.NetConn().(*net.TCPConn).SetReadBuffer(1 << 20)
	var data int
	var told uint64
	last := -1
	for data < n-int(dropped) || told != dropped {
		m := readMsg(t, slow)
		switch m.Type {
		case TypeStats:
			var cs ClientStats
			if err := json.Unmarshal(m.Data, &cs); err != nil {
				t.Fatal(err)
			}
			if cs.Dropped < told || cs.Dropped > dropped {
				t.Fatalf("stats says %d dropped after %d, hub counted %d", cs.Dropped, told, dropped)
			}
			told = cs.Dropped
		case "n":
			var d struct{ I int }
			if err := json.Unmarshal(m.Data, &d); err != nil {
				t.Fatal(err)
			}
			if d.I <= last {
				t.Fatalf("slow client got %d after %d: out of order", d.I, last)
			}
			last = d.I
			data++
		default:
			t.Fatalf("unexpected message type %q", m.Type)
		}
	}
	// Every message was either delivered or counted as dropped, none lost silently.
	if data+int(dropped) != n {
		t.Fatalf("slow client: %d delivered + %d dropped != %d broadcast", data, dropped, n)
	}
	// Counted once each write has returned, which may trail the read just made.
	want := uint64(2*n) - dropped
	waitFor(t, fmt.Sprintf("%d messages counted as sent", want), func() bool { return th.Stats().Sent >= want })
	if got := th.Stats().Sent; got != want {
		t.Fatalf("sent = %d, want %d", got, want)
	}
}

// The hub's clock is the test's: a ping goes out when the test advances the clock by
// PingInterval, and PongTimeout has passed when the test says so, however long the
// machine takes to run the goroutines in between.
func TestPingsKeepIdleClientsAndRemoveDeadOnes(t *testing.T) {
	const (
		pingInterval = time.Second
		pongTimeout  = 3 * time.Second
	)
	clk := newFakeClock()
	// WriteTimeout bounds the hub's ping writes in real time: far beyond any stall.
	th := startHubWithClock(t, Config{PingInterval: pingInterval, PongTimeout: pongTimeout, WriteTimeout: time.Hour}, clk)

	// A live client: its reads run its ping handler, which answers with a pong (as
	// gorilla's default one does, but with a write deadline no stall can miss).
	live := th.connect(t, nil)
	live.SetPingHandler(func(data string) error {
		return live.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(patience))
	})
	liveMsgs := make(chan wire, 1)
	liveErr := make(chan error, 1)
	go func() {
		for {
			_, b, err := live.ReadMessage()
			if err != nil {
				liveErr <- err
				return
			}
			var m wire
			_ = json.Unmarshal(b, &m)
			liveMsgs <- m
		}
	}()

	// A dead-ish client: it reads (so its TCP connection is fine) but never answers.
	deaf := th.connect(t, nil)
	deaf.SetPingHandler(func(string) error { return nil })
	deafErr := make(chan error, 1)
	go func() {
		for {
			if _, _, err := deaf.ReadMessage(); err != nil {
				deafErr <- err
				return
			}
		}
	}()

	// Both clients' timers are running before the clock moves: each one's pong timer
	// (armed by its reader at time 0) and its writer's ping and stats tickers.
	waitFor(t, "both clients' timers", func() bool {
		tickers, timers, _, _ := clk.counts(0)
		return tickers == 4 && timers == 2
	})
	// tick advances the clock and, if a ping falls due, waits for the live client's pong
	// to reach the hub (its pong timer is reset), so that the next step starts from there.
	// Timers run inside Advance, so the ones that ran out are known at once: none before
	// PongTimeout, then the silent client's only.
	pongs := 0
	tick := func(d time.Duration) {
		t.Helper()
		before := clk.Now()
		clk.Advance(d)
		want := 0
		if clk.Now() >= pongTimeout {
			want = 1
		}
		if _, _, _, fired := clk.counts(0); fired != want {
			t.Fatalf("%d pong timers ran out at %v, want %d (PongTimeout %v, the live client answers every ping)",
				fired, clk.Now(), want, pongTimeout)
		}
		if clk.Now()/pingInterval == before/pingInterval {
			return
		}
		pongs++
		waitFor(t, fmt.Sprintf("the live client's pong #%d", pongs), func() bool {
			_, _, resets, _ := clk.counts(0)
			return resets == pongs
		})
	}

	// Until just before PongTimeout, the silent client is kept: nothing has timed out.
	for clk.Now()+pingInterval < pongTimeout {
		tick(pingInterval)
	}
	tick(pongTimeout - clk.Now() - time.Millisecond)
	if n := th.Stats().Clients; n != 2 {
		t.Fatalf("%d clients after %v, want both: nobody has been silent for PongTimeout %v", n, clk.Now(), pongTimeout)
	}

	// At PongTimeout, the silent client's timer runs out and the hub drops it.
	tick(time.Millisecond)
	select {
	case err := <-deafErr:
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway {
			t.Logf("silent client ended with %v (no close frame)", err)
		}
	case <-time.After(patience):
		t.Fatal("a client that does not answer pings was not removed")
	}
	waitFor(t, "silent client removed", func() bool { return th.Stats().Clients == 1 })

	// The idle live client outlives several PongTimeouts on pongs alone...
	for end := clk.Now() + 4*pongTimeout; clk.Now() < end; {
		tick(pingInterval)
	}
	select {
	case err := <-liveErr:
		t.Fatalf("idle client answering pings was dropped: %v", err)
	default:
	}
	// ...and is still served.
	if err := th.Publish("still", "here"); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-liveMsgs:
		if m.Type != "still" {
			t.Fatalf("got %q", m.Type)
		}
	case err := <-liveErr:
		t.Fatalf("idle client: %v", err)
	case <-time.After(patience):
		t.Fatal("idle client got nothing")
	}
}

// The snapshot comes first even while broadcasts are being made, and the live messages
// that follow it have no gaps. OnConnect holds the snapshot until the test has made its
// broadcasts, so that they certainly fall between the client's registration and the end
// of its snapshot, the moment where a wrong order would lose them or put them first.
func TestOnConnectSnapshotArrivesFirst(t *testing.T) {
	snapshotting := make(chan struct{})
	published := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(published) }) }
	th := startHub(t, Config{OnConnect: func() []Message {
		close(snapshotting) // one client in this test
		<-published
		return []Message{
			{Type: "traces", Data: json.RawMessage(`[{"id":"t1"}]`)},
			{Type: "metrics", Data: json.RawMessage(`{}`)},
		}
	}})
	t.Cleanup(release) // before the hub's cleanup: Run waits for the writer held here

	// Broadcasts before the client exists reach nobody.
	for i := range 3 {
		_ = th.Publish("early", i)
	}
	c := th.connect(t, nil)
	select {
	case <-snapshotting:
	case <-time.After(patience):
		t.Fatal("OnConnect was not called")
	}
	const during, after = 20, 20 // both well within SendBuffer: nothing may drop
	for i := range during {
		_ = th.Publish("live", i)
	}
	release()
	if m := readMsg(t, c); m.Type != "traces" || string(m.Data) != `[{"id":"t1"}]` {
		t.Fatalf("first message %s %s, want the traces snapshot", m.Type, m.Data)
	}
	for i := during; i < during+after; i++ {
		_ = th.Publish("live", i)
	}
	if m := readMsg(t, c); m.Type != "metrics" {
		t.Fatalf("second message %s, want the metrics snapshot", m.Type)
	}
	for want := range during + after {
		m := readMsg(t, c)
		var i int
		if m.Type != "live" || json.Unmarshal(m.Data, &i) != nil {
			t.Fatalf("got %s %s, want live messages", m.Type, m.Data)
		}
		if i != want {
			t.Fatalf("live %d where %d was due: a gap", i, want)
		}
	}
	if s := th.Stats(); s.Dropped != 0 {
		t.Fatalf("stats %+v: nothing may drop here", s)
	}
}

// Shutdown closes every client with "going away", even one stuck in a write to a
// browser that stopped reading, long before WriteTimeout, and refuses newcomers. The
// hub's clock is the test's: the stuck writer is cut off when the test lets the shutdown
// grace pass, with WriteTimeout an hour away.
func TestRunClosesClientsOnShutdown(t *testing.T) {
	clk := newFakeClock()
	th := startHubWithClock(t, Config{WriteTimeout: time.Hour, SendBuffer: 4}, clk)
	c := th.connect(t, nil)

	stuckDialer := &websocket.Dialer{HandshakeTimeout: patience, NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			_ = conn.(*net.TCPConn).SetReadBuffer(4096)
		}
		return conn, err
	}}
	th.connect(t, stuckDialer) // never reads
	pad := strings.Repeat("y", 64<<10)
	for range 200 { // 12 MiB: the stuck client's writer ends up blocked in a write
		_ = th.Publish("big", pad)
	}
	// Drain the reading client so that its writer is idle.
	go func() {
		for {
			if _, _, err := c.NextReader(); err != nil {
				return
			}
		}
	}()
	waitFor(t, "stuck client dropping", func() bool { return th.Stats().Dropped > 0 })

	th.stop()
	// Run has told every client to go and waits, for the grace, for their writers.
	waitFor(t, "the shutdown grace", func() bool {
		_, timers, _, _ := clk.counts(closeGrace)
		return timers == 1
	})
	select {
	case err := <-th.runErr:
		t.Fatalf("Run returned (%v) before the grace, while a writer was stuck", err)
	default:
	}
	clk.Advance(closeGrace)
	select {
	case err := <-th.runErr:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		th.runErr <- nil // for the cleanup
	case <-time.After(patience):
		t.Fatal("Run did not return once the grace had passed: it waits for the stuck write (WriteTimeout)")
	}
	if s := th.Stats(); s.Clients != 0 {
		t.Fatalf("%d clients left after shutdown", s.Clients)
	}
	_, resp, err := th.dial(t, nil, th.origin())
	assertRefused(t, resp, err, http.StatusServiceUnavailable, "shutting_down")
}

// On the test's clock the shutdown grace never runs out, so the close frame does not
// race the grace: the writer sends it however late it gets to run.
func TestRunCloseFrameIsGoingAway(t *testing.T) {
	th := startHubWithClock(t, Config{}, newFakeClock())
	c := th.connect(t, nil)
	th.stop()
	_ = c.SetReadDeadline(time.Now().Add(patience))
	_, _, err := c.ReadMessage()
	if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Fatalf("read after shutdown: %v, want close 1001 (going away)", err)
	}
}
