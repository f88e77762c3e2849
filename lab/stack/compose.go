package stack

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// The compose lab (compose/docker-compose.yml) runs the same processes as `lab up`, one
// container each, on a network where every container is reached by its service name.
// ComposeEnv is what compose gives each of them; compose's own tests check the file
// against it, and the parity test starts the native binaries with exactly it, so the
// two modes cannot drift apart.

// SecretsDir is where the compose lab's secrets are, in every container that reads one:
// the named volume `secrets`, filled on the first `up` by the one-shot container of
// compose/secrets/generate.sh. Nothing secret is in the repository or in the compose
// file: services read a secret-bearing value through the X_FILE convention of
// services/platform/config (DATABASE_URL_FILE instead of DATABASE_URL).
const SecretsDir = "/run/microlab/secrets"

// ComposeMemLimit is the GOMEMLIMIT of a shop service's container: a soft limit under
// the container's hard one (ComposeMemory), so the garbage collector works harder
// before the kernel kills anything.
const (
	ComposeMemLimit = "48MiB"
	ComposeMemory   = "96m" // deploy.resources.limits.memory of a shop service
)

// ComposeJaegerUI and ComposeGrafana are where the learner's browser finds Jaeger's UI
// and Grafana: compose publishes them on the host's loopback.
const (
	ComposeJaegerUI = "http://localhost:16686"
	ComposeGrafana  = "http://localhost:3000"
)

// secretFile is the path of one secret in the secrets volume.
func secretFile(name string) string { return SecretsDir + "/" + name }

// SecretFiles are the files compose/secrets/generate.sh writes into the secrets volume
// besides the passwords: the URLs that carry them, one per database role.
func ComposeSecretFiles() []string {
	out := []string{"jwt_seed", "monolith_jwt_seed", "amqp_url", "rabbitmq_management_url", "admin_database_url"}
	for _, db := range ComposeDatabases() {
		out = append(out, db+"_database_url")
	}
	return out
}

// ComposeDatabases are the databases (and roles of the same name) of the compose lab:
// compose/postgres/init.sh creates them, plus SharedDB for the shared topology.
func ComposeDatabases() []string { return Config{}.Databases() }

// ComposeEnv is the environment compose gives service s's container: the variables Env
// gives it natively, with addresses by container name, every listener on all
// interfaces of the container (compose publishes only the gateway's and the
// dashboard's, on the host's 127.0.0.1), and every secret-bearing URL read from the
// secrets volume. INSTANCE_ID is not set: each container (each replica under `--scale`)
// is named by its host name.
func ComposeEnv(s Service) (map[string]string, error) {
	env := map[string]string{
		"HTTP_ADDR":                   net.JoinHostPort("0.0.0.0", strconv.Itoa(s.Port)),
		"AMQP_URL_FILE":               secretFile("amqp_url"),
		"LAB_DATABASE_URL_FILE":       secretFile(LabDB + "_database_url"),
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:" + strconv.Itoa(JaegerOTLPHTTPPort),
		"DEPLOYMENT_ENVIRONMENT":      "compose",
		"GOMEMLIMIT":                  ComposeMemLimit,
	}
	if s.Name == Dashboard {
		env["JAEGER_URL"] = "http://jaeger:" + strconv.Itoa(JaegerQueryPort)
		// Links for the learner's browser, which reaches the UIs on the host's loopback;
		// the dashboard probes them from inside (JAEGER_URL's root, GRAFANA_HEALTH_URL)
		// and links only while they answer.
		env["JAEGER_UI_URL"] = ComposeJaegerUI
		env["GRAFANA_URL"] = ComposeGrafana
		env["GRAFANA_HEALTH_URL"] = "http://grafana:3000"
		env["PROMETHEUS_URL"] = "http://prometheus:" + strconv.Itoa(PrometheusPort)
		env["RABBITMQ_MANAGEMENT_URL_FILE"] = secretFile("rabbitmq_management_url")
		env["GOMEMLIMIT"] = DashboardMemLimit
		for k, v := range DashboardLimits {
			env[k] = v
		}
	} else {
		d, ok := Find(Dashboard)
		if !ok {
			return nil, fmt.Errorf("service %s: no dashboard in the topology", s.Name)
		}
		env["DASHBOARD_OTLP_ENDPOINT"] = "http://" + Dashboard + ":" + strconv.Itoa(d.Port)
	}
	if s.DB {
		env["DATABASE_URL_FILE"] = secretFile(s.Name + "_database_url")
	}
	if s.Name == "users" {
		env["JWT_SEED_FILE"] = secretFile("jwt_seed")
	}
	if s.Name == "monolith" {
		// A key of its own, not users': the gateway verifies both issuers (JWKS union).
		env["JWT_SEED_FILE"] = secretFile("monolith_jwt_seed")
	}
	for _, up := range s.Upstreams {
		us, ok := Find(up)
		if !ok {
			return nil, fmt.Errorf("service %s: unknown upstream %s", s.Name, up)
		}
		env[envName(up)+"_URL"] = "http://" + up + ":" + strconv.Itoa(us.Port)
	}
	if s.GRPCPort != 0 {
		env["GRPC_ADDR"] = net.JoinHostPort("0.0.0.0", strconv.Itoa(s.GRPCPort))
	}
	for _, up := range s.GRPCUpstreams {
		us, ok := Find(up)
		if !ok || us.GRPCPort == 0 {
			return nil, fmt.Errorf("service %s: %s is no gRPC upstream", s.Name, up)
		}
		env[envName(up)+"_GRPC_ADDR"] = net.JoinHostPort(up, strconv.Itoa(us.GRPCPort))
	}
	return env, nil
}

// ComposeTopologyEnv is the environment of the compose lab's `topology` job (`lab
// topology`, run by the learner between stopping the services and starting them: the
// db.topology switch that `lab up` does by itself natively). It connects as
// PostgreSQL's superuser (it creates the shared database's tables and copies every
// row) and writes to the secrets volume, where it leaves the topology for the next up.
func ComposeTopologyEnv() map[string]string {
	return map[string]string{
		"ADMIN_DATABASE_URL_FILE": secretFile("admin_database_url"),
		"AMQP_URL_FILE":           secretFile("amqp_url"),
		"LAB_SECRETS_DIR":         SecretsDir,
		"LAB_MIGRATIONS_DIR":      ComposeMigrationsDir,
	}
}

// ComposeMigrationsDir is where the images keep every service's migrations
// (services/<name>/migrations), for `lab topology`: the lab CLI's image has no source
// tree, and the services' migrations are embedded in their own binaries only.
const ComposeMigrationsDir = "/migrations"

// DashboardLimits are the dashboard's bounded stores, given explicitly in compose so a
// learner reading the file sees what the dashboard keeps (the same values as its
// defaults, dashboard/main.go).
var DashboardLimits = map[string]string{
	"MAX_TRACES":      "2000",
	"MAX_TRACE_BYTES": "33554432", // 32 MiB
	"MAX_EVENTS":      "5000",
	"MAX_EVENT_BYTES": "8388608", // 8 MiB
	"MAX_SAGAS":       "1000",
}

// ComposeJaegerConfig is compose/jaeger/config.yaml: the native lab's Jaeger
// configuration (Jaeger.Config) on the standard ports, bound to 0.0.0.0 so the other
// containers reach it.
func ComposeJaegerConfig() string {
	j := Jaeger{Host: "0.0.0.0", OTLPHTTPPort: JaegerOTLPHTTPPort, QueryPort: JaegerQueryPort, QueryGRPCPort: JaegerQueryGRPCPort}
	_, body, _ := strings.Cut(j.Config(), "\n") // its first line says `lab up` wrote it
	return "# The compose lab's Jaeger (compose/docker-compose.yml): lab/stack's native configuration\n" +
		"# (ComposeJaegerConfig) bound to 0.0.0.0. Generated: UPDATE=1 go test ./compose -run TestJaeger\n" + body
}
