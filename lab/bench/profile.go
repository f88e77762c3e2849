package bench

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/pprof/profile"
)

// The profile phase: where a missed target's CPU goes. While a fixed-rate run of
// choreography goes on, every Go process of the lab (the services and the dashboard,
// started with PPROF=true) is asked for a CPU profile over the same window, all at
// once; each is summarised (CPU sampled, the functions the samples ended in) and every
// sample charged to one category of cpuCategories, so the whole lab's CPU reads as
// "so much GC, so much pgx, so much span export".

// cpuCategory is a row of the table a CPU sample is charged by.
type cpuCategory struct {
	name     string
	packages []string // import paths; each also holds the packages under it (crypto: crypto/tls)
}

// cpuCategories are checked frame by frame (see categorise); their order matters only
// for a function in two of them, and none is.
var cpuCategories = []cpuCategory{
	{"syscalls (network reads and writes)", []string{"syscall", "internal/poll", "internal/runtime/syscall", "golang.org/x/sys/unix"}},
	{"PostgreSQL client (pgx)", []string{"github.com/jackc"}},
	{"tracing (OpenTelemetry, OTLP export, protobuf)", []string{"go.opentelemetry.io", "google.golang.org/protobuf", "github.com/exaring/otelpgx"}},
	{"AMQP client (amqp091-go)", []string{"github.com/rabbitmq/amqp091-go"}},
	{"JSON (encoding/json)", []string{"encoding/json"}},
	{"logging (log/slog)", []string{"log/slog"}},
	{"metrics (Prometheus client)", []string{"github.com/prometheus"}},
	{"HTTP (net/http)", []string{"net/http"}},
	{"crypto (TLS, bcrypt, JWT)", []string{"crypto", "golang.org/x/crypto", "github.com/golang-jwt"}},
	{"the lab's own code (microlab/…)", []string{"microlab"}},
}

// The two fallbacks, for a sample none of whose frames is in a category above.
const (
	catRuntime = "Go runtime (GC, scheduler, allocation)"
	catOther   = "other (standard library and modules not above)"
)

// runtimePackages make a leaf the runtime's.
var runtimePackages = []string{"runtime", "internal/runtime"}

// categoryRule is categorise in words, for the report.
const categoryRule = "each sample is charged to the first frame, walking its stack from the leaf (the function it ended in) towards the root, that is in one of the packages of a category; " +
	"so allocation and GC assists count against the code that allocated (a mallocgc under encoding/json is JSON), and only a stack with no such frame falls back: " +
	"to the Go runtime when its leaf is the runtime's (background GC workers, the scheduler), else to other"

// inPackage reports whether the function fn (as pprof names it:
// github.com/jackc/pgx/v5/pgconn.(*PgConn).Exec) is in package path or under it.
func inPackage(fn, path string) bool {
	return len(fn) > len(path) && strings.HasPrefix(fn, path) && (fn[len(path)] == '.' || fn[len(path)] == '/')
}

func inAny(fn string, paths []string) bool {
	return slices.ContainsFunc(paths, func(p string) bool { return inPackage(fn, p) })
}

// categorise names the category a sample is charged to (categoryRule).
func categorise(s *profile.Sample) string {
	for _, loc := range s.Location {
		for _, ln := range loc.Line { // innermost first: Line[0] is inlined into the next
			if ln.Function == nil {
				continue
			}
			for _, c := range cpuCategories {
				if inAny(ln.Function.Name, c.packages) {
					return c.name
				}
			}
		}
	}
	if inAny(leaf(s), runtimePackages) {
		return catRuntime
	}
	return catOther
}

// leaf is the function a sample ended in ("" when not symbolised).
func leaf(s *profile.Sample) string {
	for _, loc := range s.Location {
		for _, ln := range loc.Line {
			if ln.Function != nil {
				return ln.Function.Name
			}
		}
	}
	return ""
}

// shortFunc drops a function's import path but for its last element:
// github.com/jackc/pgx/v5/pgconn.(*PgConn).Exec is pgconn.(*PgConn).Exec.
func shortFunc(fn string) string {
	cut := len(fn)
	if i := strings.IndexAny(fn, "(["); i >= 0 {
		cut = i
	}
	if j := strings.LastIndex(fn[:cut], "/"); j >= 0 {
		return fn[j+1:]
	}
	return fn
}

// summarise reads one process's CPU profile: CPU sampled (and as % of one core over
// its window; window stands in when the profile does not say), the top functions by
// flat time, and the CPU of each category.
func summarise(name, service string, p *profile.Profile, window time.Duration, top int) (ProcProfile, error) {
	pp := ProcProfile{Name: name, Service: service}
	cpu, count := -1, -1
	for i, st := range p.SampleType {
		switch st.Type {
		case "cpu":
			cpu = i
		case "samples":
			count = i
		}
	}
	if cpu < 0 || p.SampleType[cpu].Unit != "nanoseconds" {
		return pp, fmt.Errorf("not a CPU profile in nanoseconds (sample types %v)", sampleTypes(p))
	}
	if p.DurationNanos > 0 {
		window = time.Duration(p.DurationNanos)
	}
	flat, cats := map[string]int64{}, map[string]int64{}
	var total int64
	for _, s := range p.Sample {
		v := s.Value[cpu]
		total += v
		if count >= 0 {
			pp.Samples += s.Value[count]
		}
		fn := leaf(s)
		if fn == "" {
			fn = "(unsymbolised)"
		}
		flat[fn] += v
		cats[categorise(s)] += v
	}
	pp.Ms = float64(total) / 1e6
	if window > 0 {
		pp.CorePct = 100 * float64(total) / float64(window)
	}
	share := func(v int64) float64 {
		if total == 0 {
			return 0
		}
		return float64(v) / float64(total)
	}
	for fn, v := range flat {
		pp.Top = append(pp.Top, FuncCPU{Name: fn, Ms: float64(v) / 1e6, Share: share(v)})
	}
	slices.SortFunc(pp.Top, func(a, b FuncCPU) int { return cmp.Or(cmp.Compare(b.Ms, a.Ms), strings.Compare(a.Name, b.Name)) })
	pp.Top = pp.Top[:min(top, len(pp.Top))]
	for _, c := range categoryNames() {
		if v := cats[c]; v > 0 {
			pp.Categories = append(pp.Categories, CategoryCPU{Name: c, Ms: float64(v) / 1e6, Share: share(v)})
		}
	}
	sortCategories(pp.Categories)
	return pp, nil
}

func sampleTypes(p *profile.Profile) []string {
	var out []string
	for _, st := range p.SampleType {
		out = append(out, st.Type+"/"+st.Unit)
	}
	return out
}

// categoryNames lists every category, the fallbacks last.
func categoryNames() []string {
	var out []string
	for _, c := range cpuCategories {
		out = append(out, c.name)
	}
	return append(out, catRuntime, catOther)
}

func packagesOf(name string) []string {
	for _, c := range cpuCategories {
		if c.name == name {
			return c.packages
		}
	}
	return nil
}

func sortCategories(cs []CategoryCPU) {
	slices.SortStableFunc(cs, func(a, b CategoryCPU) int { return cmp.Compare(b.Ms, a.Ms) })
}

// whole adds the processes' profiles up: the lab's CPU sampled and every category's
// share of it (each with the process that has most of it), every category listed, so a
// zero is a measured zero.
func whole(procs []ProcProfile, window time.Duration) (total, corePct float64, cats []CategoryCPU) {
	byName := map[string]*CategoryCPU{}
	for _, n := range categoryNames() {
		cats = append(cats, CategoryCPU{Name: n, Packages: packagesOf(n)})
	}
	for i := range cats {
		byName[cats[i].Name] = &cats[i]
	}
	for _, p := range procs {
		total += p.Ms
		for _, c := range p.Categories {
			w := byName[c.Name]
			w.Ms += c.Ms
			if c.Ms > w.MostMs {
				w.Most, w.MostMs = p.Name, c.Ms
			}
		}
	}
	for i := range cats {
		if total > 0 {
			cats[i].Share = cats[i].Ms / total
		}
	}
	sortCategories(cats)
	if window > 0 {
		corePct = 100 * total / float64(window.Milliseconds())
	}
	return total, corePct, cats
}

// fetchProfile is GET /debug/pprof/profile?seconds=N of one process: the profile's
// bytes (gzipped protobuf, as `go tool pprof` reads them).
func fetchProfile(ctx context.Context, base string, window time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, window+30*time.Second)
	defer cancel()
	url := base + "/debug/pprof/profile?seconds=" + strconv.Itoa(int(window.Seconds()))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		why := strings.TrimSpace(string(raw[:min(len(raw), 200)]))
		if resp.StatusCode == http.StatusNotFound {
			why = "no profiler here: the process runs without PPROF=true (lab up --pprof)"
		}
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, why)
	}
	return raw, nil
}

// profile runs choreography at a fixed rate near the highest held and profiles every
// Go process of the lab meanwhile. The raw profiles stay in a temporary directory
// (printed) for `go tool pprof`; they are not part of the report.
func (b *bench) profile(ctx context.Context) error {
	p := b.p
	mode := Modes[0]
	if err := b.mode(ctx, mode); err != nil {
		return err
	}
	// 90 % of the highest rate held: as loaded as the lab gets while the run, profiled
	// (which costs a few per cent), still holds.
	rate, from := p.costRate, fmt.Sprintf("the cost rate (the max-rate search did not run in %s)", mode)
	for _, m := range b.r.MaxRate {
		if m.Mode == mode && m.Sampling == "1" && m.Rate > 0 {
			rate, from = roundRate(0.9*m.Rate), fmt.Sprintf("90 %% of the highest rate held in %s (%g/s)", mode, m.Rate)
		}
	}
	insts, err := b.l.cfg.Instances(nil)
	if err != nil {
		return err
	}
	dir, err := mkdirTemp("microlab-bench-profiles-")
	if err != nil {
		return err
	}
	raws := make([][]byte, len(insts))
	errs := make([]error, len(insts))
	var wg sync.WaitGroup
	defer wg.Wait() // an interrupted run: the fetches end with ctx
	secs := int(p.profile.Seconds())
	started := func() {
		b.say("profiling %d processes at once for %ds (GET /debug/pprof/profile?seconds=%d)", len(insts), secs, secs)
		for i, in := range insts {
			wg.Go(func() { raws[i], errs[i] = fetchProfile(ctx, in.URL(), p.profile) })
		}
	}
	run, _, err := b.run(ctx, spec{mode: mode, rate: rate, dur: p.profileLoad, follow: p.fixedFollow, started: started})
	if err != nil {
		return err
	}
	wg.Wait()
	pr := &Profile{Mode: mode, Rate: rate, RateFrom: from, Seconds: p.profile.Seconds(), Run: run, CategoryRule: categoryRule}
	var failed []string
	notServed := false
	for i, in := range insts {
		if errs[i] != nil {
			failed = append(failed, fmt.Sprintf("%s (%v)", in.ID, errs[i]))
			notServed = notServed || strings.Contains(errs[i].Error(), "404")
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, in.ID+".pprof"), raws[i], 0o644); err != nil {
			b.note("saving %s's profile: %v", in.ID, err)
		}
		prof, err := profile.ParseData(raws[i])
		if err == nil {
			var pp ProcProfile
			if pp, err = summarise(in.ID, in.Service.Name, prof, p.profile, 8); err == nil {
				pr.Procs = append(pr.Procs, pp)
				continue
			}
		}
		failed = append(failed, fmt.Sprintf("%s (%v)", in.ID, err))
	}
	if len(failed) > 0 {
		hint := ""
		if notServed && b.o.UseRunning {
			hint = "; start the lab with `lab up --pprof` to profile it"
		}
		b.note("no CPU profile from %d of %d processes: %s%s", len(failed), len(insts), strings.Join(failed, "; "), hint)
	}
	if len(pr.Procs) == 0 {
		_ = os.RemoveAll(dir)
		return nil
	}
	slices.SortStableFunc(pr.Procs, func(a, b ProcProfile) int { return cmp.Compare(b.Ms, a.Ms) }) // the busiest first
	pr.TotalMs, pr.CorePct, pr.Categories = whole(pr.Procs, p.profile)
	b.r.Profile = pr
	b.say("%d CPU profiles in %s (not kept in the report; read one with go tool pprof -top %s)",
		len(pr.Procs), dir, filepath.Join(dir, pr.Procs[0].Name+".pprof"))
	var parts []string
	for _, c := range pr.Categories {
		if c.Share >= 0.005 {
			parts = append(parts, fmt.Sprintf("%s %.0f %%", c.Name, 100*c.Share))
		}
	}
	b.say("the Go processes sampled %.0f ms of CPU in %ds (%.0f %% of a core): %s", pr.TotalMs, secs, pr.CorePct, strings.Join(parts, ", "))
	return nil
}
