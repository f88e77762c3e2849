package stack

import (
	"bytes"
	"os"
	"testing"
	"time"
)

// The progress line, driven by ticks and a clock of the test's own: a line per tick
// where \r would pile up (logs, CI), one line rewritten in place on a terminal.
func TestProgressLines(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		live bool
		ok   bool
		want string
	}{
		{false, true, "building Jaeger…\n" +
			"building Jaeger: 15s\n" +
			"building Jaeger: 1m12s\n" +
			"building Jaeger: done in 1m12.3s\n"},
		{true, true, "\rbuilding Jaeger: 0s" +
			"\rbuilding Jaeger: 15s" +
			"\rbuilding Jaeger: 1m12s" +
			"\rbuilding Jaeger: done in 1m12.3s\n"},
		{false, false, "building Jaeger…\n" +
			"building Jaeger: 15s\n" +
			"building Jaeger: 1m12s\n" +
			"building Jaeger: failed after 1m12.3s\n"},
	} {
		var out bytes.Buffer
		clock := start
		ticks := make(chan time.Time) // unbuffered: a send returns once the line printer has it
		p := startProgress(&out, "building Jaeger", tc.live, func() time.Time { return clock }, ticks)
		ticks <- start.Add(15*time.Second + 200*time.Millisecond)
		ticks <- start.Add(72 * time.Second)
		clock = start.Add(72*time.Second + 300*time.Millisecond)
		p.Stop(tc.ok)
		if got := out.String(); got != tc.want {
			t.Errorf("live %v, ok %v:\n got %q\nwant %q", tc.live, tc.ok, got, tc.want)
		}
		n := out.Len()
		time.Sleep(10 * time.Millisecond) // nothing may print after Stop returns
		if out.Len() != n {
			t.Errorf("printed after Stop: %q", out.String()[n:])
		}
	}
}

// StartProgress writes plain lines to anything that is not a terminal: a file here.
func TestStartProgressPlainOffTerminal(t *testing.T) {
	t.Parallel()
	f, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := StartProgress(f, "building the services")
	p.Stop(true)
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if got := string(b); bytes.ContainsRune(b, '\r') || !bytes.HasPrefix(b, []byte("building the services…\nbuilding the services: done in ")) {
		t.Errorf("output %q", got)
	}
}
