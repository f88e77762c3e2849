package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"microlab/services/contracts/catalogpb"
	"microlab/services/platform/testenv"
)

// startGRPC runs catalog in-process with its gRPC server on a port of its own choosing
// (ServiceEnv's GRPC_ADDR) and returns a client of it (see testenv.GRPCAddr).
func startGRPC(t *testing.T) catalogpb.CatalogClient {
	t.Helper()
	env := testenv.ServiceEnv(t, "catalog", true)
	logs := &testenv.LogBuffer{}
	testenv.Run(t, run, env, logs)
	addr := testenv.GRPCAddr(t, logs)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return catalogpb.NewCatalogClient(conn)
}

// TestGRPC: GetProduct answers what GET /products/{sku} answers, and refuses bad input
// with the codes callers branch on (NotFound, InvalidArgument).
func TestGRPC(t *testing.T) {
	t.Parallel()
	c := startGRPC(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	p, err := c.GetProduct(ctx, &catalogpb.GetProductRequest{Sku: "LAB-MUG"})
	if err != nil {
		t.Fatalf("GetProduct LAB-MUG: %v", err)
	}
	if p.GetSku() != "LAB-MUG" || p.GetName() != "Lab mug" || p.GetPriceCents() != 1200 || p.GetCurrency() != "EUR" {
		t.Fatalf("GetProduct LAB-MUG = %v", p)
	}

	for _, tc := range []struct {
		sku  string
		code codes.Code
	}{
		{"LAB-NOPE", codes.NotFound},
		{"lab-mug", codes.NotFound}, // SKUs are case-sensitive, as over HTTP
		{"'; DROP TABLE products", codes.NotFound},
		{"", codes.InvalidArgument},
		{strings.Repeat("X", maxSKU+1), codes.InvalidArgument},
	} {
		_, err := c.GetProduct(ctx, &catalogpb.GetProductRequest{Sku: tc.sku})
		if got := status.Code(err); got != tc.code {
			t.Errorf("GetProduct %.20q: code %s (%v), want %s", tc.sku, got, err, tc.code)
		}
		if err != nil && status.Convert(err).Message() == "" {
			t.Errorf("GetProduct %.20q: %s without a message", tc.sku, status.Code(err))
		}
	}
}
