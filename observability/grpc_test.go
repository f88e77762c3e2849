package observability

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// A gRPC call between two instrumented ends is one trace: the client's span and the
// server's, both with rpc.system=grpc, the server's a child of the client's (the
// context crossed in the call's metadata); and both ends count it by method and code.
func TestGRPCCallIsOneTraceWithRPCSystem(t *testing.T) {
	tel, rec, _ := setup(t, 1)
	srv := grpc.NewServer(grpc.StatsHandler(tel.GRPCServerHandler()), grpc.UnaryInterceptor(tel.GRPCServerMetrics()))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStatsHandler(tel.GRPCClientHandler()), grpc.WithUnaryInterceptor(tel.GRPCClientMetrics()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	// The caller is handling a request (a root client span would be dropped: Sampler).
	ctx, parent := tel.Tracer().Start(context.Background(), "POST /orders", trace.WithSpanKind(trace.SpanKindServer))
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	parent.End()
	srv.GracefulStop() // the server's span ends with the call; wait for it

	const method = "/grpc.health.v1.Health/Check"
	var client, server int
	for _, s := range rec.Ended() {
		if s.Name() != strings.TrimPrefix(method, "/") {
			continue
		}
		attrs := map[string]string{}
		for _, a := range s.Attributes() {
			attrs[string(a.Key)] = a.Value.Emit()
		}
		if attrs["rpc.system"] != "grpc" {
			t.Errorf("%s span %s: rpc.system=%q, want grpc (attributes %v)", s.SpanKind(), s.Name(), attrs["rpc.system"], attrs)
		}
		if s.SpanContext().TraceID() != parent.SpanContext().TraceID() {
			t.Errorf("%s span in trace %s, the caller's is %s", s.SpanKind(), s.SpanContext().TraceID(), parent.SpanContext().TraceID())
		}
		switch s.SpanKind().String() {
		case "client":
			client++
		case "server":
			server++
		}
	}
	if client != 1 || server != 1 {
		t.Fatalf("%d client and %d server spans named %s, want 1 each", client, server, strings.TrimPrefix(method, "/"))
	}
	if n := testutil.CollectAndCount(tel.rpc.server, "rpc_server_duration_seconds"); n != 1 {
		t.Errorf("rpc_server_duration_seconds has %d series, want 1", n)
	}
	if n := testutil.CollectAndCount(tel.rpc.client, "rpc_client_duration_seconds"); n != 1 {
		t.Errorf("rpc_client_duration_seconds has %d series, want 1", n)
	}
}
