package rabbitmgmt_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"microlab/services/platform/rabbitmgmt"
	"microlab/services/platform/testenv"
)

// Against the machine's broker: an answer is decoded, a vhost made and removed, a 404
// is ErrNotFound, another refusal a StatusError saying why, and a broker that does not
// answer an UnreachableError naming it without its password.
func TestClient(t *testing.T) {
	t.Parallel()
	testenv.VHost(t) // skips (or fails under CI) with the fix when the API is not there
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	api, err := rabbitmgmt.New(testenv.ManagementURL(), &http.Client{Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(api.Base(), "@") || api.User() == "" {
		t.Fatalf("Base %q (want no credentials), User %q", api.Base(), api.User())
	}

	var o struct {
		RabbitMQ string `json:"rabbitmq_version"`
	}
	if err := api.Do(ctx, http.MethodGet, "/api/overview", nil, &o); err != nil || o.RabbitMQ == "" {
		t.Fatalf("GET /api/overview: %v, version %q", err, o.RabbitMQ)
	}

	vhost := testenv.Name("mg_")
	path := "/api/vhosts/" + url.PathEscape(vhost)
	if err := api.Do(ctx, http.MethodGet, path, nil, nil); !errors.Is(err, rabbitmgmt.ErrNotFound) {
		t.Fatalf("GET a vhost that does not exist: %v, want ErrNotFound", err)
	}
	if err := api.Do(ctx, http.MethodPut, path, nil, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.Do(context.Background(), http.MethodDelete, path, nil, nil) })
	var v struct{ Name string }
	if err := api.Do(ctx, http.MethodGet, path, nil, &v); err != nil || v.Name != vhost {
		t.Fatalf("GET the new vhost: %v, name %q", err, v.Name)
	}
	// A body the API refuses: a StatusError with its reason, not ErrNotFound.
	err = api.Do(ctx, http.MethodPut, "/api/permissions/"+url.PathEscape(vhost)+"/"+url.PathEscape(api.User()), strings.NewReader(`{"configure":`), nil)
	var se *rabbitmgmt.StatusError
	if !errors.As(err, &se) || se.Code/100 != 4 || se.Body == "" || errors.Is(err, rabbitmgmt.ErrNotFound) {
		t.Fatalf("a malformed body: %v, want a 4xx StatusError with the API's reason", err)
	}
	if err := api.Do(ctx, http.MethodDelete, path, nil, nil); err != nil {
		t.Fatal(err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	_ = ln.Close()
	down, err := rabbitmgmt.New("http://guest:secret@"+closed, &http.Client{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = down.Do(ctx, http.MethodGet, "/api/overview", nil, nil)
	var ue *rabbitmgmt.UnreachableError
	if !errors.As(err, &ue) || strings.Contains(err.Error(), "secret") || !strings.Contains(err.Error(), closed) {
		t.Fatalf("nothing listening: %v, want an UnreachableError naming %s without the password", err, closed)
	}

	for _, bad := range []string{"", "not a url", "http://"} {
		if _, err := rabbitmgmt.New(bad, http.DefaultClient); err == nil {
			t.Errorf("New(%q) accepted", bad)
		}
	}
}
