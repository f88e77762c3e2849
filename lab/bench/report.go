package bench

import (
	"time"

	"microlab/lab/loadgen"
)

// Report is one `lab bench` run: everything docs/benchmarks.md says, as data (the JSON
// twin, docs/benchmarks.json). Sections of phases that did not run are nil or empty;
// Notes say what was skipped or went wrong, so a reader never mistakes a missing number
// for a zero. Times are milliseconds (…Ms) or seconds (…S) as floats; rates are per
// second.
type Report struct {
	Quick    bool      `json:"quick"` // --quick: a few seconds per phase, for tests; not comparable
	Date     time.Time `json:"date"`
	WallS    float64   `json:"wallS"` // the whole run, build included
	Commit   Commit    `json:"commit"`
	Machine  Machine   `json:"machine"`
	Settings Settings  `json:"settings"`
	Phases   []string  `json:"phases"` // the phases that ran, in order

	Ceiling   *Ceiling   `json:"ceiling,omitempty"`
	Startup   *Startup   `json:"startup,omitempty"`
	Rest      *Snapshot  `json:"rest,omitempty"` // the lab at rest, before any load
	Latency   []LoadRun  `json:"latency,omitempty"`
	Cost      []Cost     `json:"cost,omitempty"`
	MaxRate   []MaxRate  `json:"maxRate,omitempty"`
	Profile   *Profile   `json:"profile,omitempty"` // where the CPU goes, by Go's profiler
	Tracing   *Tracing   `json:"tracing,omitempty"`
	Dashboard *Dashboard `json:"dashboard,omitempty"`
	Soak      *Soak      `json:"soak,omitempty"`

	Targets []Target `json:"targets"`
	Notes   []string `json:"notes,omitempty"`
}

// Commit is the code that was measured.
type Commit struct {
	Hash   string `json:"hash"`
	Branch string `json:"branch,omitempty"`
	Dirty  bool   `json:"dirty"` // uncommitted changes (docs/benchmarks.* aside)
}

// Machine is where it was measured.
type Machine struct {
	Cores      int        `json:"cores"`
	CPUModel   string     `json:"cpuModel"`
	MemoryMB   int        `json:"memoryMiB"`
	Kernel     string     `json:"kernel"`
	Go         string     `json:"go"`
	PostgreSQL string     `json:"postgresql"`
	PGSettings string     `json:"pgSettings"` // fsync, synchronous_commit, shared_buffers
	RabbitMQ   string     `json:"rabbitmq"`
	Erlang     string     `json:"erlang"`
	LoadStart  [3]float64 `json:"loadAvgStart"` // /proc/loadavg when the run started
	LoadEnd    [3]float64 `json:"loadAvgEnd"`
}

// Settings are the knobs of the run.
type Settings struct {
	UseRunning   bool     `json:"useRunning"` // measured a lab already running, not one of bench's own
	PortOffset   int      `json:"portOffset"`
	DBPrefix     string   `json:"dbPrefix"`
	VHost        string   `json:"vhost"`
	Build        string   `json:"build"`
	Env          []string `json:"env"` // extra environment every service ran with
	Mix          string   `json:"mix"`
	Browse       int      `json:"browse"`
	Shoppers     int      `json:"shoppers"`
	DeadlineS    float64  `json:"deadlineS"`    // an order counts as completed when final, as meant, within this of its POST
	HoldFraction float64  `json:"holdFraction"` // a rate is held when this fraction of its scheduled orders completed
	FixedRates   []int    `json:"fixedRates"`
	FixedS       float64  `json:"fixedS"`     // each fixed-rate run
	StepS        float64  `json:"stepS"`      // each step of the max-rate search
	SearchFrom   float64  `json:"searchFrom"` // the search's first rate
	CostRate     float64  `json:"costRate"`   // the run the cost of a checkout is measured at
	IdleS        float64  `json:"idleS"`      // the quiet window of the idle measurement
	SoakRate     float64  `json:"soakRate"`
	SoakS        float64  `json:"soakS"`
	CeilingS     float64  `json:"ceilingS"` // each ceiling measurement
	ProfileS     float64  `json:"profileS"` // each CPU profile's window
}

// Ceiling is what the machine's broker and database do on their own, measured in the
// same run, so that the lab's numbers are also ratios.
type Ceiling struct {
	RabbitMQ   *RabbitCeiling   `json:"rabbitmq,omitempty"`
	PostgreSQL *PostgresCeiling `json:"postgresql,omitempty"`
}

// RabbitCeiling: persistent messages, publisher-confirmed, consumer-acked, in a private
// vhost.
type RabbitCeiling struct {
	Publishers int     `json:"publishers"`
	Consumers  int     `json:"consumers"`
	Bytes      int     `json:"bytes"`    // message body
	InFlight   int     `json:"inFlight"` // unconfirmed messages each publisher keeps outstanding
	Prefetch   int     `json:"prefetch"`
	Seconds    float64 `json:"seconds"`
	Published  float64 `json:"publishedPerS"` // confirmed by the broker
	Acked      float64 `json:"ackedPerS"`     // delivered and acked: the ceiling
	ConfirmP50 float64 `json:"confirmP50Ms"`  // publish → confirm
	ConfirmP99 float64 `json:"confirmP99Ms"`
}

// PostgresCeiling: small write transactions from N clients in a private database.
type PostgresCeiling struct {
	Method      string  `json:"method"`
	Clients     int     `json:"clients"`
	Transaction string  `json:"transaction"`
	Seconds     float64 `json:"seconds"`
	TPS         float64 `json:"tps"`
	P50         float64 `json:"p50Ms"`
	P99         float64 `json:"p99Ms"`
}

// Latency is a distribution in milliseconds.
type Latency struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50Ms"`
	P95 float64 `json:"p95Ms"`
	P99 float64 `json:"p99Ms"`
	Max float64 `json:"maxMs"`
}

func latencyOf(l loadgen.Latency) Latency {
	return Latency{N: l.N, P50: msOf(l.P50), P95: msOf(l.P95), P99: msOf(l.P99), Max: msOf(l.Max)}
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// LoadRun is one open-loop run of lab/loadgen at a fixed rate.
type LoadRun struct {
	Mode       string           `json:"mode"`     // saga.mode
	Sampling   string           `json:"sampling"` // TRACES_SAMPLER_RATIO
	Rate       float64          `json:"rate"`     // orders/s asked for
	Seconds    float64          `json:"seconds"`  // of placing
	Scheduled  int64            `json:"scheduled"`
	Placed     int64            `json:"placed"`
	Refused    int64            `json:"refused"`
	RefusedBy  map[string]int64 `json:"refusedBy,omitempty"` // answer status ("no answer": a timeout or a refused connection)
	Skipped    int64            `json:"skipped"`
	Finished   int64            `json:"finished"`
	Unexpected int64            `json:"unexpected"` // final, but not as the mix meant
	Unfinished int64            `json:"unfinished"`
	Completed  int64            `json:"completed"`     // final as meant within the deadline of its POST
	Fraction   float64          `json:"fraction"`      // Completed / Scheduled
	Throughput float64          `json:"completedPerS"` // Completed / Seconds
	Held       bool             `json:"held"`          // Fraction ≥ the hold fraction
	Placement  Latency          `json:"placement"`
	Saga       Latency          `json:"saga"`
	// CPU used meanwhile (placing and draining) by every measured process, per finished
	// order, and how busy the machine was besides (cores used by processes not measured:
	// another user's work makes every number here noisier).
	CPUPerCheckoutMs float64 `json:"cpuPerCheckoutMs"`
	OtherCores       float64 `json:"otherCores"`
}

// Cost is what one checkout costs, measured over one fixed-rate run.
type Cost struct {
	Mode      string  `json:"mode"`
	Sampling  string  `json:"sampling"`
	Rate      float64 `json:"rate"`
	Checkouts int64   `json:"checkouts"` // finished orders of the run (every outcome)
	Held      bool    `json:"held"`      // the run held its rate (if not, a backlog is in the figures)
	// The lab's vhost's message_stats (management API) delta ÷ checkouts.
	Published float64 `json:"publishedPerCheckout"`
	Delivered float64 `json:"deliveredPerCheckout"` // deliver_get: every consumer, the dashboard's wiretap too
	Acked     float64 `json:"ackedPerCheckout"`
	// pg_stat_database xact_commit delta over the lab's databases ÷ checkouts, each
	// database's share, and the generator's polls per checkout (each a read transaction
	// or more in orders' database).
	Transactions  float64            `json:"transactionsPerCheckout"`
	TxByDatabase  map[string]float64 `json:"transactionsByDatabase"`
	IdleTxPerS    float64            `json:"idleTransactionsPerS"` // the lab's own background rate at rest, included above
	PollsPerOrder float64            `json:"pollsPerCheckout"`
	TxPerPoll     float64            `json:"transactionsPerPoll"` // measured apart: one shopper polling one final order
	// TxOwn is Transactions less the background (IdleTxPerS over the window) and the
	// polls (PollsPerOrder × TxPerPoll): the checkout's own, estimated from the counters.
	TxOwn float64 `json:"checkoutTransactions"`
	// Spans of confirmed checkouts' traces, read back from the lab's Jaeger.
	Spans *Spans `json:"spans,omitempty"`
	// CPU milliseconds per checkout of every measured process (utime+stime deltas).
	CPU     []ProcCPU `json:"cpu"`
	CPUAll  float64   `json:"cpuPerCheckoutMs"`
	CPULab  float64   `json:"cpuLabPerCheckoutMs"` // the lab's own processes and its PostgreSQL backends
	Seconds float64   `json:"seconds"`             // the window the deltas cover
}

// Spans summarises the traces of a sample of checkouts (the mean per trace).
type Spans struct {
	Traces     int     `json:"traces"` // read back
	Spans      float64 `json:"spans"`
	SQL        float64 `json:"sql"`        // spans with db.system
	Statements float64 `json:"statements"` // SQL spans less prepares: statements executed
	Commits    float64 `json:"commits"`    // SQL spans of a COMMIT: transactions as traced
	Publishes  float64 `json:"publishes"`
	Deliveries float64 `json:"deliveries"` // consumer spans (process/receive)
	HTTP       float64 `json:"http"`
	Min        int     `json:"min"`
	Max        int     `json:"max"`
	Source     string  `json:"source"` // how statements were counted
}

// ProcCPU is one process (or group of them) in a CPU account.
type ProcCPU struct {
	Name string  `json:"name"`
	Kind string  `json:"kind"` // service, observability, postgres, rabbitmq, generator
	Ms   float64 `json:"ms"`   // per checkout
}

// MaxRate is the step search for the highest rate held, in one saga mode.
type MaxRate struct {
	Mode     string    `json:"mode"`
	Sampling string    `json:"sampling"`
	Rate     float64   `json:"rate"`    // the highest rate held (0: not even the first)
	Ceiling  float64   `json:"ceiling"` // the lowest rate not held (0: none failed, up to the search's limit)
	Capped   bool      `json:"capped"`  // every rate up to the search's limit held
	Steps    []LoadRun `json:"steps"`
	// At Rate, with the cost of a checkout in this mode: messages and transactions per
	// second, and their share of the ceilings measured in the same run.
	CostRate  float64 `json:"costRate"` // the fixed-rate run the cost of a checkout is from
	MsgsPerS  float64 `json:"msgsPerS"`
	MsgsShare float64 `json:"msgsShareOfCeiling"`
	TxPerS    float64 `json:"txPerS"`
	TxShare   float64 `json:"txShareOfCeiling"`
}

// Tracing compares every trace sampled with none, in the same run.
type Tracing struct {
	MaxOn     float64  `json:"maxRateOn"` // choreography, TRACES_SAMPLER_RATIO=1
	MaxOff    float64  `json:"maxRateOff"`
	Overhead  float64  `json:"throughputOverhead"` // 1 − on/off
	CPUOnMs   float64  `json:"cpuPerCheckoutOnMs"` // at the cost rate
	CPUOffMs  float64  `json:"cpuPerCheckoutOffMs"`
	CPUGrowth float64  `json:"cpuOverhead"` // on/off − 1
	Rate      float64  `json:"rate"`        // the fixed rate of the CPU comparison
	Off       *MaxRate `json:"off,omitempty"`
	OffRun    *LoadRun `json:"offRun,omitempty"`
}

// Dashboard is the delay from the gateway's 202 (its root span has ended) to the
// dashboard's websocket delivering that trace with the gateway's span as its root.
type Dashboard struct {
	Rate    float64 `json:"rate"`
	Seconds float64 `json:"seconds"`
	Clients int     `json:"clients"`
	Traces  int     `json:"traces"` // accepted orders
	Seen    int     `json:"seen"`   // of them, reached the browser's socket
	Delay   Latency `json:"delay"`
}

// Snapshot is every process of the lab over a quiet window: CPU and memory.
type Snapshot struct {
	WindowS float64   `json:"windowS"`
	Procs   []ProcMem `json:"procs"`
	// The lab: its own processes (services, dashboard, Jaeger, Prometheus) and the
	// PostgreSQL backends serving its databases. Shared: PostgreSQL's own processes and
	// RabbitMQ, which serve every user of this machine.
	LabCPU       float64 `json:"labCpuPctOfCore"`
	LabPSSMB     float64 `json:"labPssMiB"`
	LabRSSMB     float64 `json:"labRssMiB"`
	SharedCPU    float64 `json:"sharedCpuPctOfCore"`
	SharedPSSMB  float64 `json:"sharedPssMiB"`
	MaxServiceMB float64 `json:"maxGoServicePssMiB"`
	MaxService   string  `json:"maxGoService"`
	OtherCores   float64 `json:"otherCores"` // the rest of the machine meanwhile
}

// ProcMem is one process (or group) at rest.
type ProcMem struct {
	Name  string  `json:"name"`
	Kind  string  `json:"kind"`
	Count int     `json:"count"`        // processes in the group
	CPU   float64 `json:"cpuPctOfCore"` // over the window
	RSSMB float64 `json:"rssMiB"`
	PSSMB float64 `json:"pssMiB"`
}

// Soak is a long run at a steady rate, and the lab at rest after it.
type Soak struct {
	Run   LoadRun  `json:"run"`
	After Snapshot `json:"after"`
	Fresh bool     `json:"fresh"` // services, Jaeger and Prometheus restarted just before
}

// Startup is `lab up` to all-healthy with built binaries: stack.Launch until every
// instance answers /readyz, each time bench started the services.
type Startup struct {
	Instances int       `json:"instances"`
	First     float64   `json:"firstS"`
	Launches  []float64 `json:"launchesS"`
}

// Target is one of issue 11's targets against what this run measured.
type Target struct {
	Name     string `json:"name"`
	Target   string `json:"target"`
	Measured string `json:"measured"` // "" when the phase did not run
	Met      bool   `json:"met"`
	By       string `json:"by,omitempty"` // how far it is met or missed
}

// Profile is where the Go processes' CPU goes under load: a CPU profile of every
// instance (and the dashboard), all taken at once over the same window while a
// fixed-rate run of choreography went on.
type Profile struct {
	Mode     string        `json:"mode"`
	Rate     float64       `json:"rate"`     // of the run profiled
	RateFrom string        `json:"rateFrom"` // how the rate was chosen
	Seconds  float64       `json:"seconds"`  // each profile's window (GET /debug/pprof/profile?seconds=N)
	Run      LoadRun       `json:"run"`
	Procs    []ProcProfile `json:"procs"`
	// The whole lab's sampled CPU (every process above), and by category: Categories
	// add up to TotalMs, each sample counted once (see CategoryRule).
	TotalMs      float64       `json:"totalMs"`
	CorePct      float64       `json:"cpuPctOfCore"` // TotalMs over the window, % of one core
	Categories   []CategoryCPU `json:"categories"`
	CategoryRule string        `json:"categoryRule"`
}

// ProcProfile is one process's CPU profile, summarised.
type ProcProfile struct {
	Name       string        `json:"name"`    // the instance (orders-1)
	Service    string        `json:"service"` // orders
	Samples    int64         `json:"samples"` // the profiler's samples (100 a second of CPU)
	Ms         float64       `json:"ms"`      // CPU sampled
	CorePct    float64       `json:"cpuPctOfCore"`
	Top        []FuncCPU     `json:"top"` // by flat time: the functions the samples ended in
	Categories []CategoryCPU `json:"categories"`
}

// FuncCPU is a function's flat CPU in one profile.
type FuncCPU struct {
	Name  string  `json:"name"`
	Ms    float64 `json:"ms"`
	Share float64 `json:"share"` // of the process's sampled CPU
}

// CategoryCPU is the CPU charged to one category (cpuCategories).
type CategoryCPU struct {
	Name     string   `json:"name"`
	Packages []string `json:"packages,omitempty"` // the import paths it holds ("" for the fallbacks)
	Ms       float64  `json:"ms"`
	Share    float64  `json:"share"`            // of the total it is part of
	Most     string   `json:"most,omitempty"`   // whole lab: the process with most of it
	MostMs   float64  `json:"mostMs,omitempty"` // and how much
}
