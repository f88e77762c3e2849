// Package stack is the one description of the lab's processes: which services exist,
// their ports, databases and the environment each is started with. `lab up`, the
// end-to-end tests and (later) the compose file are all derived from it, so native and
// compose modes cannot drift apart.
package stack

import (
	"fmt"
	"net/url"
	"strconv"
)

// Service is one shop process.
type Service struct {
	Name string // its database/role name, and its directory under services/ unless Dir says otherwise
	Dir  string // the package's directory, relative to the module root ("" = services/<Name>)
	Port int    // native HTTP port
	DB   bool   // owns a database
	// Upstreams are the services it calls over HTTP: it gets <NAME>_URL for each.
	Upstreams []string
	// GRPCPort is the native port of its gRPC server (GRPC_ADDR), 0 for none. It is
	// the HTTP port + GRPCPortShift, so instance n's is shifted by 1000·(n-1) like its
	// HTTP port and no two ports of the lab meet.
	GRPCPort int
	// GRPCUpstreams are the services it calls over gRPC: it gets <NAME>_GRPC_ADDR for each.
	GRPCUpstreams []string
}

// GRPCPortShift is a gRPC server's port minus its service's HTTP port (catalog: 8102 →
// 8202). The services' HTTP ports are 8000, 8080 and 8101–8108 (each +1000 per scaled
// instance), so +100 lands on 8202+1000·k, which no HTTP port, no other gRPC port and no
// observability port (4318, 9090, 16685, 16686) can be.
const GRPCPortShift = 100

// Services in start order (dependencies first; the gateway last).
var Services = []Service{
	// The dashboard first: its OTLP receiver and its wiretap are up before the first
	// span or message of the shop, so a learner's first checkout is on screen.
	// It calls the gateway (its Shop view, traffic, exercises), payments' ledger API
	// (exercises' ledger checks) and catalog's price API (exercises' price actions).
	{Name: "dashboard", Port: 8080, Dir: "dashboard", Upstreams: []string{"gateway", "payments", "catalog", "orders"}},
	{Name: "users", Port: 8101, DB: true},
	{Name: "catalog", Port: 8102, DB: true, GRPCPort: 8102 + GRPCPortShift},
	// notifications: notifications.mode=sync; catalog over gRPC: catalog.transport=grpc.
	{Name: "orders", Port: 8103, DB: true, Upstreams: []string{"catalog", "notifications"}, GRPCUpstreams: []string{"catalog"}},
	{Name: "payments", Port: 8104, DB: true},
	{Name: "inventory", Port: 8105, DB: true},
	{Name: "shipping", Port: 8106, DB: true},
	{Name: "notifications", Port: 8107, DB: true},
	// The whole shop again, in one process and one database (services/monolith): the
	// gateway routes to it the families strangler.routes names (exercise 21). Always one
	// instance, always running: it is small, and moving a route must not wait for a start.
	{Name: "monolith", Port: 8108, DB: true},
	{Name: "gateway", Port: 8000, Upstreams: []string{"users", "catalog", "orders", "monolith"}},
}

// Dashboard is the dashboard's name in Services.
const Dashboard = "dashboard"

// Package is the service's package path relative to the module root ("./services/orders").
func (s Service) Package() string {
	if s.Dir != "" {
		return "./" + s.Dir
	}
	return "./services/" + s.Name
}

// DashboardMemLimit is the dashboard's soft memory limit (GOMEMLIMIT): its stores hold
// up to 40 MiB (MAX_TRACE_BYTES, MAX_EVENT_BYTES), and without a limit the garbage
// collector lets the heap grow to twice what is live before it collects. At 96MiB lab
// bench found it at 108 MiB PSS after the soak (the limit bounds the heap, not the
// binary and the runtime around it).
const DashboardMemLimit = "80MiB"

// LabDB is the control plane's database (settings), owned by the dashboard.
const LabDB = "lab"

// Config is what differs between one running lab and another: addresses of the
// infrastructure, a prefix for database names (tests), and a port offset (tests).
type Config struct {
	AdminDatabaseURL string // superuser URL used to provision databases and roles
	AMQPURL          string
	DBPrefix         string // "" natively; a unique prefix per test run
	PortOffset       int    // 0 natively; a unique offset per test run
	Host             string // bind host, 127.0.0.1 natively
	// Topology is where the services' data lives: TopologyPerService ("" too) or
	// TopologyShared (database shop, a schema per service; see topology.go).
	Topology string
	// RabbitMetricsAddr is RabbitMQ's Prometheus endpoint, host:port, which the lab's
	// Prometheus scrapes ("": RabbitMQMetricsAddr).
	RabbitMetricsAddr string
	// Password, if not nil, is each role's password: the compose lab's are random, in
	// its secrets volume. nil: the role's name, the native lab's development password.
	Password func(role string) (string, error)
	// Extra is appended to every service's environment (e.g. TRACES_SAMPLER_RATIO=0 for
	// a benchmark run without tracing); it wins over the defaults above.
	Extra []string
}

// Find returns the service called name.
func Find(name string) (Service, bool) {
	for _, s := range Services {
		if s.Name == name {
			return s, true
		}
	}
	return Service{}, false
}

// DBName is the database (and role) name of a service in this lab.
func (c Config) DBName(service string) string { return c.DBPrefix + service }

// Addr is the host:port a service listens on.
func (c Config) Addr(s Service) string {
	return c.Host + ":" + strconv.Itoa(s.Port+c.PortOffset)
}

// GRPCAddr is the host:port a service's gRPC server listens on ("" for none).
func (c Config) GRPCAddr(s Service) string {
	if s.GRPCPort == 0 {
		return ""
	}
	return c.Host + ":" + strconv.Itoa(s.GRPCPort+c.PortOffset)
}

// URL is the base URL of a service.
func (c Config) URL(s Service) string { return "http://" + c.Addr(s) }

// DatabaseURL is the URL a service connects to its own database with, as its own role.
func (c Config) DatabaseURL(db string) (string, error) {
	u, err := url.Parse(c.AdminDatabaseURL)
	if err != nil {
		return "", fmt.Errorf("parse admin database url: %w", err)
	}
	pw, err := c.password(db)
	if err != nil {
		return "", err
	}
	u.User = url.UserPassword(db, pw)
	u.Path = "/" + db
	return u.String(), nil
}

// password is role's password: Password's, or natively the role's name.
func (c Config) password(role string) (string, error) {
	if c.Password == nil {
		return role, nil // the native lab's development password: the role's name
	}
	pw, err := c.Password(role)
	if err != nil {
		return "", fmt.Errorf("password of %s: %w", role, err)
	}
	return pw, nil
}

// Env is the environment a service process is started with. Spans go to the lab's
// Jaeger (OTLPEndpoint), whether or not one runs: without one they are dropped.
func (c Config) Env(s Service, instance string) ([]string, error) {
	env := []string{
		"HTTP_ADDR=" + c.Addr(s),
		"AMQP_URL=" + c.AMQPURL,
		"INSTANCE_ID=" + instance,
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + c.OTLPEndpoint(),
		"DEPLOYMENT_ENVIRONMENT=native",
	}
	if s.Name == Dashboard {
		// Jaeger's API only: no JAEGER_UI_URL (this Jaeger has no UI) and no GRAFANA_URL
		// (there is no Grafana natively), so the dashboard says so instead of linking.
		env = append(env, "JAEGER_URL="+c.JaegerURL(), "PROMETHEUS_URL="+c.PrometheusURL(),
			"GOMEMLIMIT="+DashboardMemLimit)
	} else if d, ok := Find(Dashboard); ok {
		// The second exporter: every span also goes to the dashboard's receiver.
		env = append(env, "DASHBOARD_OTLP_ENDPOINT="+c.URL(d))
	}
	lab, err := c.DatabaseURL(c.DBName(LabDB))
	if err != nil {
		return nil, err
	}
	env = append(env, "LAB_DATABASE_URL="+lab)
	if s.DB {
		u, err := c.ServiceDatabaseURL(s.Name)
		if err != nil {
			return nil, err
		}
		env = append(env, "DATABASE_URL="+u)
	}
	for _, up := range s.Upstreams {
		us, ok := Find(up)
		if !ok {
			return nil, fmt.Errorf("service %s: unknown upstream %s", s.Name, up)
		}
		env = append(env, envName(up)+"_URL="+c.URL(us))
	}
	if a := c.GRPCAddr(s); a != "" {
		env = append(env, "GRPC_ADDR="+a)
	}
	for _, up := range s.GRPCUpstreams {
		us, ok := Find(up)
		if !ok || us.GRPCPort == 0 {
			return nil, fmt.Errorf("service %s: %s is no gRPC upstream", s.Name, up)
		}
		env = append(env, envName(up)+"_GRPC_ADDR="+c.GRPCAddr(us))
	}
	return append(env, c.Extra...), nil
}

func envName(s string) string {
	b := []byte(s)
	for i, r := range b {
		if r >= 'a' && r <= 'z' {
			b[i] = r - 'a' + 'A'
		}
	}
	return string(b)
}
