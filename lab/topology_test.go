package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/lab/stack"
	"microlab/services/platform/pg"
	"microlab/services/platform/testenv"
)

// TestTopologyChecksTheServicesAreStopped: `lab topology` stops nothing (in compose the
// learner does, with docker compose stop), so its stop step says that it checks, not
// that it stops the services and drains their outboxes; and a service still consuming
// its queue ends the switch there, with the command that stops it.
func TestTopologyChecksTheServicesAreStopped(t *testing.T) {
	t.Parallel()
	vhost := requireDeps(t)
	prefix := testenv.Name("tp") + "_"
	env := map[string]string{"LAB_DB_PREFIX": prefix, "AMQP_URL": vhost}
	sc := stack.Config{AdminDatabaseURL: testenv.AdminDatabaseURL(), DBPrefix: prefix}
	dropLabDBs(t, prefix)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		if err := pg.Drop(ctx, testenv.AdminDatabaseURL(), sc.DBName(stack.SharedDB)); err != nil {
			t.Errorf("drop %s: %v", sc.DBName(stack.SharedDB), err)
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), patience)
	defer cancel()
	// The roles, as `lab up` (or compose's init) creates them: the switch grants to them.
	if err := stack.Provision(ctx, sc); err != nil {
		t.Fatal(err)
	}

	// orders is still running: something consumes orders.events.
	ac, err := amqp.Dial(vhost)
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	ch, err := ac.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("orders.events", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.Consume("orders.events", "", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}

	code, stdout, stderr := runLab(t, env, "topology", "shared")
	n := len(sc.Databases()) - 1 // the services with a database (not the lab's own)
	if want := fmt.Sprintf("lab: checking that the %d services are stopped", n); !strings.Contains(stdout, want) {
		t.Errorf("stdout lacks %q:\n%s", want, stdout)
	}
	if strings.Contains(stdout, "outboxes drain") || strings.Contains(stdout, "stopping ") {
		t.Errorf("lab topology says it stops the services, which it does not:\n%s", stdout)
	}
	if code != exitFailure || !strings.Contains(stderr, "orders still running: stop them first") {
		t.Errorf("lab topology shared with orders running: exit %d, stderr %q; want exit 1 and orders named", code, stderr)
	}
}
