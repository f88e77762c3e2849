package main

import (
	"context"
	"errors"
	"fmt"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"microlab/observability"
	"microlab/services/contracts/catalogpb"
)

// maxSKU bounds a SKU in a gRPC request: the HTTP route's path is bounded by the
// server's header limit, a protobuf string only by the message size (4 MiB).
const maxSKU = 64

// grpcServer answers catalogpb.Catalog, the same question as GET /products/{sku}, over
// gRPC (what orders uses at catalog.transport=grpc). It reads the same store.
type grpcServer struct {
	catalogpb.UnimplementedCatalogServer
	store *Store
}

// GetProduct: empty or over-long SKU → InvalidArgument; unknown → NotFound; a store
// error → Internal (the caller treats anything but NotFound as "catalog unavailable").
func (g *grpcServer) GetProduct(ctx context.Context, req *catalogpb.GetProductRequest) (*catalogpb.Product, error) {
	sku := req.GetSku()
	if sku == "" || len(sku) > maxSKU {
		return nil, status.Errorf(codes.InvalidArgument, "sku must be 1 to %d bytes, got %d", maxSKU, len(sku))
	}
	p, err := g.store.Get(ctx, sku)
	if errors.Is(err, errNotFound) {
		return nil, status.Errorf(codes.NotFound, "no product with sku %q", sku)
	}
	if err != nil {
		return nil, status.Errorf(codes.Internal, "read product: %v", err)
	}
	return &catalogpb.Product{Sku: p.SKU, Name: p.Name, PriceCents: p.PriceCents, Currency: p.Currency}, nil
}

// newGRPCServer is catalog's gRPC server: otelgrpc's stats handler (a server span per
// call, joined to the caller's trace through the call's metadata) and the RED metrics.
func newGRPCServer(tel *observability.Telemetry, store *Store) *grpc.Server {
	s := grpc.NewServer(grpc.StatsHandler(tel.GRPCServerHandler()), grpc.UnaryInterceptor(tel.GRPCServerMetrics()))
	catalogpb.RegisterCatalogServer(s, &grpcServer{store: store})
	return s
}

// serveGRPC serves s on ln until ctx ends, then stops gracefully: calls in flight
// finish, new ones are refused.
func serveGRPC(ctx context.Context, s *grpc.Server, ln net.Listener) error {
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		s.GracefulStop()
	}()
	err := s.Serve(ln)
	<-stopped
	if err != nil {
		return fmt.Errorf("grpc serve %s: %w", ln.Addr(), err)
	}
	return nil
}
