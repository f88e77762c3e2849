package main

import "testing"

// A hint, what is missing and the hint after a wrong answer are one line of Markdown:
// rendered like the instructions (code spans, the dashboard's links made relative, raw
// HTML dropped), without the paragraph around it.
func TestRenderInline(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", ""},
		{"Give it 20 seconds.", "Give it 20 seconds."},
		{"the failed `process order.placed` span", "the failed <code>process order.placed</code> span"},
		{"In [Traces](http://localhost:8080/traces), filter", `In <a href="/traces">Traces</a>, filter`},
		{"a <b>bold</b> claim", "a <!-- raw HTML omitted -->bold<!-- raw HTML omitted --> claim"},
		{"one\n\ntwo", "<p>one</p>\n<p>two</p>"},
	} {
		if got := renderInline(c.in); got != c.want {
			t.Errorf("renderInline(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
