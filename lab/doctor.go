package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/lab/stack"
)

const checkTimeout = 5 * time.Second

// Fix commands, printed next to a missing dependency.
const (
	fixGo         = "install Go 1.26 or newer from https://go.dev/dl/ and put its bin directory on PATH"
	fixPostgres   = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start   (not installed: apt-get install postgresql)"
	fixRabbit     = "rabbitmq-server -detached   (not installed: apt-get install rabbitmq-server)"
	fixPrometheus = stack.FixPrometheus
	fixChromium   = "apt-get install -y chromium"
)

// check is one dependency. run returns a short description of what it found.
type check struct {
	name     string
	required bool // false: the lab runs without it ("optional")
	later    bool // only later features need it ("optional (later)")
	needs    string
	fix      string
	run      func(ctx context.Context) (string, error)
}

type result struct {
	check
	detail string
	err    error
}

// checks lists the dependencies of the native lab. build: whether the Go toolchain is
// needed (up --no-build does not build).
func checks(cfg Config, build bool) []check {
	var cs []check
	if build {
		cs = append(cs, check{name: "go", required: true, fix: fixGo, run: checkGo})
	}
	// Both plugins are fixed by one command, which lab up runs itself when it can
	// (ensurePlugins).
	plugins := pluginsFix(cfg).fix()
	cs = append(cs,
		check{name: "postgresql", required: true, fix: fixPostgres,
			run: func(ctx context.Context) (string, error) { return checkPostgres(ctx, cfg.AdminDatabaseURL) }},
		check{name: nameRabbit, required: true, fix: fixRabbit,
			run: func(ctx context.Context) (string, error) { return checkRabbit(cfg.AMQPURL) }},
		check{name: nameManagement, required: true, fix: plugins,
			run: func(ctx context.Context) (string, error) { return checkManagement(ctx, cfg.ManagementURL) }},
		jaegerCheck(cfg),
		check{name: "prometheus", fix: fixPrometheus, run: checkPrometheus},
		// What Prometheus scrapes from RabbitMQ.
		check{name: nameRabbitProm, fix: plugins,
			run: func(ctx context.Context) (string, error) {
				return checkHTTP(ctx, strings.TrimRight(cfg.RabbitMetricsURL, "/")+"/metrics")
			}},
		check{name: "chromium", later: true, fix: fixChromium,
			run: func(context.Context) (string, error) { return lookPath("chromium", "chromium-browser") }},
	)
	return cs
}

// jaegerCheck: is the jaeger binary in the bin directory, built from the versions
// tools/go.mod pins? (lab up builds it when it is not.)
func jaegerCheck(cfg Config) check {
	bin, binErr := cfg.Bin()
	root, rootErr := moduleRoot()
	c := check{name: "jaeger"}
	switch {
	case binErr != nil:
		c.fix = "set LAB_BIN_DIR"
	case rootErr != nil:
		c.fix = "run lab up inside the microlab repository: it builds Jaeger"
	default:
		c.fix = fmt.Sprintf("lab up builds it (the first build takes %s), or: %s", stack.JaegerBuildTime, stack.JaegerBuildCommand(root, bin))
	}
	c.run = func(context.Context) (string, error) {
		if binErr != nil {
			return "", binErr
		}
		path := filepath.Join(bin, "jaeger")
		if rootErr != nil { // cannot compare with tools/go.mod: is there one at all?
			if _, err := os.Stat(path); err != nil {
				return "", fmt.Errorf("not built (%s)", path)
			}
			return "built (" + path + ")", nil
		}
		why, err := stack.JaegerStale(root, bin)
		switch {
		case err != nil:
			return "", err
		case why != "":
			return "", fmt.Errorf("%s: %s", path, why)
		}
		return "built, as tools/go.mod pins (" + path + ")", nil
	}
	return c
}

// checkPrometheus finds prometheus on PATH and asks its version.
func checkPrometheus(ctx context.Context) (string, error) {
	path, err := lookPath("prometheus")
	if err != nil {
		return "", err
	}
	out, err := exec.CommandContext(ctx, path, "--version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", path, err)
	}
	// "prometheus, version 2.42.0+ds (branch: …)"
	first, _, _ := strings.Cut(string(out), "\n")
	if _, v, ok := strings.Cut(first, "version "); ok {
		first, _, _ = strings.Cut(v, " ")
	}
	return "Prometheus " + first + " (" + path + ")", nil
}

// runChecks runs every check concurrently, each bounded by checkTimeout, and returns
// the results in the order of cs.
func runChecks(ctx context.Context, cs []check) []result {
	out := make([]result, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, checkTimeout)
			defer cancel()
			detail, err := c.run(ctx)
			out[i] = result{check: c, detail: detail, err: err}
		})
	}
	wg.Wait()
	return out
}

// status is the word doctor shows for a result.
func (r result) status() string {
	switch {
	case r.err == nil:
		return "ok"
	case r.required:
		return "missing"
	case r.later:
		return "optional (later)"
	default:
		return "optional"
	}
}

// line is one dependency on one line: name, status, what was found or what went wrong,
// and for a missing one the command that fixes it.
func (r result) line() string {
	if r.err == nil {
		return fmt.Sprintf("%-20s %-17s %s", r.name, r.status(), r.detail)
	}
	return fmt.Sprintf("%-20s %-17s %s — fix: %s", r.name, r.status(), oneLine(r.err), r.fix)
}

// oneLine flattens a multi-line error (pgx lists every address it tried, one a line)
// into one line, dropping repeated parts.
func oneLine(err error) string {
	var parts []string
	for l := range strings.Lines(err.Error()) {
		if l = strings.TrimSpace(l); l != "" && !slices.Contains(parts, l) {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, " ")
}

// missing returns the required dependencies that failed.
func missing(rs []result) []result {
	var out []result
	for _, r := range rs {
		if r.required && r.err != nil {
			out = append(out, r)
		}
	}
	return out
}

// doctor prints every dependency's state; it fails if a required one is missing.
func doctor(ctx context.Context, cfg Config, args []string, stdout io.Writer) error {
	if len(args) > 0 {
		return usageErrorf("doctor takes no arguments, got %q", args)
	}
	rs := runChecks(ctx, checks(cfg, true))
	for _, r := range rs {
		fmt.Fprintln(stdout, r.line())
	}
	if m := missing(rs); len(m) > 0 {
		fmt.Fprintf(stdout, "required dependencies missing: %d\n", len(m))
		return errReported
	}
	return nil
}

func checkGo(ctx context.Context) (string, error) {
	path, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("go not found on PATH")
	}
	out, err := exec.CommandContext(ctx, path, "env", "GOVERSION").Output()
	if err != nil {
		return "", fmt.Errorf("%s env GOVERSION: %w", path, err)
	}
	return strings.TrimSpace(string(out)) + " (" + path + ")", nil
}

// checkPostgres connects with the admin URL and makes sure the role may create the
// services' roles and databases.
func checkPostgres(ctx context.Context, adminURL string) (string, error) {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", fmt.Errorf("connect %s: %w", redact(adminURL), err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var version, user string
	var super bool
	err = conn.QueryRow(ctx, `SELECT current_setting('server_version'), current_user, rolsuper
		FROM pg_roles WHERE rolname = current_user`).Scan(&version, &user, &super)
	if err != nil {
		return "", fmt.Errorf("query %s: %w", redact(adminURL), err)
	}
	if !super {
		return "", fmt.Errorf("%s connects as %s, which is not a superuser: lab cannot create the services' roles and databases (set ADMIN_DATABASE_URL)", redact(adminURL), user)
	}
	return fmt.Sprintf("PostgreSQL %s at %s (superuser %s)", version, redact(adminURL), user), nil
}

func checkRabbit(amqpURL string) (string, error) {
	conn, err := amqp.DialConfig(amqpURL, amqp.Config{Dial: amqp.DefaultDial(checkTimeout)})
	if err != nil {
		return "", fmt.Errorf("dial %s: %w", redact(amqpURL), err)
	}
	defer conn.Close()
	version, _ := conn.Properties["version"].(string)
	return fmt.Sprintf("RabbitMQ %s at %s", version, redact(amqpURL)), nil
}

// checkManagement asks the management API for its overview, with the credentials in
// mgmtURL: the tests create a virtual host each through it.
func checkManagement(ctx context.Context, mgmtURL string) (string, error) {
	u, err := url.Parse(mgmtURL)
	if err != nil {
		return "", fmt.Errorf("parse RABBITMQ_MANAGEMENT_URL: %w", err)
	}
	user := u.User.Username()
	pass, _ := u.User.Password()
	u.User = nil
	endpoint := strings.TrimRight(u.String(), "/") + "/api/overview"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint, nil)
	if err != nil {
		return "", err
	}
	req.SetBasicAuth(user, pass)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err // names the method and URL already
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s as %s: %s", endpoint, user, resp.Status)
	}
	var overview struct {
		Version string `json:"rabbitmq_version"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&overview); err != nil {
		return "", fmt.Errorf("GET %s: %w", endpoint, err)
	}
	return fmt.Sprintf("management API of RabbitMQ %s at %s", overview.Version, u), nil
}

func checkHTTP(ctx context.Context, endpoint string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("nothing answers at %s", endpoint)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", endpoint, resp.Status)
	}
	return "answers at " + endpoint, nil
}

func lookPath(names ...string) (string, error) {
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not on PATH", names[0])
}

// redact hides the password of a URL shown to people.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
