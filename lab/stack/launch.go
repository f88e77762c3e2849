package stack

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"microlab/lab/supervisor"
	"microlab/services/platform/pg"
)

// Databases lists the databases (each with a role of the same name) this lab needs:
// one per service that owns one, and the lab's control database.
func (c Config) Databases() []string {
	var out []string
	for _, s := range Services {
		if s.DB {
			out = append(out, c.DBName(s.Name))
		}
	}
	return append(out, c.DBName(LabDB))
}

// Provision creates (idempotently) every database and role of this lab, each role's
// password being its name, as DatabaseURL expects.
func Provision(ctx context.Context, cfg Config) error {
	for _, db := range cfg.Databases() {
		if err := pg.Provision(ctx, cfg.AdminDatabaseURL, db, db); err != nil {
			return err // pg.Provision names the database already
		}
	}
	return nil
}

// MaxScale bounds --scale: instance i listens on Port+1000*(i-1), and ten would reach
// into other services' ranges.
const MaxScale = 9

// Instance is one process of a service.
type Instance struct {
	Service  Service
	ID       string // "<service>-<n>", n from 1: the process's INSTANCE_ID
	Addr     string // host:port it serves HTTP on
	GRPCAddr string // host:port it serves gRPC on ("" for none): its HTTP port + GRPCPortShift
	Version  string // its VERSION ("": the default, v1); CatalogV2's is v2
}

// CatalogV2 is the scale key of catalog's second version (deploy.catalog.v2): 1 runs
// one instance of catalog with VERSION=v2, catalog-v2-1, beside catalog's v1 instances;
// 0 or absent runs none. It has a port of its own, catalog's + CanaryPortShift (8152
// natively, gRPC 8252), clear of every service's instances however far they scale.
const CatalogV2 = "catalog-v2"

// CanaryPortShift is catalog-v2-1's port minus catalog-1's.
const CanaryPortShift = 50

// URL is the instance's base URL.
func (i Instance) URL() string { return "http://" + i.Addr }

// Instances lists every process of this lab in start order: one instance per service,
// or scale[name] of them. Instance 1 listens on the service's usual port; instance n>1 on
// that port + 1000*(n-1) (payments-2 on 9104 natively), so every instance's own API and
// metrics stay reachable.
func (c Config) Instances(scale map[string]int) ([]Instance, error) {
	for name, n := range scale {
		if name == CatalogV2 {
			if n < 0 || n > 1 {
				return nil, fmt.Errorf("scale: %s=%d: want 0 or 1 (deploy.catalog.v2 runs one instance of v2)", name, n)
			}
			continue
		}
		if _, ok := Find(name); !ok {
			return nil, fmt.Errorf("scale: unknown service %q (services: %s)", name, strings.Join(Names(), ", "))
		}
		if n < 1 || n > MaxScale {
			return nil, fmt.Errorf("scale: %s=%d: want 1 to %d instances", name, n, MaxScale)
		}
		if name == Dashboard && n != 1 {
			return nil, fmt.Errorf("scale: the dashboard runs once (it holds the browsers' connections and the lab's view)")
		}
	}
	var out []Instance
	for _, s := range Services {
		n := max(scale[s.Name], 1)
		for i := 1; i <= n; i++ {
			port := s.Port + c.PortOffset + 1000*(i-1)
			in := Instance{Service: s, ID: s.Name + "-" + strconv.Itoa(i), Addr: c.Host + ":" + strconv.Itoa(port)}
			if s.GRPCPort != 0 {
				in.GRPCAddr = c.Host + ":" + strconv.Itoa(s.GRPCPort+c.PortOffset+1000*(i-1))
			}
			out = append(out, in)
		}
		if s.Name == "catalog" && scale[CatalogV2] == 1 {
			port := s.Port + c.PortOffset + CanaryPortShift
			out = append(out, Instance{Service: s, ID: CatalogV2 + "-1", Version: "v2",
				Addr:     c.Host + ":" + strconv.Itoa(port),
				GRPCAddr: c.Host + ":" + strconv.Itoa(port+GRPCPortShift)})
		}
	}
	return out, nil
}

// Names lists the services' names in start order.
func Names() []string {
	out := make([]string, len(Services))
	for i, s := range Services {
		out[i] = s.Name
	}
	return out
}

// Launch starts every instance (see Instances) from the binaries in binDir (as Build
// leaves them) under sup, then waits, bounded by ctx, until all answer /readyz. The
// services start together: each waits for its own dependencies (database, broker) by
// itself. On failure the processes already started are left to the caller, who owns sup
// (and stops it with StopAll).
func Launch(ctx context.Context, cfg Config, sup *supervisor.Supervisor, binDir string, scale map[string]int) error {
	insts, err := cfg.Instances(scale)
	if err != nil {
		return fmt.Errorf("launch: %w", err)
	}
	ids := make([]string, 0, len(insts))
	for _, in := range insts {
		p, err := cfg.Proc(in, binDir)
		if err != nil {
			return fmt.Errorf("launch %s: %w", in.ID, err)
		}
		if err := sup.Start(ctx, p); err != nil {
			return fmt.Errorf("launch: %w", err)
		}
		ids = append(ids, in.ID)
	}
	if err := sup.WaitHealthy(ctx, ids...); err != nil {
		return fmt.Errorf("launch: %w", err)
	}
	return nil
}

// Proc is the process of one instance, from the binaries in binDir: the service's
// environment (Env) listening on the instance's address, healthy when /readyz answers.
// Launch starts every instance so; lab up's scale follower (lab/scaling) one more.
func (c Config) Proc(in Instance, binDir string) (supervisor.Proc, error) {
	env, err := c.Env(in.Service, in.ID)
	if err != nil {
		return supervisor.Proc{}, err
	}
	if in.GRPCAddr != "" {
		env = setEnv(env, "GRPC_ADDR", in.GRPCAddr)
	}
	if in.Version != "" {
		env = setEnv(env, "VERSION", in.Version)
	}
	return supervisor.Proc{
		Name:      in.Service.Name,
		Instance:  in.ID,
		Path:      filepath.Join(binDir, in.Service.Name),
		Env:       setEnv(env, "HTTP_ADDR", in.Addr),
		HealthURL: in.URL() + "/readyz",
	}, nil
}

// setEnv sets key=value in env, replacing an existing entry.
func setEnv(env []string, key, value string) []string {
	env = slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return strings.HasPrefix(kv, key+"=") })
	return append(env, key+"="+value)
}

// FreeOffset finds a PortOffset at which every instance's port (for this scale) and the
// lab's Jaeger and Prometheus ports are free right now, so several labs (parallel tests)
// run side by side. Offsets are chosen so that ports land below 32000, under Linux's
// ephemeral range, where outgoing connections would otherwise take them (the services'
// in 10000–32000). The ports are claimed for the life of the process (claims.go),
// so that the labs the tests start, which claim theirs, never choose them meanwhile.
func FreeOffset(scale map[string]int) (int, error) {
	return ClaimOffset(scale, claimForProcess)
}

// ClaimOffset is FreeOffset for labs that must also keep their ports from each other
// while they run: claim (nil: none) is asked for an offset's ports once they are free,
// and an offset it refuses is passed over. Tests claim through testenv.ClaimPorts.
func ClaimOffset(scale map[string]int, claim func(ports []int) bool) (int, error) {
	inst, err := Config{Host: "127.0.0.1"}.Instances(scale)
	if err != nil {
		return 0, err
	}
	ports := slices.Clone(observabilityPorts)
	hi := slices.Max(ports)
	for _, i := range inst {
		for _, addr := range []string{i.Addr, i.GRPCAddr} {
			if addr == "" {
				continue
			}
			_, p, _ := net.SplitHostPort(addr)
			n, _ := strconv.Atoi(p)
			ports = append(ports, n)
			hi = max(hi, n)
		}
	}
	for range 200 {
		off := 2000 + rand.IntN(32000-hi-2000)
		free := true
		for _, p := range ports {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+off))
			if err != nil {
				free = false
				break
			}
			_ = ln.Close()
		}
		if free && claim != nil {
			shifted := make([]int, len(ports))
			for i, p := range ports {
				shifted[i] = p + off
			}
			free = claim(shifted)
		}
		if free {
			return off, nil
		}
	}
	return 0, errors.New("no port offset with every instance port free")
}
