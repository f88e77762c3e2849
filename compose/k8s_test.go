package compose_test

// The Kubernetes lab (compose/k8s) checked without a cluster: the kustomization is
// built in-process by kustomize's own library, exactly as `kubectl apply -k compose/k8s`
// builds it (files only under each kustomization's root), every document -- the built
// one and each source manifest -- is decoded into the typed Kubernetes API objects in
// strict mode (an unknown or misspelt field fails), and the objects are held against
// lab/stack and compose/docker-compose.yml, so the three ways of running the lab cannot
// drift apart.

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/intstr"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/krusty"
	kustypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"microlab/lab/stack"
)

// k8sSecret is the Secret every pod reads its secrets from (compose/k8s/README.md says
// how it is made from compose/secrets/generate.sh).
const k8sSecret = "microlab-secrets"

// k8sInfrastructure are the dependencies' workloads: compose's infrastructure services
// of the same names.
var k8sInfrastructure = map[string]string{
	"postgres": "StatefulSet", "rabbitmq": "StatefulSet",
	"jaeger": "Deployment", "prometheus": "Deployment", "grafana": "Deployment",
}

// decoder decodes the API groups the lab uses, strictly: a field the type does not
// have, or one given twice, is an error.
func decoder() runtime.Decoder {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
	return serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
}

// decodeAll decodes every YAML document of b into a typed object.
func decodeAll(t *testing.T, what string, b []byte) []runtime.Object {
	t.Helper()
	dec := decoder()
	r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var out []runtime.Object
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", what, i, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 || isOnlyComments(doc) {
			continue
		}
		obj, _, err := dec.Decode(doc, nil, nil)
		if err != nil {
			t.Errorf("%s: document %d does not decode strictly into a Kubernetes type: %v", what, i, err)
			continue
		}
		out = append(out, obj)
	}
}

func isOnlyComments(doc []byte) bool {
	for _, line := range strings.Split(string(doc), "\n") {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

// k8sLab is the built kustomization, by kind and name.
type k8sLab struct {
	deployments  map[string]*appsv1.Deployment
	statefulSets map[string]*appsv1.StatefulSet
	services     map[string]*corev1.Service
	configMaps   map[string]*corev1.ConfigMap
	namespaces   map[string]*corev1.Namespace
	yaml         []byte
}

// buildK8s runs kustomize on compose/k8s with kubectl's defaults and decodes the result.
func buildK8s(t *testing.T) *k8sLab {
	t.Helper()
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), "k8s")
	if err != nil {
		t.Fatalf("kustomize build compose/k8s (what kubectl apply -k runs): %v", err)
	}
	b, err := m.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	lab := &k8sLab{
		deployments: map[string]*appsv1.Deployment{}, statefulSets: map[string]*appsv1.StatefulSet{},
		services: map[string]*corev1.Service{}, configMaps: map[string]*corev1.ConfigMap{},
		namespaces: map[string]*corev1.Namespace{}, yaml: b,
	}
	for _, obj := range decodeAll(t, "kustomize build compose/k8s", b) {
		switch o := obj.(type) {
		case *appsv1.Deployment:
			lab.deployments[o.Name] = o
		case *appsv1.StatefulSet:
			lab.statefulSets[o.Name] = o
		case *corev1.Service:
			lab.services[o.Name] = o
		case *corev1.ConfigMap:
			lab.configMaps[o.Name] = o
		case *corev1.Namespace:
			lab.namespaces[o.Name] = o
		default:
			// A Secret would put a secret in the repository; an Ingress would open the lab.
			t.Errorf("unexpected %T in the Kubernetes lab", obj)
		}
		if ns := obj.(interface{ GetNamespace() string }).GetNamespace(); ns != "microlab" {
			if _, isNS := obj.(*corev1.Namespace); !isNS {
				t.Errorf("%T is in namespace %q, want microlab", obj, ns)
			}
		}
	}
	return lab
}

// workloads are the pod templates of every Deployment and StatefulSet, by name.
func (l *k8sLab) workloads() map[string]*corev1.PodTemplateSpec {
	out := map[string]*corev1.PodTemplateSpec{}
	for n, d := range l.deployments {
		out[n] = &d.Spec.Template
	}
	for n, s := range l.statefulSets {
		out[n] = &s.Spec.Template
	}
	return out
}

func container(t *testing.T, name string, pod *corev1.PodTemplateSpec) *corev1.Container {
	t.Helper()
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			return &pod.Spec.Containers[i]
		}
	}
	t.Fatalf("%s: no container %q", name, name)
	return nil
}

// portNumber resolves a probe's or Service's port (a number or a container port's name).
func portNumber(p intstr.IntOrString, c *corev1.Container) int {
	if p.Type == intstr.Int {
		return p.IntValue()
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort)
		}
	}
	return -1
}

func TestK8sEveryManifestDecodesStrictly(t *testing.T) {
	files, err := filepath.Glob("k8s/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs := decodeAll(t, f, b)
		if len(objs) == 0 {
			t.Errorf("%s holds no Kubernetes object", f)
		}
		n += len(objs)
	}
	lab := buildK8s(t)
	// Every manifest is in the build (none forgotten in resources), plus the ConfigMaps.
	built := len(lab.deployments) + len(lab.statefulSets) + len(lab.services) + len(lab.namespaces)
	if built != n {
		t.Errorf("compose/k8s/*.yaml hold %d objects, the kustomization builds %d of them: list every file in resources", n, built)
	}
}

// kustomization reads one kustomization.yaml strictly (a misspelt field is an error).
func kustomization(t *testing.T, dir string) kustypes.Kustomization {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatalf("%s is not a kustomization: %v", dir, err)
	}
	var k kustypes.Kustomization
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		t.Fatalf("%s/kustomization.yaml: %v", dir, err)
	}
	return k
}

func TestK8sKustomizationReferencesExistingFiles(t *testing.T) {
	generated := map[string]bool{} // every file a ConfigMap is made of, relative to compose/
	var walk func(dir string)
	walk = func(dir string) {
		k := kustomization(t, dir)
		for _, r := range k.Resources {
			p := filepath.Join(dir, r)
			st, err := os.Stat(p)
			switch {
			case err != nil:
				t.Errorf("%s/kustomization.yaml: resource %s: %v", dir, r, err)
			case st.IsDir():
				walk(p)
			}
		}
		for _, g := range k.ConfigMapGenerator {
			for _, f := range g.FileSources {
				_, src, ok := strings.Cut(f, "=")
				if !ok {
					src = f
				}
				p := filepath.Join(dir, src)
				if _, err := os.Stat(p); err != nil {
					t.Errorf("%s/kustomization.yaml: ConfigMap %s: %v", dir, g.Name, err)
				}
				generated[filepath.Clean(p)] = true
			}
		}
	}
	walk("k8s")
	// Every file compose mounts into Prometheus, Grafana, PostgreSQL, RabbitMQ and
	// Jaeger is in a ConfigMap: a new rules file or dashboard must be listed too.
	var want []string
	for _, glob := range []string{
		"../observability/prometheus/rules/*.yml", "../observability/grafana/dashboards/*.json",
		"../observability/grafana/provisioning/*/*.yml",
	} {
		m, _ := filepath.Glob(glob)
		if len(m) == 0 {
			t.Errorf("no file matches %s", glob)
		}
		want = append(want, m...)
	}
	want = append(want, "../observability/prometheus/prometheus.compose.yml", "postgres/init.sh",
		"rabbitmq/enabled_plugins", "jaeger/config.yaml")
	for _, f := range want {
		if !generated[filepath.Clean(f)] {
			t.Errorf("%s is in no ConfigMap of the Kubernetes lab", f)
		}
	}
	buildK8s(t) // and kustomize itself finds everything, under the restrictor kubectl uses
}

func TestK8sEveryProcessOfTheTopologyIsThereAsStackSaysIt(t *testing.T) {
	lab := buildK8s(t)
	p := load(t)
	for _, s := range stack.Services {
		d, ok := lab.deployments[s.Name]
		if !ok {
			t.Errorf("no Deployment %s", s.Name)
			continue
		}
		if n := ptr(d.Spec.Replicas, 1); n != 1 {
			t.Errorf("%s: replicas %d, want 1 (scaling is kubectl scale's, README.md)", s.Name, n)
		}
		c := container(t, s.Name, &d.Spec.Template)
		if tag, ok := strings.CutPrefix(c.Image, "microlab/"+s.Name+":"); !ok || tag == "" || tag == "latest" {
			t.Errorf("%s: image %q, want microlab/%s:<tag> built from compose/Dockerfile (not latest)", s.Name, c.Image, s.Name)
		}
		if !slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool { return int(cp.ContainerPort) == s.Port }) {
			t.Errorf("%s: container ports %v, want %d", s.Name, c.Ports, s.Port)
		}

		// The environment is compose's, exactly.
		want, err := stack.ComposeEnv(s)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, e := range c.Env {
			if _, dup := got[e.Name]; dup {
				t.Errorf("%s: %s is set twice", s.Name, e.Name)
			}
			if e.ValueFrom != nil {
				t.Errorf("%s: %s comes from %+v, want the value lab/stack gives", s.Name, e.Name, e.ValueFrom)
			}
			got[e.Name] = e.Value
		}
		for k, v := range want {
			if g, ok := got[k]; !ok || g != v {
				t.Errorf("%s: %s = %q, want %q (lab/stack ComposeEnv)", s.Name, k, g, v)
			}
		}
		for k := range got {
			if _, ok := want[k]; !ok {
				t.Errorf("%s: %s is not in lab/stack ComposeEnv: add it there (one source of truth)", s.Name, k)
			}
		}
		if len(c.EnvFrom) > 0 {
			t.Errorf("%s: envFrom %v adds variables ComposeEnv does not have", s.Name, c.EnvFrom)
		}
		if ptr(d.Spec.Template.Spec.EnableServiceLinks, true) {
			t.Errorf("%s: enableServiceLinks is on: Kubernetes would add *_SERVICE_HOST and *_PORT variables", s.Name)
		}

		// Probes on the service's own port.
		for _, pr := range []struct {
			kind  string
			probe *corev1.Probe
			path  string
		}{{"readiness", c.ReadinessProbe, "/readyz"}, {"liveness", c.LivenessProbe, "/healthz"}, {"startup", c.StartupProbe, "/healthz"}} {
			switch {
			case pr.kind == "startup" && pr.probe == nil: // optional; if there, it gates liveness
			case pr.probe != nil && pr.probe.HTTPGet == nil:
				t.Errorf("%s: no HTTP %s probe", s.Name, pr.kind)
			case pr.probe == nil:
				t.Errorf("%s: no %s probe", s.Name, pr.kind)
			case pr.probe.HTTPGet.Path != pr.path || portNumber(pr.probe.HTTPGet.Port, c) != s.Port:
				t.Errorf("%s: %s probe on %s port %s, want %s on %d", s.Name, pr.kind, pr.probe.HTTPGet.Path, pr.probe.HTTPGet.Port.String(), pr.path, s.Port)
			}
		}

		// The memory limit is compose's.
		cs := service(t, p, s.Name)
		if lim := c.Resources.Limits.Memory(); lim.Value() != int64(cs.Deploy.Resources.Limits.MemoryBytes) {
			t.Errorf("%s: memory limit %s, compose's is %d bytes", s.Name, lim, cs.Deploy.Resources.Limits.MemoryBytes)
		}

		// RollingUpdate, one new pod before an old one goes.
		st := d.Spec.Strategy
		if st.Type != appsv1.RollingUpdateDeploymentStrategyType || st.RollingUpdate == nil ||
			st.RollingUpdate.MaxUnavailable == nil || st.RollingUpdate.MaxUnavailable.String() != "0" ||
			st.RollingUpdate.MaxSurge == nil || st.RollingUpdate.MaxSurge.String() != "1" {
			t.Errorf("%s: strategy %+v, want RollingUpdate with maxUnavailable 0, maxSurge 1", s.Name, st)
		}

		// The secrets, read-only, from the Secret.
		pod := &d.Spec.Template.Spec
		mounted := false
		for _, m := range c.VolumeMounts {
			if m.MountPath != stack.SecretsDir {
				continue
			}
			for _, v := range pod.Volumes {
				if v.Name == m.Name && v.Secret != nil && v.Secret.SecretName == k8sSecret && m.ReadOnly {
					mounted = true
				}
			}
		}
		if !mounted {
			t.Errorf("%s: the Secret %s is not mounted read-only at %s", s.Name, k8sSecret, stack.SecretsDir)
		}
		sc := c.SecurityContext
		if sc == nil || !ptr(sc.ReadOnlyRootFilesystem, false) {
			t.Errorf("%s: the root file system is writable", s.Name)
		}

		// compose's depends_on service_healthy is the wait init container's list.
		var healthy []string
		for dep, cond := range cs.DependsOn {
			if cond.Condition == types.ServiceConditionHealthy {
				healthy = append(healthy, dep)
			}
		}
		var waits []string
		for _, ic := range pod.InitContainers {
			if ic.Name == "wait" {
				waits = append(waits, ic.Args...)
			}
		}
		slices.Sort(healthy)
		slices.Sort(waits)
		if !slices.Equal(healthy, waits) {
			t.Errorf("%s: waits for %v before it starts, compose waits for %v to be healthy", s.Name, waits, healthy)
		}

		// A Service of the same name on its port, selecting its pods.
		svc, ok := lab.services[s.Name]
		if !ok {
			t.Errorf("no Service %s", s.Name)
			continue
		}
		if !slices.ContainsFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool {
			return int(sp.Port) == s.Port && portNumber(sp.TargetPort, c) == s.Port
		}) {
			t.Errorf("Service %s: ports %+v, want %d to the container's %d", s.Name, svc.Spec.Ports, s.Port, s.Port)
		}
		if !selects(svc, &d.Spec.Template) {
			t.Errorf("Service %s: selector %v does not select its pods %v", s.Name, svc.Spec.Selector, d.Spec.Template.Labels)
		}
	}
	for name, kind := range k8sInfrastructure {
		_, dep := lab.deployments[name]
		_, sts := lab.statefulSets[name]
		if (kind == "Deployment" && !dep) || (kind == "StatefulSet" && !sts) {
			t.Errorf("no %s %s", kind, name)
		}
		if _, ok := lab.services[name]; !ok {
			t.Errorf("no Service %s", name)
		}
	}
	if n, want := len(lab.workloads()), len(stack.Services)+len(k8sInfrastructure); n != want {
		t.Errorf("the Kubernetes lab has %d workloads, want %d (lab/stack's and the infrastructure)", n, want)
	}
}

func ptr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

func selects(svc *corev1.Service, pod *corev1.PodTemplateSpec) bool {
	if len(svc.Spec.Selector) == 0 {
		return false
	}
	for k, v := range svc.Spec.Selector {
		if pod.Labels[k] != v {
			return false
		}
	}
	return true
}

func TestK8sEveryWorkloadIsBoundedProbedAndUnprivileged(t *testing.T) {
	lab := buildK8s(t)
	for name, pod := range lab.workloads() {
		ps := pod.Spec.SecurityContext
		if ps == nil || !ptr(ps.RunAsNonRoot, false) {
			t.Errorf("%s: pod may run as root (securityContext.runAsNonRoot)", name)
		}
		if ps == nil || ps.SeccompProfile == nil || ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s: no RuntimeDefault seccomp profile", name)
		}
		if ptr(pod.Spec.AutomountServiceAccountToken, true) {
			t.Errorf("%s: mounts a Kubernetes API token it has no use for", name)
		}
		for _, c := range append(slices.Clone(pod.Spec.InitContainers), pod.Spec.Containers...) {
			for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				if _, ok := c.Resources.Requests[r]; !ok {
					t.Errorf("%s/%s: no %s request", name, c.Name, r)
				}
				if _, ok := c.Resources.Limits[r]; !ok {
					t.Errorf("%s/%s: no %s limit", name, c.Name, r)
				}
			}
			if req, lim := c.Resources.Requests.Memory(), c.Resources.Limits.Memory(); req.Cmp(*lim) > 0 {
				t.Errorf("%s/%s: requests %s memory over its limit %s", name, c.Name, req, lim)
			}
			sc := c.SecurityContext
			if sc == nil || ptr(sc.AllowPrivilegeEscalation, true) {
				t.Errorf("%s/%s: allows privilege escalation", name, c.Name)
			}
			if sc == nil || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
				t.Errorf("%s/%s: does not drop every capability", name, c.Name)
			}
			if ptr(sc.Privileged, false) {
				t.Errorf("%s/%s: privileged", name, c.Name)
			}
		}
		for _, c := range pod.Spec.Containers {
			if c.ReadinessProbe == nil {
				t.Errorf("%s/%s: no readiness probe", name, c.Name)
			}
			if c.LivenessProbe == nil {
				t.Errorf("%s/%s: no liveness probe", name, c.Name)
			}
		}
	}
	for name, d := range lab.deployments {
		if d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType {
			t.Errorf("%s: strategy %q, want RollingUpdate", name, d.Spec.Strategy.Type)
		}
	}
	ns, ok := lab.namespaces["microlab"]
	if !ok {
		t.Fatal("no Namespace microlab")
	}
	if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Errorf("namespace microlab enforces %q, want the restricted Pod Security Standard", ns.Labels["pod-security.kubernetes.io/enforce"])
	}
}

func TestK8sImagesArePinnedAsInCompose(t *testing.T) {
	lab := buildK8s(t)
	p := load(t)
	composeImages := map[string]bool{}
	for _, c := range p.Services {
		if c.Build == nil {
			composeImages[c.Image] = true
		}
	}
	for name, pod := range lab.workloads() {
		for _, c := range append(slices.Clone(pod.Spec.InitContainers), pod.Spec.Containers...) {
			if strings.HasPrefix(c.Image, "microlab/") {
				continue // built here; TestK8sEveryProcessOfTheTopologyIsThereAsStackSaysIt
			}
			if !composeImages[c.Image] || !pinned.MatchString(c.Image) {
				t.Errorf("%s/%s: image %q is not one compose/.env pins", name, c.Name, c.Image)
			}
		}
	}
	for name := range k8sInfrastructure {
		pod, ok := lab.workloads()[name]
		if !ok {
			t.Errorf("no workload %s", name)
			continue
		}
		c := container(t, name, pod)
		cs := service(t, p, name)
		if c.Image != cs.Image {
			t.Errorf("%s: image %s, compose runs %s", name, c.Image, cs.Image)
		}
		if lim := c.Resources.Limits.Memory(); lim.Value() != int64(cs.Deploy.Resources.Limits.MemoryBytes) {
			t.Errorf("%s: memory limit %s, compose's is %d bytes", name, lim, cs.Deploy.Resources.Limits.MemoryBytes)
		}
	}
}

func TestK8sOnlyPortForwardReachesTheLab(t *testing.T) {
	lab := buildK8s(t)
	for name, svc := range lab.services {
		switch svc.Spec.Type {
		case "", corev1.ServiceTypeClusterIP:
		default:
			t.Errorf("Service %s is a %s: the lab is reached with kubectl port-forward on 127.0.0.1 only", name, svc.Spec.Type)
		}
		if len(svc.Spec.ExternalIPs) > 0 || svc.Spec.ExternalName != "" {
			t.Errorf("Service %s reaches outside the cluster: %v %q", name, svc.Spec.ExternalIPs, svc.Spec.ExternalName)
		}
	}
	for name, pod := range lab.workloads() {
		if pod.Spec.HostNetwork {
			t.Errorf("%s: on the host's network", name)
		}
		for _, c := range pod.Spec.Containers {
			for _, cp := range c.Ports {
				if cp.HostPort != 0 {
					t.Errorf("%s/%s: host port %d", name, c.Name, cp.HostPort)
				}
			}
		}
	}
}

// Every address the lab's processes and configuration use resolves to a Service of
// that name with that port: the same URLs as in compose work here.
func TestK8sComposeAddressesResolveToServices(t *testing.T) {
	lab := buildK8s(t)
	hasPort := func(host string, port int) bool {
		svc, ok := lab.services[host]
		return ok && slices.ContainsFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool { return int(sp.Port) == port })
	}
	check := func(where, hostport string) {
		host, ps, err := net.SplitHostPort(hostport)
		if err != nil {
			t.Errorf("%s: %q: %v", where, hostport, err)
			return
		}
		if port, _ := strconv.Atoi(ps); !hasPort(host, port) {
			t.Errorf("%s: %s is no Service port of the Kubernetes lab", where, hostport)
		}
	}
	for _, s := range stack.Services {
		env, err := stack.ComposeEnv(s)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range env {
			// localhost is the learner's browser's (port-forward), not the cluster's.
			if u, err := url.Parse(v); err == nil && u.Scheme == "http" && u.Hostname() != "localhost" {
				check(s.Name+" "+k, u.Host)
			}
		}
	}
	// The addresses generate.sh writes into the secret URLs.
	gen, err := os.ReadFile("secrets/generate.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, hp := range []string{"postgres:5432", "rabbitmq:5672", "rabbitmq:15672"} {
		if !strings.Contains(string(gen), hp) {
			t.Errorf("compose/secrets/generate.sh no longer defaults to %s", hp)
		}
		check("compose/secrets/generate.sh", hp)
	}
	// Grafana's datasources.
	ds, err := os.ReadFile("../observability/grafana/provisioning/datasources/datasources.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`url: (http://\S+)`).FindAllSubmatch(ds, -1) {
		u, _ := url.Parse(string(m[1]))
		check("grafana datasource", u.Host)
	}
	// Prometheus' targets: a DNS name must be a headless Service, or it resolves to one
	// virtual IP and Prometheus sees one replica of many.
	var cfg struct {
		ScrapeConfigs []struct {
			JobName      string `json:"job_name"`
			DNSSDConfigs []struct {
				Names []string `json:"names"`
				Type  string   `json:"type"`
				Port  int      `json:"port"`
			} `json:"dns_sd_configs"`
			StaticConfigs []struct {
				Targets []string `json:"targets"`
			} `json:"static_configs"`
		} `json:"scrape_configs"`
	}
	prom := lab.mountedConfigMap(t, "prometheus", "/etc/prometheus/prometheus.yml")
	if err := yaml.Unmarshal([]byte(prom), &cfg); err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("../observability/prometheus/prometheus.compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	if prom != string(src) {
		t.Error("Prometheus' mounted configuration is not observability/prometheus/prometheus.compose.yml")
	}
	jobs := 0
	for _, sc := range cfg.ScrapeConfigs {
		jobs++
		for _, d := range sc.DNSSDConfigs {
			for _, n := range d.Names {
				check("prometheus job "+sc.JobName, net.JoinHostPort(n, strconv.Itoa(d.Port)))
				if svc := lab.services[n]; svc != nil && svc.Spec.ClusterIP != corev1.ClusterIPNone {
					t.Errorf("prometheus job %s discovers %s by DNS, but its Service is not headless: one target for every replica", sc.JobName, n)
				}
			}
		}
		for _, s := range sc.StaticConfigs {
			for _, tg := range s.Targets {
				check("prometheus job "+sc.JobName, tg)
			}
		}
	}
	if jobs != len(stack.Services)+1 {
		t.Errorf("prometheus has %d jobs, want one per process and rabbitmq", jobs)
	}
}

// mountedConfigMap returns the content of the ConfigMap key workload name's first
// container sees at path (a subPath mount, or a key under a directory mount).
func (l *k8sLab) mountedConfigMap(t *testing.T, name, path string) string {
	t.Helper()
	pod, ok := l.workloads()[name]
	if !ok {
		t.Fatalf("no workload %s", name)
	}
	c := pod.Spec.Containers[0]
	for _, m := range c.VolumeMounts {
		var key string
		switch {
		case m.SubPath != "" && m.MountPath == path:
			key = m.SubPath
		case m.SubPath == "" && filepath.Dir(path) == m.MountPath:
			key = filepath.Base(path)
		default:
			continue
		}
		for _, v := range pod.Spec.Volumes {
			if v.Name != m.Name || v.ConfigMap == nil {
				continue
			}
			cm, ok := l.configMaps[v.ConfigMap.Name]
			if !ok {
				t.Fatalf("%s mounts ConfigMap %s, which the lab does not have", name, v.ConfigMap.Name)
			}
			if data, ok := cm.Data[key]; ok {
				return data
			}
		}
	}
	t.Fatalf("%s: no ConfigMap mounted at %s", name, path)
	return ""
}

// The dependencies run compose's configuration files, mounted where compose mounts them.
func TestK8sDependenciesRunComposesFiles(t *testing.T) {
	lab := buildK8s(t)
	p := load(t)
	for _, m := range []struct{ workload, path string }{
		{"postgres", "/docker-entrypoint-initdb.d/10-microlab.sh"},
		{"rabbitmq", "/etc/rabbitmq/enabled_plugins"},
		{"jaeger", "/etc/jaeger/config.yaml"},
		{"prometheus", "/etc/prometheus/prometheus.yml"},
		{"grafana", "/etc/grafana/provisioning/datasources/datasources.yml"},
		{"grafana", "/etc/grafana/provisioning/dashboards/dashboards.yml"},
		{"grafana", "/var/lib/grafana/dashboards/shop-overview.json"},
	} {
		got := lab.mountedConfigMap(t, m.workload, m.path)
		// compose mounts the same file (or its directory) at the same path.
		var src string
		for _, v := range service(t, p, m.workload).Volumes {
			if v.Target == m.path {
				src = v.Source
			} else if rel, ok := strings.CutPrefix(m.path, v.Target+"/"); ok && v.Type == types.VolumeTypeBind {
				src = filepath.Join(v.Source, rel)
			}
		}
		if src == "" {
			t.Errorf("compose mounts nothing at %s in %s", m.path, m.workload)
			continue
		}
		want, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if got != string(want) {
			t.Errorf("%s: %s is not compose's %s", m.workload, m.path, src)
		}
	}
	// Every rules file is in Prometheus' rules directory, every dashboard in Grafana's.
	for _, d := range []struct{ workload, dir, glob string }{
		{"prometheus", "/etc/prometheus/rules", "../observability/prometheus/rules/*.yml"},
		{"grafana", "/var/lib/grafana/dashboards", "../observability/grafana/dashboards/*.json"},
	} {
		files, _ := filepath.Glob(d.glob)
		for _, f := range files {
			want, _ := os.ReadFile(f)
			if got := lab.mountedConfigMap(t, d.workload, d.dir+"/"+filepath.Base(f)); got != string(want) {
				t.Errorf("%s: %s/%s is not %s", d.workload, d.dir, filepath.Base(f), f)
			}
		}
	}
	// Each dependency starts as compose starts it, with compose's environment (and
	// what Kubernetes adds, e.g. PGDATA). Kubernetes expands $(NAME) in a command and
	// reads $$ as $, the escape rabbitmq.yaml uses for the shell's $(cat …).
	for name := range k8sInfrastructure {
		pod, ok := lab.workloads()[name]
		if !ok {
			continue // TestK8sEveryProcessOfTheTopologyIsThereAsStackSaysIt says so
		}
		c := container(t, name, pod)
		var got []string
		for _, a := range append(slices.Clone(c.Command), c.Args...) {
			got = append(got, strings.ReplaceAll(a, "$$", "$"))
		}
		cs := service(t, p, name)
		if want := append(slices.Clone([]string(cs.Entrypoint)), cs.Command...); !slices.Equal(got, want) {
			t.Errorf("%s runs %q, compose runs %q", name, got, want)
		}
		env := map[string]string{}
		for _, e := range c.Env {
			env[e.Name] = e.Value
		}
		for k, v := range cs.Environment {
			if v != nil && env[k] != *v {
				t.Errorf("%s: %s = %q, compose gives %q", name, k, env[k], *v)
			}
		}
	}
	// PostgreSQL and RabbitMQ keep their data in a claim of their own.
	for _, name := range []string{"postgres", "rabbitmq"} {
		sts, ok := lab.statefulSets[name]
		if !ok {
			t.Errorf("no StatefulSet %s", name)
			continue
		}
		if len(sts.Spec.VolumeClaimTemplates) != 1 {
			t.Errorf("%s: %d volume claim templates, want one for its data", name, len(sts.Spec.VolumeClaimTemplates))
		}
		if ps := sts.Spec.Template.Spec.SecurityContext; ps == nil || ps.FSGroup == nil ||
			ps.FSGroupChangePolicy == nil || *ps.FSGroupChangePolicy != corev1.FSGroupChangeOnRootMismatch {
			t.Errorf("%s: want fsGroup with fsGroupChangePolicy OnRootMismatch, or a restart re-permissions its data", name)
		}
		if sts.Spec.ServiceName != name {
			t.Errorf("%s: governed by Service %q, want %s", name, sts.Spec.ServiceName, name)
		}
	}
}

func TestK8sNoSecretIsInTheManifests(t *testing.T) {
	lab := buildK8s(t)
	devSeed := "6d6963726f6c61622d6465762d6a77742d736565642d6e6f742d736563726574" // services/users/main.go
	if bytes.Contains(lab.yaml, []byte(devSeed)) {
		t.Error("the Kubernetes lab carries the development JWT seed")
	}
	monolithDevSeed := "6d6963726f6c61622d6d6f6e6f6c6974682d6465762d736565642d7075622121" // services/monolith/main.go
	if bytes.Contains(lab.yaml, []byte(monolithDevSeed)) {
		t.Error("the Kubernetes lab carries the monolith's development JWT seed")
	}
	// What the pods may read from the Secret: what compose/secrets/generate.sh makes.
	known := map[string]bool{}
	for _, f := range stack.ComposeSecretFiles() {
		known[f] = true
	}
	for _, f := range []string{"postgres_password", "rabbitmq_password", "grafana_password"} {
		known[f] = true
	}
	for _, db := range stack.ComposeDatabases() {
		known[db+"_password"] = true
	}
	for name, pod := range lab.workloads() {
		for _, v := range pod.Spec.Volumes {
			if v.Secret != nil && v.Secret.SecretName != k8sSecret {
				t.Errorf("%s: mounts Secret %s, want %s (README.md)", name, v.Secret.SecretName, k8sSecret)
			}
		}
		for _, c := range append(slices.Clone(pod.Spec.InitContainers), pod.Spec.Containers...) {
			for _, e := range c.Env {
				if e.Name == "JWT_SEED" || (strings.Contains(e.Name, "PASSWORD") && !strings.HasSuffix(e.Name, "_FILE")) {
					t.Errorf("%s/%s: %s is a secret in the manifest", name, c.Name, e.Name)
				}
				if u, err := url.Parse(e.Value); err == nil && u.User != nil {
					if _, ok := u.User.Password(); ok {
						t.Errorf("%s/%s: %s carries a password in the manifest", name, c.Name, e.Name)
					}
				}
				if f, ok := strings.CutPrefix(e.Value, stack.SecretsDir+"/"); ok && !known[f] {
					t.Errorf("%s/%s: %s reads %s, which compose/secrets/generate.sh does not make", name, c.Name, e.Name, f)
				}
			}
		}
	}
	for name, cm := range lab.configMaps {
		for k, v := range cm.Data {
			if u, err := url.Parse(strings.TrimSpace(v)); err == nil && u.User != nil {
				t.Errorf("ConfigMap %s: %s holds credentials", name, k)
			}
		}
	}
}

// The README's build loop builds every process's image, under the name the manifests use.
func TestK8sReadmeBuildsEveryImage(t *testing.T) {
	b, err := os.ReadFile("k8s/README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`for s in ([a-z ]+); do`).FindSubmatch(b)
	if m == nil {
		t.Fatal("compose/k8s/README.md has no build loop (for s in …; do)")
	}
	var want []string
	for _, s := range stack.Services {
		want = append(want, s.Name)
		pkg := "./services/" + s.Name // the loop's rule: ./services/$s, the dashboard aside
		if s.Name == stack.Dashboard {
			pkg = "./dashboard"
		}
		if pkg != s.Package() {
			t.Errorf("the README's loop builds %s from %s, lab/stack says %s", s.Name, pkg, s.Package())
		}
	}
	if got := strings.Fields(string(m[1])); !slices.Equal(got, want) {
		t.Errorf("the README builds %v, lab/stack has %v", got, want)
	}
	if !bytes.Contains(b, []byte("-t microlab/$s:dev")) {
		t.Error("the README's loop does not tag microlab/<name>:dev, the manifests' images")
	}
	for _, s := range stack.Services {
		raw, err := os.ReadFile("k8s/" + s.Name + ".yaml")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(raw, []byte("image: microlab/"+s.Name+":dev\n")) {
			t.Errorf("compose/k8s/%s.yaml does not run microlab/%s:dev, which the README builds", s.Name, s.Name)
		}
	}
}

// catalog rolls (RollingUpdate: a surge pod first, none unavailable, traffic only once
// /readyz passes), and its canary, canary/catalog-v2.yaml (applied by hand, outside the
// kustomization), is the same pod with VERSION=v2: a Deployment whose selector never
// overlaps catalog's (app.kubernetes.io/version), whose pods the Service catalog
// selects all the same.
func TestK8sCatalogRollsAndHasACanary(t *testing.T) {
	lab := buildK8s(t)
	v1, ok := lab.deployments["catalog"]
	if !ok {
		t.Fatal("no Deployment catalog")
	}
	b, err := os.ReadFile("k8s/canary/catalog-v2.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objs := decodeAll(t, "k8s/canary/catalog-v2.yaml", b)
	if len(objs) != 1 {
		t.Fatalf("canary/catalog-v2.yaml: %d objects, want the one Deployment", len(objs))
	}
	v2, ok := objs[0].(*appsv1.Deployment)
	if !ok || v2.Name != "catalog-v2" || v2.Namespace != "microlab" {
		t.Fatalf("canary/catalog-v2.yaml holds %T %v, want Deployment microlab/catalog-v2", objs[0], objs[0])
	}
	for _, d := range []*appsv1.Deployment{v1, v2} {
		s := d.Spec.Strategy
		if s.Type != appsv1.RollingUpdateDeploymentStrategyType || s.RollingUpdate == nil ||
			s.RollingUpdate.MaxUnavailable.String() != "0" || s.RollingUpdate.MaxSurge.String() != "1" {
			t.Errorf("%s: strategy %+v, want RollingUpdate with maxUnavailable 0, maxSurge 1", d.Name, s)
		}
		c := container(t, "catalog", &d.Spec.Template)
		if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" || p.HTTPGet.Port.IntValue() != 8102 {
			t.Errorf("%s: readinessProbe %+v, want GET /readyz on 8102", d.Name, c.ReadinessProbe)
		}
		if p := c.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" {
			t.Errorf("%s: livenessProbe %+v, want GET /healthz", d.Name, c.LivenessProbe)
		}
	}
	env := func(d *appsv1.Deployment) map[string]string {
		out := map[string]string{}
		for _, e := range container(t, "catalog", &d.Spec.Template).Env {
			out[e.Name] = e.Value
		}
		return out
	}
	e1, e2 := env(v1), env(v2)
	if e2["VERSION"] != "v2" {
		t.Errorf("catalog-v2: VERSION=%q, want v2", e2["VERSION"])
	}
	delete(e2, "VERSION")
	if !maps.Equal(e1, e2) {
		t.Errorf("catalog-v2's environment, VERSION aside, differs from catalog's:\n%v\n%v", e2, e1)
	}
	if c1, c2 := container(t, "catalog", &v1.Spec.Template), container(t, "catalog", &v2.Spec.Template); c1.Image != c2.Image {
		t.Errorf("catalog-v2 runs %s, catalog %s: a canary is the same build with VERSION=v2", c2.Image, c1.Image)
	}
	matches := func(sel, labels map[string]string) bool {
		for k, v := range sel {
			if labels[k] != v {
				return false
			}
		}
		return true
	}
	l1, l2 := v1.Spec.Template.Labels, v2.Spec.Template.Labels
	if l1["app.kubernetes.io/version"] != "v1" || l2["app.kubernetes.io/version"] != "v2" {
		t.Errorf("pod version labels %q and %q, want v1 and v2", l1["app.kubernetes.io/version"], l2["app.kubernetes.io/version"])
	}
	if !matches(v1.Spec.Selector.MatchLabels, l1) || matches(v1.Spec.Selector.MatchLabels, l2) ||
		!matches(v2.Spec.Selector.MatchLabels, l2) || matches(v2.Spec.Selector.MatchLabels, l1) {
		t.Errorf("selectors overlap or miss their own pods: catalog %v, catalog-v2 %v", v1.Spec.Selector.MatchLabels, v2.Spec.Selector.MatchLabels)
	}
	svc, ok := lab.services["catalog"]
	if !ok || !matches(svc.Spec.Selector, l1) || !matches(svc.Spec.Selector, l2) {
		t.Errorf("Service catalog (selector %v) must select the pods of both versions", svc.Spec.Selector)
	}
}
