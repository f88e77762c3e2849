// Package compose_test checks the compose lab without a Docker engine: the compose file
// is loaded the way `docker compose` loads it (compose-go, with its schema and
// consistency checks) and held against lab/stack, the one description of the lab's
// processes; the Dockerfile is parsed with BuildKit's parser and its build command run
// natively (dockerfile_test.go); the secrets and PostgreSQL scripts run natively; the
// parity test (parity_test.go) starts the native binaries with compose's environment;
// and the Kubernetes manifests are built and decoded into typed objects (k8s_test.go).
package compose_test

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"gopkg.in/yaml.v3"

	"microlab/lab/stack"
)

// load reads compose/docker-compose.yml with compose/.env, every profile on, with no
// variable from this process's environment: what a learner's `docker compose` sees.
func load(t *testing.T) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{"docker-compose.yml"},
		cli.WithWorkingDirectory("."),
		cli.WithEnvFiles(), // compose/.env, as `docker compose` finds it next to the file
		cli.WithDotEnv,
		cli.WithProfiles([]string{"*"}),
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("compose-go refuses compose/docker-compose.yml: %v", err)
	}
	return p
}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, ok := p.Services[name]
	if !ok {
		t.Fatalf("compose has no service %q", name)
	}
	return s
}

// oneShots are the containers that run to completion; they have no healthcheck (there
// is nothing to be healthy) and compose does not restart them.
var oneShots = map[string]bool{"secrets": true, "load": true, "topology": true}

// infrastructure is what the shop runs on, besides lab/stack's processes.
var infrastructure = []string{"postgres", "rabbitmq", "jaeger", "prometheus", "grafana"}

func TestEveryProcessOfTheTopologyIsThereAsStackSaysIt(t *testing.T) {
	p := load(t)
	repo, _ := filepath.Abs("..")
	for _, s := range stack.Services {
		c := service(t, p, s.Name)
		if c.Build == nil || c.Build.Context != repo || c.Build.Dockerfile != "compose/Dockerfile" {
			t.Errorf("%s: want build from the repository with compose/Dockerfile, got %+v", s.Name, c.Build)
		} else if pkg := c.Build.Args["PACKAGE"]; pkg == nil || *pkg != s.Package() {
			t.Errorf("%s: build arg PACKAGE = %v, want %s", s.Name, pkg, s.Package())
		}
		want, err := stack.ComposeEnv(s)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for k, v := range c.Environment {
			if v == nil {
				t.Errorf("%s: %s has no value", s.Name, k)
				continue
			}
			got[k] = *v
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: %s = %q, want %q (lab/stack ComposeEnv)", s.Name, k, got[k], v)
			}
		}
		for k := range got {
			if _, ok := want[k]; !ok {
				t.Errorf("%s: %s is not in lab/stack ComposeEnv: add it there (one source of truth)", s.Name, k)
			}
		}
		probe := []string{"CMD", "/probe", "http://127.0.0.1:" + strconv.Itoa(s.Port) + "/readyz"}
		if c.HealthCheck == nil || !slices.Equal(c.HealthCheck.Test, probe) {
			t.Errorf("%s: healthcheck %v, want %v", s.Name, c.HealthCheck, probe)
		}
		for dep, cond := range map[string]string{"secrets": types.ServiceConditionCompletedSuccessfully,
			"postgres": types.ServiceConditionHealthy, "rabbitmq": types.ServiceConditionHealthy} {
			if d, ok := c.DependsOn[dep]; !ok || d.Condition != cond {
				t.Errorf("%s: depends_on %s = %+v, want condition %s", s.Name, dep, d, cond)
			}
		}
		// The dashboard migrates the lab database every service reads its settings
		// from at start, and its receiver should hear a service's first span.
		if s.Name != stack.Dashboard {
			if d := c.DependsOn[stack.Dashboard]; d.Condition != types.ServiceConditionHealthy {
				t.Errorf("%s: want depends_on dashboard: service_healthy, got %+v", s.Name, d)
			}
		}
		if c.Restart != types.RestartPolicyUnlessStopped {
			t.Errorf("%s: restart %q, want unless-stopped (the crash fault relies on it)", s.Name, c.Restart)
		}
		if !slices.ContainsFunc(c.Volumes, func(v types.ServiceVolumeConfig) bool {
			return v.Source == "secrets" && v.Target == stack.SecretsDir && v.ReadOnly
		}) {
			t.Errorf("%s: does not mount the secrets volume read-only at %s", s.Name, stack.SecretsDir)
		}
	}
	for _, name := range infrastructure {
		service(t, p, name)
	}
	// The compose lab's db.topology switch: the lab CLI with lab/stack's environment
	// for it, writing to the secrets volume.
	topo := service(t, p, "topology")
	if topo.Build == nil || topo.Build.Args["PACKAGE"] == nil || *topo.Build.Args["PACKAGE"] != "./lab" ||
		!slices.Equal(topo.Entrypoint, []string{"/app", "topology"}) {
		t.Errorf("topology: want the lab CLI's image running `lab topology`, got build %+v entrypoint %v", topo.Build, topo.Entrypoint)
	}
	want := stack.ComposeTopologyEnv()
	if len(topo.Environment) != len(want) {
		t.Errorf("topology: environment %v, want %v", topo.Environment, want)
	}
	for k, v := range want {
		if got := topo.Environment[k]; got == nil || *got != v {
			t.Errorf("topology: %s = %v, want %s (lab/stack ComposeTopologyEnv)", k, got, v)
		}
	}
	if !slices.ContainsFunc(topo.Volumes, func(v types.ServiceVolumeConfig) bool {
		return v.Source == "secrets" && v.Target == stack.SecretsDir && !v.ReadOnly
	}) {
		t.Errorf("topology: does not mount the secrets volume writable (it leaves the topology there)")
	}
	if n := len(stack.Services) + len(infrastructure) + len(oneShots); len(p.Services) != n {
		t.Errorf("compose has %d services, want %d: %v", len(p.Services), n, p.ServiceNames())
	}
}

func TestEveryContainerIsBoundedAndWatched(t *testing.T) {
	p := load(t)
	for name, c := range p.Services {
		if c.Deploy == nil || c.Deploy.Resources.Limits == nil || c.Deploy.Resources.Limits.MemoryBytes <= 0 {
			t.Errorf("%s: no memory limit (deploy.resources.limits.memory)", name)
		}
		if oneShots[name] {
			if c.Restart != "no" {
				t.Errorf("%s: a one-shot container must not be restarted (restart %q)", name, c.Restart)
			}
			continue
		}
		if c.HealthCheck == nil || c.HealthCheck.Disable || len(c.HealthCheck.Test) == 0 {
			t.Errorf("%s: no healthcheck", name)
		}
		if c.Restart != types.RestartPolicyUnlessStopped {
			t.Errorf("%s: restart %q, want unless-stopped", name, c.Restart)
		}
	}
	// Go processes run under a soft memory limit below their container's.
	for _, s := range stack.Services {
		c := service(t, p, s.Name)
		soft := c.Environment["GOMEMLIMIT"]
		if soft == nil {
			t.Errorf("%s: no GOMEMLIMIT", s.Name)
			continue
		}
		mib, err := strconv.ParseInt(strings.TrimSuffix(*soft, "MiB"), 10, 64)
		if err != nil || mib<<20 >= int64(c.Deploy.Resources.Limits.MemoryBytes) {
			t.Errorf("%s: GOMEMLIMIT %s must be below the container's limit %d bytes", s.Name, *soft, c.Deploy.Resources.Limits.MemoryBytes)
		}
	}
}

func TestDependsOnHasNoCycleAndWaitsOnHealth(t *testing.T) {
	p := load(t)
	// Kahn's algorithm: every service must be startable after its dependencies.
	indeg := map[string]int{}
	for name, c := range p.Services {
		indeg[name] += 0
		for dep, d := range c.DependsOn {
			if _, ok := p.Services[dep]; !ok {
				t.Errorf("%s depends on %s, which does not exist", name, dep)
			}
			indeg[name]++
			dc := p.Services[dep]
			switch {
			case oneShots[dep] && d.Condition != types.ServiceConditionCompletedSuccessfully:
				t.Errorf("%s: waits for one-shot %s with %s, want service_completed_successfully", name, dep, d.Condition)
			case !oneShots[dep] && dep != "jaeger" && d.Condition != types.ServiceConditionHealthy:
				t.Errorf("%s: waits for %s with %s, want service_healthy", name, dep, d.Condition)
			case d.Condition == types.ServiceConditionHealthy && dc.HealthCheck == nil:
				t.Errorf("%s: waits for %s to be healthy, which has no healthcheck", name, dep)
			}
		}
	}
	var order []string
	for len(indeg) > 0 {
		var ready []string
		for n, d := range indeg {
			if d == 0 {
				ready = append(ready, n)
			}
		}
		if len(ready) == 0 {
			t.Fatalf("depends_on has a cycle among %v", indeg)
		}
		sort.Strings(ready)
		for _, n := range ready {
			delete(indeg, n)
			order = append(order, n)
			for other, c := range p.Services {
				if _, ok := c.DependsOn[n]; ok {
					indeg[other]--
				}
			}
		}
	}
	t.Logf("start order: %v", order)
}

func TestPortsArePublishedOnLoopbackOnly(t *testing.T) {
	p := load(t)
	published := map[string]bool{}
	for name, c := range p.Services {
		for _, port := range c.Ports {
			if port.HostIP != "127.0.0.1" {
				t.Errorf("%s: port %d published on %q, want 127.0.0.1 only", name, port.Target, port.HostIP)
			}
			published[port.Published] = true
		}
		if len(c.Ports) > 0 && c.Build != nil && name != stack.Dashboard && name != "gateway" {
			t.Errorf("%s: a shop service publishes no port (it could not be scaled out)", name)
		}
	}
	// What a learner opens: the dashboard, the shop's API, and the UIs.
	for _, port := range []string{"8080", "8000", "16686", "3000", "9090", "15672"} {
		if !published[port] {
			t.Errorf("port %s is not published", port)
		}
	}
}

// pinned is an exact release: x.y.z, or PostgreSQL's x.y (its minor releases are
// x.y), with an optional variant (-management, -bookworm).
var pinned = regexp.MustCompile(`^[a-z0-9./-]+:v?[0-9]+\.[0-9]+(\.[0-9]+)?(-[a-z0-9.]+)?$`)

func TestThePinRule(t *testing.T) {
	for image, want := range map[string]bool{
		"postgres:17.6-bookworm": true, "rabbitmq:4.1.4-management": true, "prom/prometheus:v3.5.0": true,
		"postgres": false, "postgres:latest": false, "rabbitmq:4-management": false, "grafana/grafana:main": false,
		"jaegertracing/jaeger:2": false,
	} {
		if pinned.MatchString(image) != want {
			t.Errorf("pinned(%q) = %v, want %v", image, !want, want)
		}
	}
}

func TestImagesAreBuiltHereOrPinned(t *testing.T) {
	p := load(t)
	for name, c := range p.Services {
		switch {
		case c.Build != nil:
			if c.Build.Dockerfile != "compose/Dockerfile" {
				t.Errorf("%s: built from %s, want the one compose/Dockerfile", name, c.Build.Dockerfile)
			}
		case !pinned.MatchString(c.Image):
			t.Errorf("%s: image %q is not pinned to an exact version", name, c.Image)
		}
	}
	// Jaeger's image is the version `lab up` builds from tools/go.mod: Jaeger v2.N is
	// released with the module version v1.(63+N).
	mod, err := os.ReadFile("../tools/go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`github.com/jaegertracing/jaeger v1\.(\d+)\.(\d+)`).FindSubmatch(mod)
	if m == nil {
		t.Fatal("tools/go.mod pins no jaeger")
	}
	minor, _ := strconv.Atoi(string(m[1]))
	want := "jaegertracing/jaeger:2." + strconv.Itoa(minor-63) + "." + string(m[2])
	if got := service(t, p, "jaeger").Image; got != want {
		t.Errorf("jaeger image %s, want %s (the version tools/go.mod pins)", got, want)
	}
}

// bind returns the host path mounted at target in service c.
func bind(t *testing.T, name string, c types.ServiceConfig, target string) string {
	t.Helper()
	for _, v := range c.Volumes {
		if v.Target == target {
			if v.Type != types.VolumeTypeBind {
				t.Fatalf("%s: %s is a %s, want a bind mount", name, target, v.Type)
			}
			if !v.ReadOnly {
				t.Errorf("%s: %s is mounted writable", name, target)
			}
			return v.Source
		}
	}
	t.Fatalf("%s mounts nothing at %s", name, target)
	return ""
}

func repoPath(t *testing.T, rel string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", rel))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRabbitMQHasBothPlugins(t *testing.T) {
	p := load(t)
	src := bind(t, "rabbitmq", service(t, p, "rabbitmq"), "/etc/rabbitmq/enabled_plugins")
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	// An Erlang term: [rabbitmq_management,rabbitmq_prometheus].
	list := strings.TrimSpace(string(b))
	if !strings.HasPrefix(list, "[") || !strings.HasSuffix(list, "].") {
		t.Fatalf("%s is not an Erlang list: %q", src, list)
	}
	var plugins []string
	for _, p := range strings.Split(strings.Trim(list, "[]."), ",") {
		plugins = append(plugins, strings.TrimSpace(p))
	}
	for _, want := range []string{"rabbitmq_management", "rabbitmq_prometheus"} {
		if !slices.Contains(plugins, want) {
			t.Errorf("%s lists %v: %s is missing (the mounted file replaces the image's list)", src, plugins, want)
		}
	}
}

func TestPrometheusRunsTheCheckedConfig(t *testing.T) {
	p := load(t)
	prom := service(t, p, "prometheus")
	if got, want := bind(t, "prometheus", prom, "/etc/prometheus/prometheus.yml"), repoPath(t, "observability/prometheus/prometheus.compose.yml"); got != want {
		t.Errorf("prometheus runs %s, want %s (the config promtool checks)", got, want)
	}
	if got, want := bind(t, "prometheus", prom, "/etc/prometheus/rules"), repoPath(t, "observability/prometheus/rules"); got != want {
		t.Errorf("prometheus' rules are %s, want %s", got, want)
	}
	checked, err := os.ReadFile("../observability/prometheus/promtool_test.go")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(checked), "prometheus.compose.yml") {
		t.Error("observability/prometheus/promtool_test.go does not check prometheus.compose.yml")
	}
	// Its jobs are the lab's processes and RabbitMQ, by the names the native lab uses,
	// so the rules and the dashboards work in both.
	var cfg struct {
		ScrapeConfigs []struct {
			JobName      string `yaml:"job_name"`
			DNSSDConfigs []struct {
				Names []string `yaml:"names"`
				Port  int      `yaml:"port"`
			} `yaml:"dns_sd_configs"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	b, err := os.ReadFile("../observability/prometheus/prometheus.compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	jobs := map[string]string{}
	for _, sc := range cfg.ScrapeConfigs {
		for _, d := range sc.DNSSDConfigs {
			for _, n := range d.Names {
				jobs[sc.JobName] = n + ":" + strconv.Itoa(d.Port)
			}
		}
		for _, s := range sc.StaticConfigs {
			for _, tg := range s.Targets {
				jobs[sc.JobName] = tg
			}
		}
	}
	for _, s := range stack.Services {
		if want := s.Name + ":" + strconv.Itoa(s.Port); jobs[s.Name] != want {
			t.Errorf("prometheus job %s scrapes %q, want %s", s.Name, jobs[s.Name], want)
		}
	}
	if jobs["rabbitmq"] != "rabbitmq:15692" {
		t.Errorf("prometheus job rabbitmq scrapes %q, want rabbitmq:15692", jobs["rabbitmq"])
	}
	if len(jobs) != len(stack.Services)+1 {
		t.Errorf("prometheus has jobs %v, want one per process and rabbitmq", jobs)
	}
}

func TestGrafanaIsProvisionedWithTheTestedDashboards(t *testing.T) {
	p := load(t)
	g := service(t, p, "grafana")
	if got, want := bind(t, "grafana", g, "/etc/grafana/provisioning"), repoPath(t, "observability/grafana/provisioning"); got != want {
		t.Errorf("grafana provisioning from %s, want %s", got, want)
	}
	dashboards := bind(t, "grafana", g, "/var/lib/grafana/dashboards")
	if want := repoPath(t, "observability/grafana/dashboards"); dashboards != want {
		t.Errorf("grafana dashboards from %s, want %s (the ones whose queries are tested)", dashboards, want)
	}
	var prov struct {
		Providers []struct {
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	b, err := os.ReadFile("../observability/grafana/provisioning/dashboards/dashboards.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &prov); err != nil {
		t.Fatal(err)
	}
	if len(prov.Providers) != 1 || prov.Providers[0].Options.Path != "/var/lib/grafana/dashboards" {
		t.Errorf("the dashboard provider reads %+v, want the mounted /var/lib/grafana/dashboards", prov.Providers)
	}
	files, _ := filepath.Glob(filepath.Join(dashboards, "*.json"))
	if len(files) == 0 {
		t.Errorf("no dashboards in %s", dashboards)
	}
	for k, want := range map[string]string{"GF_AUTH_ANONYMOUS_ENABLED": "true", "GF_AUTH_ANONYMOUS_ORG_ROLE": "Viewer", "GF_AUTH_DISABLE_LOGIN_FORM": "true"} {
		if v := g.Environment[k]; v == nil || *v != want {
			t.Errorf("grafana: %s = %v, want %s (no login wall)", k, v, want)
		}
	}
	if home := g.Environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]; home != nil {
		if _, err := os.Stat(filepath.Join(dashboards, filepath.Base(*home))); err != nil {
			t.Errorf("grafana's home dashboard %s does not exist: %v", *home, err)
		}
	}
}

func TestNoSecretIsInTheComposeFile(t *testing.T) {
	p := load(t)
	devSeed := "6d6963726f6c61622d6465762d6a77742d736565642d6e6f742d736563726574" // services/users/main.go
	for name, c := range p.Services {
		for k, v := range c.Environment {
			if v == nil {
				continue
			}
			if k == "JWT_SEED" || strings.Contains(*v, devSeed) {
				t.Errorf("%s: %s gives the JWT seed in the compose file: read it from the secrets volume (JWT_SEED_FILE)", name, k)
			}
			if strings.Contains(k, "PASSWORD") && !strings.HasSuffix(k, "_FILE") && k != "RABBITMQ_DEFAULT_USER" {
				t.Errorf("%s: %s is a password in the compose file", name, k)
			}
			if u, err := url.Parse(*v); err == nil && u.User != nil {
				if _, ok := u.User.Password(); ok {
					t.Errorf("%s: %s carries a password in the compose file", name, k)
				}
			}
		}
	}
	if users := service(t, p, "users"); users.Environment["JWT_SEED_FILE"] == nil {
		t.Error("users gets no JWT_SEED_FILE: it would sign with the public development seed")
	}
	env, err := os.ReadFile(".env")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(env), "\n") {
		if k, _, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") && !strings.HasSuffix(k, "_IMAGE") && k != "COMPOSE_PROJECT_NAME" {
			t.Errorf("compose/.env sets %s: it holds the pinned images only", k)
		}
	}
}

// The scripts' database lists are lab/stack's: a service added there needs its database
// here too.
func TestScriptsProvisionEveryDatabase(t *testing.T) {
	want := strings.Join(stack.ComposeDatabases(), " ")
	var services []string
	for _, s := range stack.Services {
		if s.DB {
			services = append(services, s.Name)
		}
	}
	for file, lists := range map[string]map[string]string{
		"secrets/generate.sh": {"databases": want},
		"postgres/init.sh":    {"databases": want, "services": strings.Join(services, " ")},
	} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for name, want := range lists {
			m := regexp.MustCompile(`(?m)^` + name + `="([^"]*)"`).FindSubmatch(b)
			if m == nil || string(m[1]) != want {
				t.Errorf("%s: %s=%q, want %q (lab/stack)", file, name, m, want)
			}
		}
	}
}

func TestJaegerRunsTheNativeLabsConfig(t *testing.T) {
	p := load(t)
	src := bind(t, "jaeger", service(t, p, "jaeger"), "/etc/jaeger/config.yaml")
	want := stack.ComposeJaegerConfig()
	if os.Getenv("UPDATE") == "1" {
		if err := os.WriteFile(src, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("%s is not lab/stack's Jaeger configuration bound to 0.0.0.0 (UPDATE=1 go test -run %s rewrites it):\n%s", src, t.Name(), want)
	}
}

func TestSecretsAreMadeOnceAndKept(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "secrets")
	env := map[string]string{"SECRETS_DIR": dir}
	run(t, "secrets/generate.sh", env)
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	seed := read("jwt_seed")
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(seed) {
		t.Errorf("jwt_seed %q is not 64 hexadecimal characters (users wants a 32-byte Ed25519 seed)", seed)
	}
	for _, name := range stack.ComposeSecretFiles() {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("generate.sh makes no %s: %v", name, err)
			continue
		}
		if fi.Mode().Perm()&0o222 != 0 {
			t.Errorf("%s is writable (%v)", name, fi.Mode())
		}
	}
	orders := read("orders_database_url")
	u, err := url.Parse(orders)
	if err != nil || u.Host != "postgres:5432" || u.User.Username() != "orders" || u.Path != "/orders" {
		t.Errorf("orders_database_url = %q: want orders' role on postgres:5432/orders", orders)
	}
	if pw, _ := u.User.Password(); pw != read("orders_password") || len(pw) < 32 {
		t.Errorf("orders' URL carries %q, not its generated password", pw)
	}
	if a := read("amqp_url"); !strings.HasPrefix(a, "amqp://microlab:"+read("rabbitmq_password")+"@rabbitmq:5672/") {
		t.Errorf("amqp_url = %q", a)
	}
	if read("users_password") == read("orders_password") {
		t.Error("two roles got the same password")
	}
	// A second start (every `up`) keeps every secret: PostgreSQL's roles were created
	// with them on the first.
	before := read("orders_password") + seed
	run(t, "secrets/generate.sh", env)
	if read("orders_password")+read("jwt_seed") != before {
		t.Error("a second run changed the secrets")
	}
	other := filepath.Join(t.TempDir(), "other")
	run(t, "secrets/generate.sh", map[string]string{"SECRETS_DIR": other})
	b, _ := os.ReadFile(filepath.Join(other, "jwt_seed"))
	if strings.TrimSpace(string(b)) == seed {
		t.Error("two labs got the same JWT seed")
	}
}
