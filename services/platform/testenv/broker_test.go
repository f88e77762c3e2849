package testenv_test

import (
	"net/http"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/services/platform/testenv"
)

// The private node keeps a durable queue across a restart, and with the management
// plugin its API answers on a port of its own.
func TestPrivateBrokerRestartsWithManagement(t *testing.T) {
	t.Parallel()
	b := testenv.PrivateBroker(t, testenv.WithManagement)
	if b.ManagementURL() == "" {
		t.Fatal("no management URL")
	}
	req, err := http.NewRequest(http.MethodGet, "http://"+b.ManagementURL()[len("http://guest:guest@"):]+"/api/overview", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("guest", "guest")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("management API: %s", resp.Status)
	}
	declare := func(passive bool) error {
		conn, err := amqp.Dial(b.URL())
		if err != nil {
			return err
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			return err
		}
		if passive {
			_, err = ch.QueueDeclarePassive("kept", true, false, false, false, nil)
		} else {
			_, err = ch.QueueDeclare("kept", true, false, false, false, nil)
		}
		return err
	}
	if err := declare(false); err != nil {
		t.Fatal(err)
	}
	b.Stop()
	if _, err := amqp.Dial(b.URL()); err == nil {
		t.Fatal("connected to a stopped node")
	}
	b.Start()
	if err := declare(true); err != nil {
		t.Fatalf("the durable queue did not survive the restart: %v", err)
	}
}
