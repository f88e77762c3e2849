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
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// testHub is a hub served by a real HTTP server on 127.0.0.1, with Run going.
type testHub struct {
	*Hub
	srv    *httptest.Server
	stop   context.CancelFunc
	runErr chan error
}

func startHub(t *testing.T, cfg Config) *testHub {
	t.Helper()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := New(cfg, log)
	ctx, cancel := context.WithCancel(context.Background())
	th := &testHub{Hub: h, stop: cancel, runErr: make(chan error, 1)}
	go func() { th.runErr <- h.Run(ctx) }()
	th.srv = httptest.NewServer(http.HandlerFunc(h.ServeWS)) // binds 127.0.0.1
	t.Cleanup(func() {
		cancel()
		select {
		case <-th.runErr:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return within 10s of its context ending")
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
		d = &websocket.Dialer{HandshakeTimeout: 5 * time.Second}
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
	deadline := time.Now().Add(10 * time.Second)
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
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
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
func TestSlowClientDoesNotDelayFastOne(t *testing.T) {
	const (
		n          = 20_000
		sendBuffer = 256
	)
	th := startHub(t, Config{
		SendBuffer: sendBuffer,
		// Far longer than the test: had Broadcast waited for the stuck client, or had the
		// client been evicted to make room, the timings and counts below would show it.
		WriteTimeout:  time.Minute,
		PongTimeout:   time.Minute,
		StatsInterval: 100 * time.Millisecond,
	})

	slowDialer := &websocket.Dialer{
		HandshakeTimeout: 5 * time.Second,
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
			_ = fast.SetReadDeadline(time.Now().Add(30 * time.Second))
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

	pad := strings.Repeat("x", 1000)
	var slowest time.Duration
	start := time.Now()
	for i := range n {
		// Pace to the fast reader so that its own queue never fills: it should get
		// every message, and any drop for it would be the test's doing. The pacing
		// follows the fast client only; the slow one reads nothing throughout.
		for int64(i)-fastGot.Load() > sendBuffer/2 {
			time.Sleep(20 * time.Microsecond)
		}
		t0 := time.Now()
		th.Broadcast(Message{Type: "n", Data: json.RawMessage(fmt.Sprintf(`{"i":%d,"pad":%q}`, i, pad))})
		slowest = max(slowest, time.Since(t0))
	}
	loop := time.Since(start)

	if err := <-fastErr; err != nil {
		t.Fatalf("fast client: %v", err)
	}
	fastDone := time.Since(start)
	st := th.Stats()
	t.Logf("broadcast loop %v, fast client done after %v, slowest Broadcast %v, stats %+v", loop, fastDone, slowest, st)

	if slowest > time.Second {
		t.Errorf("a Broadcast call took %v while a client was stuck; it must not block", slowest)
	}
	if fastDone > 30*time.Second {
		t.Errorf("fast client needed %v for %d messages", fastDone, n)
	}
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
	if got := th.Stats().Sent; got != uint64(2*n)-dropped {
		t.Fatalf("sent = %d, want %d", got, uint64(2*n)-dropped)
	}
}

func TestPingsKeepIdleClientsAndRemoveDeadOnes(t *testing.T) {
	const pongTimeout = 250 * time.Millisecond
	th := startHub(t, Config{PingInterval: 50 * time.Millisecond, PongTimeout: pongTimeout})

	// A live client: its reads run gorilla's default ping handler, which answers pongs.
	live := th.connect(t, nil)
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
	start := time.Now() // before the hub sets its first read deadline for it
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

	select {
	case err := <-deafErr:
		if took := time.Since(start); took < pongTimeout {
			t.Fatalf("silent client removed after %v, before PongTimeout %v", took, pongTimeout)
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway {
			t.Logf("silent client ended with %v (no close frame)", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a client that does not answer pings was not removed")
	}
	waitFor(t, "silent client removed", func() bool { return th.Stats().Clients == 1 })

	// The idle live client outlives several PongTimeouts on pongs alone...
	time.Sleep(4*pongTimeout - time.Since(start))
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
	case <-time.After(5 * time.Second):
		t.Fatal("idle client got nothing")
	}
}

// The snapshot comes first even while broadcasts are flowing, and the live messages
// that follow it have no gaps.
func TestOnConnectSnapshotArrivesFirst(t *testing.T) {
	th := startHub(t, Config{OnConnect: func() []Message {
		// Slow on purpose: broadcasts made meanwhile must queue behind the snapshot.
		time.Sleep(50 * time.Millisecond)
		return []Message{
			{Type: "traces", Data: json.RawMessage(`[{"id":"t1"}]`)},
			{Type: "metrics", Data: json.RawMessage(`{}`)},
		}
	}})

	stop := make(chan struct{})
	published := make(chan struct{})
	go func() {
		defer close(published)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_ = th.Publish("live", i)
			time.Sleep(time.Millisecond)
		}
	}()
	defer func() { close(stop); <-published }()

	c := th.connect(t, nil)
	if m := readMsg(t, c); m.Type != "traces" || string(m.Data) != `[{"id":"t1"}]` {
		t.Fatalf("first message %s %s, want the traces snapshot", m.Type, m.Data)
	}
	if m := readMsg(t, c); m.Type != "metrics" {
		t.Fatalf("second message %s, want the metrics snapshot", m.Type)
	}
	prev := -1
	for range 20 {
		m := readMsg(t, c)
		var i int
		if m.Type != "live" || json.Unmarshal(m.Data, &i) != nil {
			t.Fatalf("got %s %s, want live messages", m.Type, m.Data)
		}
		if prev >= 0 && i != prev+1 {
			t.Fatalf("live %d after %d: a gap", i, prev)
		}
		prev = i
	}
}

// Shutdown closes every client with "going away", even one stuck in a write to a
// browser that stopped reading, long before WriteTimeout, and refuses newcomers.
func TestRunClosesClientsOnShutdown(t *testing.T) {
	th := startHub(t, Config{WriteTimeout: time.Minute, SendBuffer: 4})
	c := th.connect(t, nil)

	stuckDialer := &websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
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

	start := time.Now()
	th.stop()
	select {
	case err := <-th.runErr:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		th.runErr <- nil // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("shutdown took %v", took)
	}
	if s := th.Stats(); s.Clients != 0 {
		t.Fatalf("%d clients left after shutdown", s.Clients)
	}
	_, resp, err := th.dial(t, nil, th.origin())
	assertRefused(t, resp, err, http.StatusServiceUnavailable, "shutting_down")
}

func TestRunCloseFrameIsGoingAway(t *testing.T) {
	th := startHub(t, Config{})
	c := th.connect(t, nil)
	th.stop()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _, err := c.ReadMessage()
	if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Fatalf("read after shutdown: %v, want close 1001 (going away)", err)
	}
}
