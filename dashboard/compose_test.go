package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"microlab/services/platform/control"
	"microlab/services/platform/testenv"
)

// In the compose lab the settings `lab up` applies say what to run instead: each is
// stored with the docker compose commands that apply it, in the answer and on the
// switchboard. Natively neither note appears.
func TestComposeModeSaysWhatLabUpWouldDo(t *testing.T) {
	t.Parallel()
	_, store := testenv.LabDB(t, testenv.Name("t_dash_"))
	f := newFixture(t, map[string]string{"DEPLOYMENT_ENVIRONMENT": "compose", "RABBITMQ_MANAGEMENT_URL": closedURL(t)}, Sources{}, store)
	l := &controlLab{fixture: f, store: store}
	ctx := context.Background()

	code, body := l.call(t, "POST", "/api/lab/settings", `{"key":"db.topology","value":"shared"}`)
	var topo struct{ Note string }
	_ = json.Unmarshal([]byte(body), &topo)
	switchCmd := "docker compose -f compose/docker-compose.yml run --rm topology shared"
	if code != 200 || !strings.Contains(topo.Note, "stop users catalog orders payments inventory shipping notifications") ||
		!strings.Contains(topo.Note, switchCmd) || !strings.Contains(topo.Note, "up -d") {
		t.Errorf("db.topology in compose: %d %s; want 200 with the stop, topology and up commands", code, body)
	}
	if st, _ := store.Load(ctx); st.Get(control.DBTopology) != "shared" {
		t.Errorf("db.topology not stored: %s", st.Get(control.DBTopology))
	}

	code, body = l.call(t, "POST", "/api/lab/settings", `{"key":"scale.shipping","value":"2"}`)
	var ok struct{ Note string }
	_ = json.Unmarshal([]byte(body), &ok)
	want := "docker compose -f compose/docker-compose.yml up -d --scale shipping=2"
	if code != 200 || !strings.Contains(ok.Note, want) {
		t.Errorf("scale.shipping in compose: %d %s; want 200 with a note saying %q", code, body, want)
	}
	if st, _ := store.Load(ctx); st.Get("scale.shipping") != "2" {
		t.Errorf("scale.shipping not stored: %v", st.Get("scale.shipping"))
	}

	_, page := l.do(t, "GET", "/switchboard", "", nil)
	for key, say := range map[string]string{"db.topology": switchCmd, "scale.shipping": want} {
		rows := testIDs(t, page)["setting-"+key]
		if len(rows) != 1 || !strings.Contains(nodeText(rows[0]), say) {
			t.Errorf("switchboard row %s does not say %q", key, say)
		}
	}

	native := newFixture(t, map[string]string{"RABBITMQ_MANAGEMENT_URL": closedURL(t)}, Sources{}, store)
	_, page = native.do(t, "GET", "/switchboard", "", nil)
	if strings.Contains(page, "compose lab") {
		t.Error("the native switchboard talks about the compose lab")
	}
}
