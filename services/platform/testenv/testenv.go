// Package testenv gives integration tests their own isolated piece of the real
// infrastructure: a RabbitMQ virtual host and PostgreSQL databases (with roles) whose
// names are unique to the test, removed when it ends. Tests run in parallel without
// seeing each other's queues or rows, and nothing here is a mock.
//
// When a dependency is unreachable the test is skipped locally with the command that
// fixes it; under CI=true it fails instead, so CI can never be green by skipping.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"microlab/services/platform/pg"
	"microlab/services/platform/rabbitmgmt"
)

// Defaults, overridable with the same variables `lab up` reads.
const (
	defaultAdminDB = "postgres://postgres@127.0.0.1:5432/postgres"
	defaultAMQP    = "amqp://guest:guest@127.0.0.1:5672/"
	defaultMgmt    = "http://guest:guest@127.0.0.1:15672"
)

// Fix commands, printed when a dependency is missing.
const (
	FixPostgres = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
	FixRabbit   = "rabbitmq-server -detached"
	FixMgmt     = "rabbitmq-plugins enable rabbitmq_management rabbitmq_prometheus"
)

// AdminDatabaseURL is the superuser URL tests provision databases with.
func AdminDatabaseURL() string { return env("ADMIN_DATABASE_URL", defaultAdminDB) }

// AMQPURL is the broker URL (vhost "/"); VHost returns a per-test one.
func AMQPURL() string { return env("AMQP_URL", defaultAMQP) }

func mgmtURL() string { return env("RABBITMQ_MANAGEMENT_URL", defaultMgmt) }

// ManagementURL is the RabbitMQ management API tests use (VHost creates vhosts through
// it), with its credentials.
func ManagementURL() string { return mgmtURL() }

func env(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// Missing reports a missing dependency: Fatal under CI=true, Skip otherwise.
func Missing(t testing.TB, what, fix string, err error) {
	t.Helper()
	msg := fmt.Sprintf("%s unavailable (%v); fix: %s", what, err, fix)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// Name returns a short unique lower-case identifier with prefix, safe for database,
// role and vhost names.
func Name(prefix string) string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// DB provisions a database (and role of the same name, password = name) for the test
// and returns a URL connecting as that role. It is dropped when the test ends.
func DB(t testing.TB, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin := AdminDatabaseURL()
	if err := pg.Provision(ctx, admin, name, name); err != nil {
		if isConnRefused(err) {
			Missing(t, "PostgreSQL at "+admin, FixPostgres, err)
		}
		t.Fatalf("provision database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := pg.Drop(ctx, admin, name); err != nil {
			t.Logf("drop %s: %v", name, err)
		}
	})
	u, err := pg.URLFor(admin, name, name, name)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// VHost creates a RabbitMQ virtual host for the test (through the management API) and
// returns an AMQP URL for it. It is deleted when the test ends.
func VHost(t testing.TB) string {
	t.Helper()
	name := Name("t_")
	if err := mgmt(http.MethodPut, "/api/vhosts/"+url.PathEscape(name), ""); err != nil {
		if isConnRefused(err) {
			if _, derr := net.DialTimeout("tcp", hostOf(AMQPURL()), time.Second); derr != nil {
				Missing(t, "RabbitMQ at "+AMQPURL(), FixRabbit, derr)
			}
			Missing(t, "RabbitMQ management API at "+mgmtURLMasked(), FixMgmt, err)
		}
		t.Fatalf("create vhost: %v", err)
	}
	t.Cleanup(func() {
		if err := mgmt(http.MethodDelete, "/api/vhosts/"+url.PathEscape(name), ""); err != nil {
			t.Logf("delete vhost %s: %v", name, err)
		}
	})
	u, err := url.Parse(mgmtURL())
	if err != nil {
		t.Fatal(err)
	}
	user := u.User.Username()
	body := `{"configure":".*","write":".*","read":".*"}`
	if err := mgmt(http.MethodPut, "/api/permissions/"+url.PathEscape(name)+"/"+url.PathEscape(user), body); err != nil {
		t.Fatalf("grant vhost: %v", err)
	}
	a, err := url.Parse(AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	a.Path = "/" + name
	a.RawPath = "/" + url.PathEscape(name)
	return a.String()
}

func mgmt(method, path, body string) error { return mgmtDo(method, path, body, nil) }

// Management calls the management API as the tests' user (a JSON body, or ""), for
// what VHost does not cover: a user of the test's own, say.
func Management(method, path, body string) error { return mgmt(method, path, body) }

// mgmtDo calls the management API (RABBITMQ_MANAGEMENT_URL, as the tests' user) and,
// with out, decodes its JSON answer into out. A 404 is rabbitmgmt.ErrNotFound (an
// exchange or queue not declared yet).
func mgmtDo(method, path, body string, out any) error {
	api, err := rabbitmgmt.New(mgmtURL(), &http.Client{Timeout: 30 * time.Second})
	if err != nil {
		return err
	}
	return api.Do(context.Background(), method, path, strings.NewReader(body), out)
}

func mgmtURLMasked() string {
	u, err := url.Parse(mgmtURL())
	if err != nil {
		return "?"
	}
	u.User = nil
	return u.String()
}

func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	return u.Host
}

func isConnRefused(err error) bool {
	s := err.Error()
	return strings.Contains(s, "connection refused") || strings.Contains(s, "connect: ") || strings.Contains(s, "dial tcp")
}
