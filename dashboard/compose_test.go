package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"microlab/services/platform/control"
	"microlab/services/platform/testenv"
)

// In the compose lab the settings `lab up` applies say what to run instead: the
// topology switch is refused (409, nothing stored), a scale setting is stored with the
// docker compose command that applies it, and the switchboard says both. Natively
// neither note appears.
func TestComposeModeSaysWhatLabUpWouldDo(t *testing.T) {
	t.Parallel()
	_, store := testenv.LabDB(t, testenv.Name("t_dash_"))
	f := newFixture(t, map[string]string{"DEPLOYMENT_ENVIRONMENT": "compose", "RABBITMQ_MANAGEMENT_URL": closedURL(t)}, Sources{}, store)
	l := &controlLab{fixture: f, store: store}
	ctx := context.Background()

	code, body := l.call(t, "POST", "/api/lab/settings", `{"key":"db.topology","value":"shared"}`)
	var eb errorJSON
	_ = json.Unmarshal([]byte(body), &eb)
	if code != 409 || eb.Error.Code != "not_in_compose" || !strings.Contains(eb.Error.Message, "go run ./lab up") {
		t.Errorf("db.topology in compose: %d %s; want 409 not_in_compose naming the native lab", code, body)
	}
	if st, _ := store.Load(ctx); st.Get(control.DBTopology) != "per-service" {
		t.Errorf("the refused switch was stored: db.topology=%s", st.Get(control.DBTopology))
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
	for key, say := range map[string]string{"db.topology": "cannot switch in the compose lab", "scale.shipping": want} {
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
