package app_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"microlab/services/contracts"
	"microlab/services/platform/app"
	"microlab/services/platform/bus"
	"microlab/services/platform/control"
	"microlab/services/platform/testenv"
)

// The crash faults end the process, so they are tested on a process: the test binary
// itself, started again with crashChildEnv set, runs one real service (crashChild) and
// exits the way the fault makes it. Its spans go over OTLP/HTTP to a receiver in the
// test: what reached it is what left the process before it died.
const (
	crashChildEnv   = "MICROLAB_APP_TEST_CRASH_CHILD"
	crashReleaseEnv = "MICROLAB_APP_TEST_RELEASE" // a file; held work goes on once it exists
	crashPatience   = 2 * time.Minute
)

// TestCrashFaultsMarkAndExportTheSpansTheyInterrupt: crash and crash_after_commit, like
// every other fault, leave a lab.fault event on the spans they interrupt — the request
// and the message in flight when crash fires, the delivery whose commit
// crash_after_commit exits after — and those spans reach the exporter before the
// process exits (status 1 from Main for crash, 3 from CrashNow for crash_after_commit).
func TestCrashFaultsMarkAndExportTheSpansTheyInterrupt(t *testing.T) {
	if os.Getenv(crashChildEnv) != "" {
		crashChild()
		return
	}
	t.Parallel()

	t.Run("crash", func(t *testing.T) {
		t.Parallel()
		c := startCrashChild(t)
		requested := make(chan error, 1)
		go func() {
			resp, err := (&http.Client{Timeout: crashPatience}).Get(c.base + "/hold")
			if err == nil {
				_ = resp.Body.Close()
			}
			requested <- err
		}()
		c.bus.Publish(t, contracts.OrderPlaced, "hold", contracts.Saga{OrderID: "hold", SagaMode: contracts.ModeChoreography})
		for _, held := range []string{"holding a request", "holding a message"} {
			if !c.logs.AwaitLine(crashPatience, held) {
				t.Fatalf("the service never logged %q", held)
			}
		}
		fault, _, err := c.plane.AddFault(context.Background(), control.FaultSpec{Service: "payments", Kind: control.FaultCrash}, "test")
		if err != nil {
			t.Fatal(err)
		}
		// Both are held until the crash has fired: they are in flight when it does.
		if !c.logs.AwaitLine(crashPatience, "lab fault crash: this process exits now") {
			t.Fatal("the service never crashed")
		}
		c.release()
		if code := c.exit(); code != 1 {
			t.Fatalf("exit status %d, want 1 (Main, with the crash's error)", code)
		}
		<-requested // whether the held request was answered is not the subject
		for _, s := range []recvSpan{
			c.recv.await(t, "the held request's server span", isServer("/hold")),
			c.recv.await(t, "the held message's consumer span", isProcess(contracts.OrderPlaced)),
		} {
			if !s.hasFault(control.FaultCrash, fault.ID) {
				t.Errorf("span %q carries no lab.fault event for crash %d: events %+v", s.Name, fault.ID, s.Events)
			}
		}
	})

	t.Run("crash_after_commit", func(t *testing.T) {
		t.Parallel()
		c := startCrashChild(t)
		fault, _, err := c.plane.AddFault(context.Background(), control.FaultSpec{Service: "payments", Kind: control.FaultCrashAfterCommit}, "test")
		if err != nil {
			t.Fatal(err)
		}
		if !c.logs.AwaitLine(crashPatience, `"msg":"lab fault active"`, `"kind":"crash_after_commit"`) {
			t.Fatal("the service never took the crash_after_commit fault")
		}
		c.bus.Publish(t, contracts.OrderPlaced, "doomed", contracts.Saga{OrderID: "doomed", SagaMode: contracts.ModeChoreography})
		if code := c.exit(); code != 3 {
			t.Fatalf("exit status %d, want 3 (CrashNow)", code)
		}
		s := c.recv.await(t, "the delivery's consumer span", isProcess(contracts.OrderPlaced))
		if !s.hasFault(control.FaultCrashAfterCommit, fault.ID) {
			t.Errorf("span %q carries no lab.fault event for crash_after_commit %d: events %+v", s.Name, fault.ID, s.Events)
		}
		if s.Status != tracepb.Status_STATUS_CODE_ERROR || !strings.Contains(s.StatusMessage, "crash_after_commit") {
			t.Errorf("span %q ended with status %v %q, want an error naming crash_after_commit", s.Name, s.Status, s.StatusMessage)
		}
	})
}

// crashChild is the service the child process runs: payments' shape (a database, a
// queue bound to order.placed, an outbox) with a route and a message that wait for the
// release file, so that a crash finds them in flight.
func crashChild() {
	release := os.Getenv(crashReleaseEnv)
	held := func(ctx context.Context) {
		deadline := time.Now().Add(crashPatience) // a parent that went away never releases
		for time.Now().Before(deadline) && ctx.Err() == nil {
			if _, err := os.Stat(release); err == nil {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	q := bus.Queue{Service: "payments", Events: []string{contracts.OrderPlaced}}
	opts := app.Options{Name: "payments", Consumes: true, Migrations: fstest.MapFS{
		"00001_init.sql": {Data: []byte("-- +goose Up\nCREATE TABLE crash_test (id int);\n")},
	}}
	app.Main("payments", func(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
		return app.RunBase(ctx, opts, getenv, stdout, func(a *app.App) {
			a.Mux().HandleFunc("GET /hold", func(w http.ResponseWriter, r *http.Request) {
				a.Log.InfoContext(r.Context(), "holding a request")
				held(r.Context())
				w.WriteHeader(http.StatusNoContent)
			})
			a.Consume(q, bus.Routes{contracts.OrderPlaced: func(ctx context.Context, d bus.Delivery) error {
				in, err := d.Envelope()
				if err != nil {
					return err
				}
				if in.CorrelationID == "hold" {
					a.Log.InfoContext(ctx, "holding a message")
					held(ctx)
					return nil
				}
				out, err := contracts.NewEnvelope(contracts.PaymentAuthorized, "payments", in.CorrelationID, in.EventID,
					contracts.Saga{OrderID: in.CorrelationID, SagaMode: contracts.ModeChoreography})
				if err != nil {
					return err
				}
				return a.Emit(ctx, out)
			}})
		})
	})
}

// crashChildProc is a child process running crashChild, and what the test drives it with.
type crashChildProc struct {
	base    string
	logs    *testenv.LogBuffer
	recv    *otlpReceiver
	bus     *testenv.Bus
	plane   *control.Plane
	release func()
	done    chan struct{}
	state   *os.ProcessState
}

func startCrashChild(t *testing.T) *crashChildProc {
	t.Helper()
	recv := &otlpReceiver{}
	srv := httptest.NewServer(recv)
	t.Cleanup(srv.Close)
	env := testenv.ServiceEnv(t, "payments", true)
	env["INSTANCE_ID"] = "payments-1"
	env["LOG_LEVEL"] = "info"
	env["OTEL_EXPORTER_OTLP_ENDPOINT"] = srv.URL
	env["TRACES_SAMPLER_RATIO"] = "1"
	releaseFile := filepath.Join(t.TempDir(), "release")
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashFaultsMarkAndExportTheSpansTheyInterrupt$", "-test.count=1")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "TMPDIR=" + os.TempDir(),
		crashChildEnv + "=1", crashReleaseEnv + "=" + releaseFile}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	c := &crashChildProc{logs: &testenv.LogBuffer{}, recv: recv, done: make(chan struct{}),
		release: func() { _ = os.WriteFile(releaseFile, nil, 0o644) }}
	cmd.Stdout, cmd.Stderr = c.logs, c.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = cmd.Wait()
		c.state = cmd.ProcessState
		close(c.done)
	}()
	t.Cleanup(func() {
		c.release()
		select {
		case <-c.done:
		default:
			_ = cmd.Process.Kill() // the child of this test, by its pid
			<-c.done
		}
		if t.Failed() {
			out := c.logs.String()
			t.Logf("the child's last output:\n%s", out[max(0, len(out)-8000):])
		}
	})
	c.base = "http://" + c.listening(t)
	exited := make(chan error)
	go func() {
		<-c.done
		close(exited)
	}()
	testenv.WaitReady(t, c.base, exited)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store, err := control.OpenStore(ctx, env["LAB_DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	c.bus = testenv.Dial(t, env["AMQP_URL"])
	// Announced: the child applies the fault at once (else at its 5 s re-read).
	c.plane = &control.Plane{Store: store, Pub: c.bus.Pub}
	return c
}

// listening waits for the child's "http listening" log line and returns its address.
func (c *crashChildProc) listening(t *testing.T) string {
	t.Helper()
	deadline := time.Now().Add(crashPatience)
	for {
		sc := bufio.NewScanner(strings.NewReader(c.logs.String()))
		for sc.Scan() {
			var l struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == "http listening" && l.Addr != "" {
				return l.Addr
			}
		}
		select {
		case <-c.done:
			t.Fatalf("the child exited before it listened: %v", c.state)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("the child never listened")
		}
	}
}

// exit waits for the child to exit by itself and returns its exit status.
func (c *crashChildProc) exit() int {
	select {
	case <-c.done:
		return c.state.ExitCode()
	case <-time.After(crashPatience):
		return -1
	}
}

// otlpReceiver is an OTLP/HTTP trace endpoint (protobuf) that keeps every span it is sent.
type otlpReceiver struct {
	mu    sync.Mutex
	spans []recvSpan
}

type recvSpan struct {
	Name          string
	Kind          tracepb.Span_SpanKind
	Attrs         map[string]string
	Status        tracepb.Status_StatusCode
	StatusMessage string
	Events        []recvEvent
}

type recvEvent struct {
	Name  string
	Attrs map[string]string // values as text
}

func (r *otlpReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	raw, err := io.ReadAll(body)
	var msg coltrace.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(raw, &msg)
	}
	if req.URL.Path != "/v1/traces" || err != nil {
		http.Error(w, fmt.Sprintf("want OTLP protobuf on /v1/traces: %v", err), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	for _, rs := range msg.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				rec := recvSpan{Name: s.Name, Kind: s.Kind, Attrs: map[string]string{},
					Status: s.GetStatus().GetCode(), StatusMessage: s.GetStatus().GetMessage()}
				for _, a := range s.Attributes {
					rec.Attrs[a.Key] = anyText(a.Value)
				}
				for _, e := range s.Events {
					ev := recvEvent{Name: e.Name, Attrs: map[string]string{}}
					for _, a := range e.Attributes {
						ev.Attrs[a.Key] = anyText(a.Value)
					}
					rec.Events = append(rec.Events, ev)
				}
				r.spans = append(r.spans, rec)
			}
		}
	}
	r.mu.Unlock()
	out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = io.Copy(w, bytes.NewReader(out))
}

func anyText(v interface {
	GetStringValue() string
	GetIntValue() int64
}) string {
	if s := v.GetStringValue(); s != "" {
		return s
	}
	return fmt.Sprint(v.GetIntValue())
}

// await returns the first span received that matches. The spans of a process that has
// exited were all sent before it did (or never will be), so a short wait is enough.
func (r *otlpReceiver) await(t *testing.T, what string, match func(recvSpan) bool) recvSpan {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		for _, s := range r.spans {
			if match(s) {
				r.mu.Unlock()
				return s
			}
		}
		var names []string
		for _, s := range r.spans {
			names = append(names, s.Name)
		}
		r.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("%s never reached the exporter (received: %v)", what, names)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func isServer(path string) func(recvSpan) bool {
	return func(s recvSpan) bool { return s.Kind == tracepb.Span_SPAN_KIND_SERVER && s.Attrs["url.path"] == path }
}

func isProcess(typ string) func(recvSpan) bool {
	return func(s recvSpan) bool { return s.Kind == tracepb.Span_SPAN_KIND_CONSUMER && s.Name == "process "+typ }
}

// hasFault reports whether the span carries the lab.fault event of fault id of kind.
func (s recvSpan) hasFault(kind string, id int64) bool {
	for _, e := range s.Events {
		if e.Name == "lab.fault" && e.Attrs["lab.fault.kind"] == kind && e.Attrs["lab.fault.id"] == fmt.Sprint(id) {
			return true
		}
	}
	return false
}
