package main

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/services/platform/testenv"
)

// lab chaos's own vhost: created through the management API, usable at once by the
// AMQP URL's user, and deleted the same way.
func TestChaosVHost(t *testing.T) {
	t.Parallel()
	requireDeps(t)
	ctx, cancel := context.WithTimeout(t.Context(), patience)
	defer cancel()
	vhost := testenv.Name("cv_")
	mgmt, amqpURL := testenv.ManagementURL(), testenv.AMQPURL()
	if err := createVHost(ctx, mgmt, amqpURL, vhost); err != nil {
		t.Fatal(err)
	}
	deleted := false
	t.Cleanup(func() {
		if !deleted {
			_ = mgmtDo(context.Background(), mgmt, http.MethodDelete, "/api/vhosts/"+url.PathEscape(vhost), "")
		}
	})
	u, err := withVHost(amqpURL, vhost)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := amqp.Dial(u)
	if err != nil {
		t.Fatalf("connect to the chaos vhost as the AMQP URL's user: %v", err)
	}
	_ = conn.Close()
	if err := mgmtDo(ctx, mgmt, http.MethodDelete, "/api/vhosts/"+url.PathEscape(vhost), ""); err != nil {
		t.Fatal(err)
	}
	deleted = true
	err = mgmtDo(ctx, mgmt, http.MethodDelete, "/api/vhosts/"+url.PathEscape(vhost), "")
	if err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("deleting it again: %v, want the API's 404", err)
	}
}
