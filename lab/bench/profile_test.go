package bench

import (
	"bytes"
	"math"
	"testing"
	"time"

	"github.com/google/pprof/profile"
)

// callStack is one sample of a test profile: its frames leaf first, each location's
// inlined functions innermost first (a location of one function is one string).
type callStack [][]string

func frames(fns ...string) callStack {
	var s callStack
	for _, f := range fns {
		s = append(s, []string{f})
	}
	return s
}

// cpuProfile builds a CPU profile as Go's runtime writes one (sample types
// samples/count and cpu/nanoseconds, 10 ms a sample), one sample per stack with the
// given CPU, and returns it as `go tool pprof` would read it: written, then parsed.
func cpuProfile(t *testing.T, window time.Duration, stacks []callStack, ms []int64) *profile.Profile {
	t.Helper()
	p := &profile.Profile{
		SampleType:    []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}},
		PeriodType:    &profile.ValueType{Type: "cpu", Unit: "nanoseconds"},
		Period:        int64(10 * time.Millisecond),
		DurationNanos: int64(window),
		TimeNanos:     time.Now().UnixNano(),
	}
	funcs := map[string]*profile.Function{}
	fn := func(name string) *profile.Function {
		if f, ok := funcs[name]; ok {
			return f
		}
		f := &profile.Function{ID: uint64(len(p.Function) + 1), Name: name, SystemName: name, Filename: "x.go"}
		funcs[name] = f
		p.Function = append(p.Function, f)
		return f
	}
	for i, st := range stacks {
		var locs []*profile.Location
		for _, inlined := range st {
			loc := &profile.Location{ID: uint64(len(p.Location) + 1), Address: uint64(0x1000 + len(p.Location))}
			for _, name := range inlined {
				loc.Line = append(loc.Line, profile.Line{Function: fn(name), Line: 1})
			}
			p.Location = append(p.Location, loc)
			locs = append(locs, loc)
		}
		p.Sample = append(p.Sample, &profile.Sample{Location: locs, Value: []int64{ms[i] / 10, ms[i] * int64(time.Millisecond)}})
	}
	if err := p.CheckValid(); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := p.Write(&buf); err != nil {
		t.Fatal(err)
	}
	back, err := profile.ParseData(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return back
}

// The stacks a lab service's profile is made of, and the category each is charged to.
var categoryCases = []struct {
	name  string
	stack callStack
	want  string
}{
	{"allocation counts against the code that allocated",
		frames("runtime.mallocgc", "encoding/json.(*encodeState).marshal", "encoding/json.Marshal", "microlab/services/orders.(*api).get", "net/http.(*conn).serve", "runtime.goexit"),
		"JSON (encoding/json)"},
	{"a background GC worker is the runtime's",
		frames("runtime.scanobject", "runtime.gcDrain", "runtime.gcBgMarkWorker", "runtime.goexit"), catRuntime},
	{"the scheduler is the runtime's", frames("runtime.futex", "runtime.notesleep", "runtime.findRunnable", "runtime.schedule"), catRuntime},
	{"a network write is a syscall, whoever asked for it",
		frames("internal/runtime/syscall.Syscall6", "syscall.RawSyscall6", "syscall.Syscall", "syscall.write", "internal/poll.(*FD).Write",
			"net.(*netFD).Write", "github.com/jackc/pgx/v5/pgconn.(*PgConn).flushWithPotentialWriteReadDeadlock"),
		"syscalls (network reads and writes)"},
	{"pgx", frames("github.com/jackc/pgx/v5/pgproto3.(*Frontend).Receive", "github.com/jackc/pgx/v5/pgconn.(*PgConn).receiveMessage", "microlab/services/platform/pg.Tx"),
		"PostgreSQL client (pgx)"},
	{"the pool is pgx too", frames("sync.(*Mutex).Lock", "github.com/jackc/puddle/v2.(*Pool[...]).Acquire"), "PostgreSQL client (pgx)"},
	{"span export: protobuf under the OTLP exporter",
		frames("runtime.mallocgc", "google.golang.org/protobuf/internal/impl.(*MessageInfo).marshal", "go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp.(*client).UploadTraces"),
		"tracing (OpenTelemetry, OTLP export, protobuf)"},
	{"SQL spans", frames("runtime.mapassign", "github.com/exaring/otelpgx.(*Tracer).TraceQueryStart"), "tracing (OpenTelemetry, OTLP export, protobuf)"},
	{"AMQP", frames("bufio.(*Reader).Read", "github.com/rabbitmq/amqp091-go.(*reader).ReadFrame", "github.com/rabbitmq/amqp091-go.(*Connection).reader"), "AMQP client (amqp091-go)"},
	{"slog", frames("log/slog.(*handleState).appendAttr", "microlab/observability.(*handler).Handle"), "logging (log/slog)"},
	{"Prometheus", frames("github.com/prometheus/client_golang/prometheus.(*Registry).Gather"), "metrics (Prometheus client)"},
	{"bcrypt", frames("golang.org/x/crypto/blowfish.encryptBlock", "golang.org/x/crypto/bcrypt.expensiveBlowfishSetup"), "crypto (TLS, bcrypt, JWT)"},
	{"a JWT's HMAC", frames("crypto/sha256.block", "crypto/hmac.(*hmac).Sum", "github.com/golang-jwt/jwt/v5.(*SigningMethodHMAC).Sign"), "crypto (TLS, bcrypt, JWT)"},
	{"net/http's own work", frames("bufio.(*Writer).Flush", "net/http.(*response).finishRequest", "net/http.(*conn).serve"), "HTTP (net/http)"},
	{"the lab's code: the first frame in a category wins over net/http below it",
		frames("strings.(*Builder).grow", "fmt.Sprintf", "microlab/services/orders.(*service).place", "net/http.HandlerFunc.ServeHTTP", "net/http.(*conn).serve"),
		"the lab's own code (microlab/…)"},
	{"inlined: the innermost function of a location first",
		callStack{{"encoding/json.(*decodeState).literalStore", "microlab/services/catalog.decode"}, {"net/http.(*conn).serve"}}, "JSON (encoding/json)"},
	{"no category, leaf not the runtime's", frames("sort.insertionSort", "sort.Sort", "compress/flate.(*compressor).deflate"), catOther},
	{"a path is matched whole: net/httpx is not net/http", frames("net/httpx.Serve", "microlabs/x.Run", "cryptography.Do"), catOther},
	{"nothing symbolised", callStack{{}}, catOther},
}

func TestCategoriseRules(t *testing.T) {
	var stacks []callStack
	var ms []int64
	for i, c := range categoryCases {
		stacks = append(stacks, c.stack)
		ms = append(ms, int64(10*(i+1))) // the CPU tells the samples apart after the round trip
	}
	p := cpuProfile(t, time.Second, stacks, ms)
	if len(p.Sample) != len(categoryCases) {
		t.Fatalf("%d samples, want %d", len(p.Sample), len(categoryCases))
	}
	for _, s := range p.Sample {
		c := categoryCases[s.Value[1]/int64(10*time.Millisecond)-1]
		if got := categorise(s); got != c.want {
			t.Errorf("%s: charged to %q, want %q", c.name, got, c.want)
		}
	}
}

// No package of the table is in two categories: the order of the rows never decides.
func TestCategoriesDoNotOverlap(t *testing.T) {
	for i, a := range cpuCategories {
		for j, b := range cpuCategories {
			for _, pa := range a.packages {
				for _, pb := range b.packages {
					if (i != j || pa != pb) && (pa == pb || inPackage(pa, pb)) {
						t.Errorf("%s (%s) is inside %s (%s)", pa, a.name, pb, b.name)
					}
				}
			}
		}
	}
}

func TestSummariseProfile(t *testing.T) {
	// 500 ms of CPU in a 2 s window: 25 % of a core.
	p := cpuProfile(t, 2*time.Second, []callStack{
		frames("runtime.mallocgc", "encoding/json.Marshal"),
		frames("runtime.mallocgc", "github.com/jackc/pgx/v5.(*Conn).Query"),
		frames("runtime.scanobject", "runtime.gcBgMarkWorker"),
		frames("syscall.Syscall", "internal/poll.(*FD).Write"),
		frames("encoding/json.(*encodeState).string", "encoding/json.Marshal"),
	}, []int64{200, 100, 100, 60, 40})
	pp, err := summarise("orders-1", "orders", p, time.Minute, 3)
	if err != nil {
		t.Fatal(err)
	}
	if pp.Name != "orders-1" || pp.Service != "orders" || pp.Samples != 50 || !near(pp.Ms, 500) || !near(pp.CorePct, 25) {
		t.Errorf("summary: %+v (want 50 samples, 500 ms, 25 %% of a core over the profile's own window)", pp)
	}
	// Flat: mallocgc ends 300 ms of samples, whichever code called it.
	wantTop := []FuncCPU{{"runtime.mallocgc", 300, 0.6}, {"runtime.scanobject", 100, 0.2}, {"syscall.Syscall", 60, 0.12}}
	if len(pp.Top) != len(wantTop) {
		t.Fatalf("top: %+v, want %+v", pp.Top, wantTop)
	}
	for i, w := range wantTop {
		if g := pp.Top[i]; g.Name != w.Name || !near(g.Ms, w.Ms) || !near(g.Share, w.Share) {
			t.Errorf("top[%d] = %+v, want %+v", i, g, w)
		}
	}
	wantCats := map[string]float64{"JSON (encoding/json)": 240, "PostgreSQL client (pgx)": 100, catRuntime: 100, "syscalls (network reads and writes)": 60}
	var sum float64
	for _, c := range pp.Categories {
		sum += c.Ms
		if !near(c.Ms, wantCats[c.Name]) || !near(c.Share, wantCats[c.Name]/500) {
			t.Errorf("category %q: %.1f ms (%.3f), want %.1f ms", c.Name, c.Ms, c.Share, wantCats[c.Name])
		}
	}
	if len(pp.Categories) != len(wantCats) || !near(sum, pp.Ms) || pp.Categories[0].Name != "JSON (encoding/json)" {
		t.Errorf("categories (largest first, summing to the total): %+v", pp.Categories)
	}

	// Two processes make the whole lab: every category listed, the largest first.
	other := pp
	other.Name, other.Service = "payments-1", "payments"
	other.Categories = []CategoryCPU{{Name: catRuntime, Ms: 300}}
	other.Ms = 300
	total, core, cats := whole([]ProcProfile{pp, other}, 2*time.Second)
	if !near(total, 800) || !near(core, 40) || len(cats) != len(cpuCategories)+2 {
		t.Errorf("whole lab: %.1f ms, %.1f %% of a core, %d categories", total, core, len(cats))
	}
	if c := cats[0]; c.Name != catRuntime || !near(c.Ms, 400) || !near(c.Share, 0.5) || c.Most != "payments-1" || !near(c.MostMs, 300) {
		t.Errorf("largest category: %+v", c)
	}
	var shares float64
	for _, c := range cats {
		shares += c.Share
		if c.Name == "JSON (encoding/json)" && (len(c.Packages) != 1 || c.Most != "orders-1") {
			t.Errorf("JSON: %+v", c)
		}
	}
	if !near(shares, 1) {
		t.Errorf("shares add up to %.4f", shares)
	}
}

func TestSummariseRefusesAHeapProfile(t *testing.T) {
	p := cpuProfile(t, time.Second, []callStack{frames("runtime.mallocgc")}, []int64{10})
	p.SampleType = []*profile.ValueType{{Type: "alloc_objects", Unit: "count"}, {Type: "alloc_space", Unit: "bytes"}}
	if _, err := summarise("x-1", "x", p, time.Second, 8); err == nil {
		t.Error("a heap profile summarised as CPU")
	}
}

func TestShortFunc(t *testing.T) {
	for in, want := range map[string]string{
		"github.com/jackc/pgx/v5/pgconn.(*PgConn).Exec": "pgconn.(*PgConn).Exec",
		"runtime.mallocgc":                                    "runtime.mallocgc",
		"internal/runtime/syscall.Syscall6":                   "syscall.Syscall6",
		"slices.SortFunc[go.shape.[]string,go.shape.string]":  "slices.SortFunc[go.shape.[]string,go.shape.string]",
		"microlab/services/orders.(*svc).place.func1":         "orders.(*svc).place.func1",
		"sync/atomic.(*Pointer[go.shape.struct { a/b.c }]).X": "atomic.(*Pointer[go.shape.struct { a/b.c }]).X",
	} {
		if got := shortFunc(in); got != want {
			t.Errorf("shortFunc(%q) = %q, want %q", in, got, want)
		}
	}
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-6*max(1, math.Abs(b)) }
