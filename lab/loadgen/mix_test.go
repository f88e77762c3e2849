package loadgen

import (
	"context"
	"strings"
	"testing"
)

func TestParseMix(t *testing.T) {
	m, err := ParseMix("ok=80, declined=10,oos=5,xx=5")
	if err != nil || m[OK] != 80 || m[Declined] != 10 || m[OOS] != 5 || m[XX] != 5 || m.String() != "ok=80,declined=10,oos=5,xx=5" {
		t.Fatalf("ParseMix: %v %v", m, err)
	}
	if m, err := ParseMix("declined=1"); err != nil || m.String() != "declined=1" {
		t.Fatalf("one outcome: %v %v", m, err)
	}
	for in, want := range map[string]string{
		"":                 "want outcome=weight",
		"ok":               "want outcome=weight",
		"ok=80,zz=1":       `unknown outcome "zz"`,
		"ok=-1":            "whole number",
		"ok=1.5":           "whole number",
		"ok=0,declined=0":  "every weight is 0",
		"ok=1,ok=2":        "given twice",
		"ok=1,declined=1x": "whole number",
	} {
		if _, err := ParseMix(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseMix(%q) = %v, want an error with %q", in, err, want)
		}
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]float64{"50/s": 50, "50": 50, "600/m": 10, "0.5/s": 0.5} {
		if got, err := ParseRate(in); err != nil || got != want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1/s", "fast", "50/h", "2001/s", "NaN"} {
		if _, err := ParseRate(in); err == nil {
			t.Errorf("ParseRate(%q) accepted", in)
		}
	}
}

// The picker deals the mix's shares exactly over every window of its total, and spreads
// the rare outcomes instead of bunching them.
func TestPickerDealsTheMix(t *testing.T) {
	m := Mix{OK: 80, Declined: 10, OOS: 5, XX: 5}
	p := newPicker(m)
	got := map[Outcome]int{}
	last := map[Outcome]int{}
	maxGap := 0
	for i := range 1000 {
		o := p.next()
		got[o]++
		if o == Declined {
			if i-last[o] > maxGap && last[o] > 0 {
				maxGap = i - last[o]
			}
			last[o] = i
		}
		if (i+1)%100 == 0 {
			for _, x := range Outcomes {
				if got[x] != m[x]*(i+1)/100 {
					t.Fatalf("after %d: %v, want the mix's shares %v", i+1, got, m)
				}
			}
		}
	}
	if maxGap > 15 {
		t.Errorf("declined orders bunch: a gap of %d orders, want about 10", maxGap)
	}
}

func TestCheckLocal(t *testing.T) {
	ctx := context.Background()
	for _, ok := range []string{"http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000"} {
		if err := CheckLocal(ctx, ok); err != nil {
			t.Errorf("CheckLocal(%s): %v", ok, err)
		}
	}
	for _, bad := range []string{"http://10.1.2.3:8000", "ftp://127.0.0.1", "127.0.0.1:8000", "http://"} {
		if err := CheckLocal(ctx, bad); err == nil {
			t.Errorf("CheckLocal(%s) accepted", bad)
		}
	}
}
