package control_test

import (
	"strings"
	"testing"

	"microlab/services/platform/control"
)

// The scale settings: one per queue consumer, 1 by default, 1 to MaxScale instances,
// anything else refused with the message every face (API, switchboard, lab settings)
// shows.
func TestScaleSettings(t *testing.T) {
	for _, svc := range control.ScaleServices {
		key := control.ScaleKey(svc)
		d, ok := control.Lookup(key)
		if !ok {
			t.Fatalf("no setting %s", key)
		}
		if d.Default != "1" {
			t.Errorf("%s defaults to %q, want 1", key, d.Default)
		}
		if got := control.Defaults().Scale(svc); got != 1 {
			t.Errorf("default Scale(%s) = %d, want 1", svc, got)
		}
	}
	for _, svc := range []string{"gateway", "users", "dashboard"} {
		if _, ok := control.Lookup(control.ScaleKey(svc)); ok {
			t.Errorf("a setting scale.%s exists: its callers know one URL, a second instance would serve nothing", svc)
		}
		if got := control.Defaults().Scale(svc); got != 1 {
			t.Errorf("Scale(%s) = %d, want 1", svc, got)
		}
	}
	for in, want := range map[string]string{"1": "1", " 2 ": "2", "9": "9"} {
		got, err := control.Validate("scale.shipping", in)
		if err != nil || got != want {
			t.Errorf("Validate(scale.shipping, %q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"0", "10", "-1", "two", "1.5", "", "env"} {
		_, err := control.Validate("scale.shipping", bad)
		if err == nil {
			t.Errorf("Validate(scale.shipping, %q) accepted", bad)
			continue
		}
		if want := `bad value "` + strings.TrimSpace(bad) + `" for scale.shipping: want a whole number from 1 to 9`; err.Error() != want {
			t.Errorf("Validate(scale.shipping, %q): %q, want %q", bad, err, want)
		}
	}
	if _, err := control.Validate("scale.gateway", "2"); err == nil || !strings.Contains(err.Error(), "unknown setting") {
		t.Errorf("scale.gateway: %v, want unknown setting", err)
	}
	s := control.Settings{Values: map[string]string{"scale.payments": "3"}}
	if s.Scale("payments") != 3 || s.Scale("shipping") != 1 {
		t.Errorf("Scale: payments %d, shipping %d; want 3 and 1", s.Scale("payments"), s.Scale("shipping"))
	}
}
