package stack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"microlab/lab/supervisor"
)

// Native ports of the observability processes. Like the services' ports they are
// shifted by Config.PortOffset, so a test's lab, Jaeger and Prometheus sit side by side
// with everyone else's. None of them falls in the services' range (8000–16107 with
// every service scaled to MaxScale) at the same offset.
const (
	JaegerQueryPort     = 16686 // Jaeger's HTTP API (/api/traces/{id}, /api/services); the UI too, where built in
	JaegerQueryGRPCPort = 16685 // Jaeger's query gRPC API: unused by the lab, but it always listens
	JaegerOTLPHTTPPort  = 4318  // Jaeger's OTLP/HTTP receiver: the services export spans here
	PrometheusPort      = 9090
)

// RabbitMQMetricsAddr is RabbitMQ's Prometheus plugin. Not shifted: one broker serves
// every lab (each test has its own virtual host on it).
const RabbitMQMetricsAddr = "127.0.0.1:15692"

// observabilityPorts are the native ports FreeOffset keeps free besides the services'.
var observabilityPorts = []int{JaegerQueryPort, JaegerQueryGRPCPort, JaegerOTLPHTTPPort, PrometheusPort}

func (c Config) host() string {
	if c.Host == "" {
		return "127.0.0.1"
	}
	return c.Host
}

// hostPort is host:port for a native port shifted by the offset.
func (c Config) hostPort(native int) string {
	return net.JoinHostPort(c.host(), strconv.Itoa(native+c.PortOffset))
}

// OTLPEndpoint is where this lab's services export spans (OTEL_EXPORTER_OTLP_ENDPOINT):
// the OTLP/HTTP receiver of the lab's Jaeger.
func (c Config) OTLPEndpoint() string { return "http://" + c.hostPort(JaegerOTLPHTTPPort) }

// JaegerURL is the base URL of this lab's Jaeger query API. The native Jaeger is built
// without its UI (its root answers with a placeholder page), so nothing links there.
func (c Config) JaegerURL() string { return "http://" + c.hostPort(JaegerQueryPort) }

// PrometheusURL is the base URL of this lab's Prometheus.
func (c Config) PrometheusURL() string { return "http://" + c.hostPort(PrometheusPort) }

// ErrPortTaken is in the error of a Start that found one of its ports taken.
var ErrPortTaken = errors.New("port taken")

// portsFree fails, naming the port, if any of ports on host is taken right now.
func portsFree(host string, ports ...int) error {
	for _, p := range ports {
		addr := net.JoinHostPort(host, strconv.Itoa(p))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("%w: %s (another instance running?): %v", ErrPortTaken, addr, err)
		}
		_ = ln.Close()
	}
	return nil
}

// waitDial waits, bounded by ctx, until something accepts TCP connections on addr.
func waitDial(ctx context.Context, addr string) error {
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			return c.Close()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("nothing listens on %s: %w", addr, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// absDir makes dir absolute and creates it.
func absDir(dir string) (string, error) {
	if dir == "" {
		return "", errors.New("no runtime directory")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	return abs, os.MkdirAll(abs, 0o755)
}

// FixPrometheus installs Prometheus (and promtool) on Debian and Ubuntu.
const FixPrometheus = "apt-get install -y prometheus"

// FindPrometheus returns the prometheus binary on PATH, or an error that says how to
// install it.
func FindPrometheus() (string, error) {
	p, err := exec.LookPath("prometheus")
	if err != nil {
		return "", fmt.Errorf("prometheus not on PATH (install: %s)", FixPrometheus)
	}
	return p, nil
}

// startAndWait starts p under sup and waits, bounded by ctx, until its HealthURL answers
// and then until every addr accepts connections.
func startAndWait(ctx context.Context, sup *supervisor.Supervisor, p supervisor.Proc, addrs ...string) error {
	if err := sup.Start(ctx, p); err != nil {
		return err
	}
	if err := sup.WaitHealthy(ctx, p.Instance); err != nil {
		return fmt.Errorf("%w\n  (whole log: %s)", err, p.LogFile)
	}
	for _, a := range addrs {
		if err := waitDial(ctx, a); err != nil {
			return fmt.Errorf("%s: %w (log: %s)", p.Instance, err, p.LogFile)
		}
	}
	return nil
}
