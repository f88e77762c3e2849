package bench

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
)

// What /proc says about processes and the machine (Linux only: elsewhere the CPU and
// memory figures are missing, and the report says so).

// member is one process in a CPU or memory account: which group it counts in.
type member struct {
	pid   int
	group string
	kind  string // service, dashboard, observability, postgres, rabbitmq, generator
	lab   bool   // the lab's own (its processes, its PostgreSQL backends), not shared infrastructure
}

// Kinds of process.
const (
	kindService   = "service"
	kindDashboard = "dashboard"
	kindObs       = "observability"
	kindPostgres  = "postgres"
	kindRabbit    = "rabbitmq"
	kindGenerator = "generator"
)

// Group names of the processes found by name.
const (
	groupPGLab     = "postgres (the lab's backends)"
	groupPGShared  = "postgres (shared: postmaster, WAL, checkpointer…)"
	groupRabbit    = "rabbitmq (shared: beam.smp)"
	groupGenerator = "lab bench (load generator)"
)

// clockTicks is the kernel's USER_HZ, the unit of utime and stime: from the ELF
// auxiliary vector (AT_CLKTCK), else the usual 100.
var clockTicks = func() float64 {
	raw, err := os.ReadFile("/proc/self/auxv")
	if err == nil {
		for i := 0; i+16 <= len(raw); i += 16 {
			k, v := binary.NativeEndian.Uint64(raw[i:]), binary.NativeEndian.Uint64(raw[i+8:])
			if k == 17 && v > 0 { // AT_CLKTCK
				return float64(v)
			}
		}
	}
	return 100
}()

// stat is what bench reads of /proc/<pid>/stat.
type stat struct {
	comm  string
	ticks uint64 // utime + stime
	start uint64 // starttime: with the pid, identifies the process across reuse
}

func readStat(pid int) (stat, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return stat{}, err
	}
	open, close := bytes.IndexByte(raw, '('), bytes.LastIndexByte(raw, ')')
	if open < 0 || close < open {
		return stat{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(raw[close+1:]))
	if len(f) < 20 { // f[0] is field 3 (state): utime 14, stime 15, starttime 22
		return stat{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	start, _ := strconv.ParseUint(f[19], 10, 64)
	return stat{comm: string(raw[open+1 : close]), ticks: ut + st, start: start}, nil
}

func cmdline(pid int) string {
	raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.TrimSpace(string(bytes.ReplaceAll(raw, []byte{0}, []byte{' '})))
}

// environ returns one variable of a process's environment ("" if unreadable).
func environ(pid int, key string) string {
	raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	for kv := range bytes.SplitSeq(raw, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte(key+"=")); ok {
			return string(v)
		}
	}
	return ""
}

// memory returns a process's resident and proportional set sizes in kB, from
// smaps_rollup (PSS shares each shared page among the processes mapping it, so the
// sum over processes is what they cost the machine together).
func memory(pid int) (rss, pss uint64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		n, _ := strconv.ParseUint(fields[1], 10, 64)
		switch fields[0] {
		case "Rss:":
			rss = n
		case "Pss:":
			pss = n
		}
	}
	return rss, pss, sc.Err()
}

// pids lists every process on the machine.
func pids() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// infrastructure finds PostgreSQL's processes (the backends serving one of labDBs apart
// from the rest) and RabbitMQ's, by name.
func infrastructure(labDBs map[string]bool) []member {
	var out []member
	for _, pid := range pids() {
		st, err := readStat(pid)
		if err != nil {
			continue
		}
		switch st.comm {
		case "postgres":
			switch db := pgBackendDB(cmdline(pid)); {
			case db == "":
				out = append(out, member{pid: pid, group: groupPGShared, kind: kindPostgres})
			case labDBs[db]:
				out = append(out, member{pid: pid, group: groupPGLab, kind: kindPostgres, lab: true})
			}
			// a backend of someone else's database: not ours, not shared
		case "beam.smp", "erl_child_setup", "epmd", "inet_gethost":
			out = append(out, member{pid: pid, group: groupRabbit, kind: kindRabbit})
		}
	}
	return out
}

// pgBackendDB returns the database a PostgreSQL backend serves, from its process title
// ("postgres: 15/main: user db 127.0.0.1(5432) idle"), or "" for the postmaster and the
// background processes.
func pgBackendDB(title string) string {
	rest, ok := strings.CutPrefix(title, "postgres: ")
	if !ok {
		return ""
	}
	f := strings.Fields(rest)
	if len(f) > 0 && strings.HasSuffix(f[0], ":") { // the cluster name (Debian)
		f = f[1:]
	}
	if len(f) >= 3 && (strings.Contains(f[2], "(") || f[2] == "[local]") {
		return f[1]
	}
	return ""
}

// cpuSample is the CPU ticks of a set of processes at one moment, and the machine's.
type cpuSample struct {
	members map[[2]uint64]member // (pid, starttime) → member
	ticks   map[[2]uint64]uint64
	busy    uint64 // the machine's busy ticks, every core
}

func sampleCPU(ms []member) cpuSample {
	s := cpuSample{members: map[[2]uint64]member{}, ticks: map[[2]uint64]uint64{}, busy: machineBusy()}
	for _, m := range ms {
		st, err := readStat(m.pid)
		if err != nil {
			continue
		}
		k := [2]uint64{uint64(m.pid), st.start}
		s.members[k], s.ticks[k] = m, st.ticks
	}
	return s
}

// groupCPU is the CPU seconds each group used between two samples; a process that
// started meanwhile counts from zero, one that ended is lost (its CPU is unknown).
type groupCPU struct {
	name, kind string
	lab        bool
	seconds    float64
	count      int
}

func cpuBetween(a, b cpuSample) (groups []groupCPU, otherSeconds float64) {
	by := map[string]*groupCPU{}
	var measured float64
	for k, m := range b.members {
		d := float64(b.ticks[k]-a.ticks[k]) / clockTicks // a.ticks[k] is 0 for a new process
		if b.ticks[k] < a.ticks[k] {
			d = 0
		}
		g := by[m.group]
		if g == nil {
			g = &groupCPU{name: m.group, kind: m.kind, lab: m.lab}
			by[m.group] = g
		}
		g.seconds += d
		g.count++
		measured += d
	}
	for _, g := range by {
		groups = append(groups, *g)
	}
	sortGroups(groups, func(g groupCPU) (string, string) { return g.kind, g.name })
	total := float64(b.busy-a.busy) / clockTicks
	return groups, max(0, total-measured)
}

// machineBusy is the sum over cores of non-idle ticks (/proc/stat's first line, guest
// time aside: it is already in user).
func machineBusy() uint64 {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var busy uint64
	for i, v := range f[1:9] { // user nice system idle iowait irq softirq steal
		n, _ := strconv.ParseUint(v, 10, 64)
		if i != 3 && i != 4 {
			busy += n
		}
	}
	return busy
}

// kindOrder sorts groups: the shop, then the tools, the infrastructure, the generator.
var kindOrder = []string{kindService, kindDashboard, kindObs, kindPostgres, kindRabbit, kindGenerator}

func sortGroups[T any](gs []T, key func(T) (kind, name string)) {
	slices.SortStableFunc(gs, func(x, y T) int {
		kx, nx := key(x)
		ky, ny := key(y)
		if d := slices.Index(kindOrder, kx) - slices.Index(kindOrder, ky); d != 0 {
			return d
		}
		return strings.Compare(nx, ny)
	})
}

// machine describes this computer.
func machine() Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version(), LoadStart: loadAvg()}
	if raw, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(raw)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if raw, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.Lines(string(raw)) {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				kb, _ := strconv.Atoi(f[1])
				m.MemoryMB = kb / 1024
			}
		}
	}
	if raw, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = runtime.GOOS + " " + strings.TrimSpace(string(raw))
	} else {
		m.Kernel = runtime.GOOS
	}
	if m.CPUModel == "" {
		m.CPUModel = runtime.GOARCH
	}
	return m
}

func loadAvg() [3]float64 {
	var out [3]float64
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return out
	}
	f := strings.Fields(string(raw))
	for i := 0; i < 3 && i < len(f); i++ {
		out[i], _ = strconv.ParseFloat(f[i], 64)
	}
	return out
}

// findByAddr finds, for --use-running, the process of each instance: the one whose
// environment says HTTP_ADDR=addr (root, or the user who started the lab, may read it).
func findByAddr(addrs map[string]string) map[string]int {
	out := map[string]int{}
	for _, pid := range pids() {
		if addr := environ(pid, "HTTP_ADDR"); addr != "" {
			if id, ok := addrs[addr]; ok {
				out[id] = pid
			}
		}
	}
	return out
}

// findByComm returns the first process called name ("jaeger", "prometheus"), 0 if none.
func findByComm(name string) int {
	for _, pid := range pids() {
		if st, err := readStat(pid); err == nil && st.comm == name {
			return pid
		}
	}
	return 0
}
