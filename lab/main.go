// Command lab runs the microlab shop natively — every service a process on this machine,
// against the PostgreSQL and RabbitMQ it finds — and drives the lab's control plane.
//
//	lab up [--scale service=N]... [--no-build] [--pprof]
//	lab doctor
//	lab settings
//	lab settings set key=value...
//	lab fault add service kind[=value] [for=D] [on=http|messages|both] [instance=ID]
//	lab fault list
//	lab fault clear [service|instance]
//	lab reset
//	lab exercise list|show|start|check|hint|answer|solve|reset ID
//	lab load [--rate 50/s] [--duration 2m] [--mix ok=80,declined=10,oos=5,xx=5]
//	lab chaos [--rate 10/s] [--duration 15s] [--faults kill,broker,postgres] [--kill service,...]
//	          [--outage 5s] [--settle 1m] [--attach] [--no-build] [--keep] [--json FILE]
//	lab bench [--quick] [--soak 10m] [--phases ceiling,up,…] [--out DIR] [--use-running]
//	lab topology [per-service|shared]
//
// Exit status: 0 success, 1 failure, 2 usage error.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"microlab/lab/stack"
	"microlab/services/platform/config"
)

func main() {
	// The first Ctrl-C (or SIGTERM) cancels ctx: `up` then stops every service cleanly.
	// Services run in their own process groups, so the terminal's SIGINT reaches lab only.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

const usage = `lab runs the microlab shop natively: every service as a process on this machine,
against the PostgreSQL and RabbitMQ it finds.

usage:
  lab up [--scale service=N]... [--no-build] [--pprof]
        check dependencies (enabling RabbitMQ's management and Prometheus plugins
        when they are off), create databases, build (Jaeger too: minutes the first
        time, with a progress line), start Jaeger, Prometheus (if installed) and every
        service, wait until all are healthy, print their URLs and what runs without;
        Ctrl-C stops everything. --scale sets scale.<service> for the
        queue consumers; while it runs lab up follows scale.<service> and db.topology
  lab doctor
        check each dependency; print the command that fixes a missing one
  lab settings
        list the lab settings (pattern switches) with their values
  lab settings [set] key=value...
        change settings: stored in database lab, announced on lab.control
  lab fault add SERVICE KIND[=VALUE] [for=10m] [on=http|messages|both] [instance=ID]
        inject a fault (latency=300ms±50ms, error_rate=0.5, down, crash,
        crash_after_commit, duplicate_delivery=N, poison=N) into a running service or
        one instance of it; it expires after for= (default 10m, at most 1h)
  lab fault list
        the faults in force, with the time each has left
  lab fault clear [SERVICE|INSTANCE]
        clear every fault, or a service's (its instances' too), or one instance's
  lab reset
        every setting back to its default, every fault cleared
  lab exercise list
        the guided exercises, one a line starting with its id, with your progress
  lab exercise show|start|check|solve|reset ID
        show: the README and the steps; start: switch the lab to its starting point;
        check: where it stands (exit 0 when every step is done, 1 when not, saying
        what is still missing); solve: run the reference solution of every step left,
        action by action; reset: put the settings and faults back as they were before
        start. The dashboard runs the exercises: this asks its API (LAB_DASHBOARD_URL)
  lab exercise hint ID [STEP]
        reveal the next hint of the current step (counted)
  lab exercise answer ID TEXT...
        answer the current step's question (exit 1 when wrong, with a hint)
  lab load [--rate 10/s] [--duration 1m] [--mix ok=80,declined=10,oos=5,xx=5]
           [--shoppers 20] [--browse 1] [--max-in-flight N] [--gateway URL] [--json FILE]
        shop traffic through the gateway's public API, open-loop at the rate, each
        order followed to its end; a progress line, then a summary (exit 1 when the
        lab did not keep up); it targets only this machine and stops by itself
  lab chaos [--rate 10/s] [--duration 15s] [--faults kill,broker,postgres]
            [--kill SERVICE,...] [--outage 5s] [--settle 1m] [--mix ...] [--shoppers 10]
            [--mode choreography|orchestration] [--attach] [--no-build] [--keep] [--json FILE]
        load (as lab load) while each fault hits in turn, --duration of load around each:
        kill -9 of every --kill service (default: all but the dashboard), a RabbitMQ
        restart, a PostgreSQL restart (each down for --outage); then, once the lab has
        recovered and orders have had --settle to end, a reconciliation read from the
        databases and DLQs: orders placed, final and lost, double charges and
        reservations, reservations or money held for cancelled orders, DLQ messages;
        exit 1 unless it is clean. It starts a lab of its own (own ports, databases,
        vhost; logs in LAB_RUN_DIR/chaos.log) and kills its processes itself; for the
        broker and postgres faults it starts a RabbitMQ node and a PostgreSQL cluster of
        its own on 127.0.0.1 and restarts those: the machine's are never restarted.
        --attach uses the lab lab up runs instead: kill faults only, as the control
        plane's crash fault (lab up's supervisor restarts the process), and only this
        run's orders and new DLQ messages count. --keep leaves the lab's databases and
        vhost for inspection (kill faults only)
  lab bench [--quick] [--soak 10m] [--phases ceiling,up,idle,latency,cost,maxrate,
            profile,dashboard,tracing,soak] [--out DIR] [--use-running] [--mix …]
            [--browse N]
        the performance report: starts a lab of its own (own databases, vhost and
        ports, built without -race; a running lab is not touched) or measures the
        running one, and measures in one run the RabbitMQ and PostgreSQL ceiling, the
        highest checkout rate held in each saga mode, saga latency at 10, 50 and
        100/s, the cost of one checkout, where the Go processes' CPU goes (CPU
        profiles under load, left in a temporary directory for go tool pprof),
        tracing overhead, the dashboard's delay, CPU and memory at rest and after a
        soak, and start-up time; writes docs/benchmarks.md and docs/benchmarks.json
        (--out DIR: there instead).
        A full run takes about 35 minutes; --quick a few seconds per phase
  lab topology [per-service|shared]
        move the data of a STOPPED lab to the other db.topology (default: the
        setting's value) and record it: the compose lab's switch, which lab up does
        by itself (docker compose -f compose/docker-compose.yml run --rm topology shared,
        between stopping the services and starting them again)
  lab help
        this text

environment:
  ADMIN_DATABASE_URL       superuser connection used to create databases and roles
                           (default postgres://postgres@127.0.0.1:5432/postgres)
  AMQP_URL                 RabbitMQ (default amqp://guest:guest@127.0.0.1:5672/)
  RABBITMQ_MANAGEMENT_URL  RabbitMQ management API (default http://guest:guest@127.0.0.1:15672)
  RABBITMQ_PROMETHEUS_URL  RabbitMQ's Prometheus endpoint (default http://127.0.0.1:15692)
  RABBITMQ_NODENAME, RABBITMQ_ENABLED_PLUGINS_FILE
                           passed on to rabbitmq-plugins when up enables the management
                           and Prometheus plugins (default: the machine's node)
  LAB_BIN_DIR              where up builds the services and Jaeger (default <user cache dir>/microlab/bin)
  LAB_RUN_DIR              Jaeger's and Prometheus's config, data and logs (default <user cache
                           dir>/microlab/run, run-<offset> with LAB_PORT_OFFSET)
  LAB_DB_PREFIX            prefix for every database and role name (default none; tests;
                           a second lab also needs a vhost of its own in AMQP_URL)
  LAB_PORT_OFFSET          added to every port: services, Jaeger, Prometheus (default 0; tests)
  LAB_DASHBOARD_URL        the dashboard lab exercise asks (default the lab's, http://127.0.0.1:8080)
  LAB_SECRETS_DIR          the compose lab's secrets volume: the roles' passwords (default
                           none: the native lab's, the role names)
  LAB_MIGRATIONS_DIR       where topology finds services/<name>/migrations (default the module)
  Any variable can be given as <NAME>_FILE, a file holding its value (compose's secrets).

exit status: 0 ok, 1 failure, 2 usage error
`

// Config is what lab reads from its environment.
type Config struct {
	AdminDatabaseURL string `env:"ADMIN_DATABASE_URL" default:"postgres://postgres@127.0.0.1:5432/postgres"`
	AMQPURL          string `env:"AMQP_URL" default:"amqp://guest:guest@127.0.0.1:5672/"`
	ManagementURL    string `env:"RABBITMQ_MANAGEMENT_URL" default:"http://guest:guest@127.0.0.1:15672"`
	// RabbitMetricsURL is RabbitMQ's Prometheus endpoint (its rabbitmq_prometheus plugin).
	RabbitMetricsURL string `env:"RABBITMQ_PROMETHEUS_URL" default:"http://127.0.0.1:15692"`
	// RabbitNode and RabbitPluginsFile are passed on to rabbitmq-plugins when lab up
	// enables the plugins ("": its defaults, the machine's node): they point it at
	// another node, as they do RabbitMQ's own tools.
	RabbitNode        string `env:"RABBITMQ_NODENAME"`
	RabbitPluginsFile string `env:"RABBITMQ_ENABLED_PLUGINS_FILE"`
	BinDir            string `env:"LAB_BIN_DIR"`
	RunDir            string `env:"LAB_RUN_DIR"`
	DBPrefix          string `env:"LAB_DB_PREFIX"`
	PortOffset        int    `env:"LAB_PORT_OFFSET"`
	CacheHome         string `env:"XDG_CACHE_HOME"`
	// DashboardURL is the dashboard `lab exercise` asks ("": the lab's own, port offset
	// included).
	DashboardURL string `env:"LAB_DASHBOARD_URL"`
	// SecretsDir is the compose lab's secrets volume (compose/secrets/generate.sh): the
	// roles' passwords are its <database>_password files, and `lab topology` leaves its
	// choice there for the next `up`. "": the native lab (passwords are role names).
	SecretsDir string `env:"LAB_SECRETS_DIR"`
	// MigrationsDir holds services/<name>/migrations (`lab topology`): the module's root
	// natively, /migrations in the lab's image.
	MigrationsDir string `env:"LAB_MIGRATIONS_DIR"`
}

// Stack is the lab these settings describe: native ports, 127.0.0.1.
func (c Config) Stack() stack.Config {
	return stack.Config{
		AdminDatabaseURL:  c.AdminDatabaseURL,
		AMQPURL:           c.AMQPURL,
		DBPrefix:          c.DBPrefix,
		PortOffset:        c.PortOffset,
		Host:              "127.0.0.1",
		RabbitMetricsAddr: hostPort(c.RabbitMetricsURL),
		Password:          c.password(),
	}
}

// password reads the roles' passwords from the compose lab's secrets volume (nil
// natively: stack's development passwords, the role names).
func (c Config) password() func(role string) (string, error) {
	if c.SecretsDir == "" {
		return nil
	}
	return func(role string) (string, error) {
		db := strings.TrimPrefix(role, c.DBPrefix) // the files are named by database
		b, err := os.ReadFile(filepath.Join(c.SecretsDir, db+"_password"))
		if err != nil {
			return "", err
		}
		return strings.TrimSpace(string(b)), nil
	}
}

// hostPort is the host:port of a URL ("" when it has none: stack's default then).
func hostPort(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Host
}

// Bin is the directory the services' binaries (and Jaeger's) are built into.
func (c Config) Bin() (string, error) {
	if c.BinDir != "" {
		return c.BinDir, nil
	}
	cache, err := c.cache()
	if err != nil {
		return "", fmt.Errorf("binary directory: %w (set LAB_BIN_DIR)", err)
	}
	return filepath.Join(cache, "microlab", "bin"), nil
}

// Run is the runtime directory: Jaeger's and Prometheus's configuration, data and logs.
// Labs on different port offsets get different ones.
func (c Config) Run() (string, error) {
	if c.RunDir != "" {
		return c.RunDir, nil
	}
	cache, err := c.cache()
	if err != nil {
		return "", fmt.Errorf("runtime directory: %w (set LAB_RUN_DIR)", err)
	}
	name := "run"
	if c.PortOffset != 0 {
		name = fmt.Sprintf("run-%d", c.PortOffset)
	}
	return filepath.Join(cache, "microlab", name), nil
}

func (c Config) cache() (string, error) {
	if c.CacheHome != "" {
		return c.CacheHome, nil
	}
	return os.UserCacheDir()
}

// errUsage marks errors that are the caller's mistake (exit 2, not 1).
var errUsage = errors.New("usage")

// usageErrorf returns a usage error with a one-line message.
func usageErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errUsage}, args...)...)
}

// run is the whole program; main only wires the process to it.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	var cfg Config
	if err := config.Load(getenv, &cfg); err != nil {
		fmt.Fprintln(stderr, "lab:", err)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "up":
		err = up(ctx, cfg, rest, stdout, stderr)
	case "doctor":
		err = doctor(ctx, cfg, rest, stdout)
	case "settings":
		err = settings(ctx, cfg, rest, stdout, stderr)
	case "fault":
		err = fault(ctx, cfg, rest, stdout, stderr)
	case "reset":
		err = reset(ctx, cfg, rest, stdout, stderr)
	case "exercise", "exercises":
		err = exercise(ctx, cfg, rest, stdout, stderr)
	case "load":
		err = load(ctx, cfg, rest, stdout, stderr)
	case "chaos":
		err = chaos(ctx, cfg, rest, stdout, stderr)
	case "bench":
		err = runBench(ctx, cfg, rest, stdout, stderr)
	case "topology":
		err = topologyCmd(ctx, cfg, rest, stdout)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "lab: unknown command %q\n\n%s", cmd, usage)
		return exitUsage
	}
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "lab %s: %v (see lab help)\n", cmd, err)
		return exitUsage
	case errors.Is(err, errReported):
		return exitFailure
	default:
		fmt.Fprintf(stderr, "lab %s: %v\n", cmd, err)
		return exitFailure
	}
}

// errReported is a failure whose details were already printed.
var errReported = errors.New("failed (reported above)")
