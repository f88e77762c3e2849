package bench

import (
	"context"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/services/platform/testenv"
)

// The bench's management calls against the machine's broker: the versions for the
// report, a private vhost the API's user can use at once, its counters, and its removal.
func TestMgmt(t *testing.T) {
	t.Parallel()
	testenv.VHost(t) // skips (or fails under CI) with the fix when the API is not there
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := newMgmt("not a url"); err == nil || !strings.Contains(err.Error(), "RABBITMQ_MANAGEMENT_URL") {
		t.Fatalf("a bad URL: %v, want the setting named", err)
	}
	m, err := newMgmt(testenv.ManagementURL())
	if err != nil {
		t.Fatal(err)
	}
	if rabbit, erlang, err := m.versions(ctx); err != nil || rabbit == "" || erlang == "" {
		t.Fatalf("versions: %q %q %v", rabbit, erlang, err)
	}
	vhost := testenv.Name("bm_")
	if err := m.createVHost(ctx, vhost); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.deleteVHost(context.Background(), vhost) })
	// The permissions are in place: the API's user connects and declares.
	conn, err := amqp.Dial(strings.TrimSuffix(testenv.AMQPURL(), "/") + "/" + vhost)
	if err != nil {
		t.Fatalf("connect to the new vhost: %v", err)
	}
	ch, err := conn.Channel()
	if err == nil {
		_, err = ch.QueueDeclare("bench.probe", false, true, false, false, nil)
	}
	_ = conn.Close()
	if err != nil {
		t.Fatalf("declare in the new vhost: %v", err)
	}
	if _, err := m.vhostStats(ctx, vhost); err != nil {
		t.Fatalf("vhostStats: %v", err)
	}
	if err := m.deleteVHost(ctx, vhost); err != nil {
		t.Fatal(err)
	}
	if _, err := m.vhostStats(ctx, vhost); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("stats of the deleted vhost: %v, want the API's 404", err)
	}
}
