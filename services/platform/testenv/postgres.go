package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Postgres is a private PostgreSQL cluster for a test that must stop and restart the
// database (chaos tests): stopping the machine's shared server would break every other
// test running in parallel. Its data directory survives Stop/Start, like a real restart.
type Postgres struct {
	t    testing.TB
	bin  string
	dir  string
	port int
	cred *syscall.Credential
}

// PrivatePostgres initialises a new cluster (trust auth, loopback only, fsync off: the
// test is about availability, not durability across power loss) and starts it; it is
// stopped and removed when the test ends.
func PrivatePostgres(t testing.TB) *Postgres {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	if len(bins) == 0 {
		if p, err := exec.LookPath("pg_ctl"); err == nil {
			bins = []string{p}
		}
	}
	if len(bins) == 0 {
		Missing(t, "pg_ctl and initdb", "apt-get install postgresql", fmt.Errorf("no pg_ctl in /usr/lib/postgresql/*/bin or PATH"))
	}
	slices.Sort(bins)
	p := &Postgres{t: t, bin: filepath.Dir(bins[len(bins)-1]), port: FreePort(t)}
	dir, err := os.MkdirTemp("", "microlab-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	p.dir = dir
	// PostgreSQL refuses to run as root: as root, run it as the postgres user.
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("private postgres: running as root and there is no postgres user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	p.run("initdb", "-D", p.data(), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
	p.Start()
	t.Cleanup(func() { p.Stop() })
	return p
}

// AdminURL is the superuser URL of the cluster.
func (p *Postgres) AdminURL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.port)
}

func (p *Postgres) data() string { return filepath.Join(p.dir, "data") }

// Start starts the server and waits until it accepts connections.
func (p *Postgres) Start() {
	p.t.Helper()
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off -c full_page_writes=off -c synchronous_commit=off",
		p.port, p.dir)
	p.run("pg_ctl", "-D", p.data(), "-l", filepath.Join(p.dir, "log"), "-o", opts, "-w", "-t", "120", "start")
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p.port), time.Second)
		if err == nil {
			_ = c.Close()
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(p.dir, "log"))
	p.t.Fatalf("private postgres did not accept connections within 2 minutes; log tail:\n%s", tail(log, 2000))
}

// Stop stops the server the way a restart does ("fast": every session is terminated,
// open transactions roll back). Stopping a stopped server does nothing.
func (p *Postgres) Stop() {
	p.t.Helper()
	if _, err := os.Stat(filepath.Join(p.data(), "postmaster.pid")); err != nil {
		return
	}
	p.run("pg_ctl", "-D", p.data(), "-m", "fast", "-w", "-t", "120", "stop")
}

func (p *Postgres) run(name string, args ...string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(p.bin, name), args...)
	cmd.Dir = p.dir
	if p.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		p.t.Fatalf("private postgres: %s: %v\n%s", name, err, tail(out, 2000))
	}
}
