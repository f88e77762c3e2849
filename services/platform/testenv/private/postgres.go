package private

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"
)

// Postgres is a PostgreSQL cluster of one's own. Its data directory survives Stop and
// Start, like a real restart's.
type Postgres struct {
	bin  string
	dir  string
	port int
	cred *syscall.Credential
}

// NewPostgres initialises a new cluster in a directory under os.TempDir (trust auth,
// loopback only; fsync off: what is tested is availability, not durability across a
// power loss) on a free port, without starting it. Remove deletes the directory. It needs
// initdb and pg_ctl (in /usr/lib/postgresql/*/bin or on PATH); as root, the cluster is
// run as the postgres user, since PostgreSQL refuses to run as root.
func NewPostgres(ctx context.Context) (*Postgres, error) {
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	if len(bins) == 0 {
		if p, err := exec.LookPath("pg_ctl"); err == nil {
			bins = []string{p}
		}
	}
	if len(bins) == 0 {
		return nil, fmt.Errorf("private postgres: no pg_ctl in /usr/lib/postgresql/*/bin or on PATH (install: apt-get install postgresql)")
	}
	slices.Sort(bins)
	port, err := freePort()
	if err != nil {
		return nil, fmt.Errorf("private postgres: %w", err)
	}
	p := &Postgres{bin: filepath.Dir(bins[len(bins)-1]), port: port}
	if p.dir, err = os.MkdirTemp("", "microlab-pg-"); err != nil {
		return nil, fmt.Errorf("private postgres: %w", err)
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			_ = p.Remove()
			return nil, fmt.Errorf("private postgres: running as root and there is no postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(p.dir, uid, gid); err != nil {
			_ = p.Remove()
			return nil, fmt.Errorf("private postgres: %w", err)
		}
	}
	if err := p.run(ctx, "initdb", "-D", p.data(), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"); err != nil {
		_ = p.Remove()
		return nil, err
	}
	return p, nil
}

// AdminURL is the superuser URL of the cluster.
func (p *Postgres) AdminURL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.port)
}

// Dir is the cluster's directory: data and log.
func (p *Postgres) Dir() string { return p.dir }

func (p *Postgres) data() string { return filepath.Join(p.dir, "data") }

// Start starts the server and waits (at most two minutes, and while ctx lasts) until it
// accepts connections.
func (p *Postgres) Start(ctx context.Context) error {
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off -c full_page_writes=off -c synchronous_commit=off",
		p.port, p.dir)
	if err := p.run(ctx, "pg_ctl", "-D", p.data(), "-l", filepath.Join(p.dir, "log"), "-o", opts, "-w", "-t", "120", "start"); err != nil {
		return err
	}
	deadline := time.Now().Add(2 * time.Minute)
	for !answers(p.port, time.Second) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			log, _ := os.ReadFile(filepath.Join(p.dir, "log"))
			return fmt.Errorf("private postgres did not accept connections within 2 minutes (%v); log tail:\n%s", ctx.Err(), tail(log, 2000))
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

// Stop stops the server the way a restart does ("fast": every session is terminated,
// open transactions roll back). Stopping a stopped server does nothing.
func (p *Postgres) Stop(ctx context.Context) error {
	if _, err := os.Stat(filepath.Join(p.data(), "postmaster.pid")); err != nil {
		return nil
	}
	return p.run(ctx, "pg_ctl", "-D", p.data(), "-m", "fast", "-w", "-t", "120", "stop")
}

// Remove deletes the cluster's directory. Stop it first.
func (p *Postgres) Remove() error { return os.RemoveAll(p.dir) }

func (p *Postgres) run(ctx context.Context, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(p.bin, name), args...)
	cmd.Dir = p.dir
	if p.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("private postgres: %s: %w\n%s", name, err, tail(out, 2000))
	}
	return nil
}
