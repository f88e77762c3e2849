package docs

import (
	"strings"
	"testing"

	"microlab/lab/stack"
)

// fakeRepo is a repository of a few files, for the checkers' own tests.
type fakeRepo map[string]bool // path → is a directory

func (f fakeRepo) exists(p string) (bool, bool) { d, ok := f[p]; return d, ok }

func (f fakeRepo) glob(pattern string) []string {
	var out []string
	for p := range f {
		if ok, _ := pathMatch(pattern, p); ok {
			out = append(out, p)
		}
	}
	return out
}

func pathMatch(pattern, p string) (bool, error) {
	pp, ps := strings.Split(pattern, "/"), strings.Split(p, "/")
	if len(pp) != len(ps) {
		return false, nil
	}
	for i := range pp {
		if pp[i] == "*" || pp[i] == ps[i] || strings.HasPrefix(pp[i], "*") && strings.HasSuffix(ps[i], pp[i][1:]) {
			continue
		}
		return false, nil
	}
	return true, nil
}

var fake = fakeRepo{
	"docs": true, "docs/a.md": false, "docs/patterns": true, "docs/patterns/outbox.md": false,
	"services": true, "services/platform": true, "services/platform/outbox": true,
	"services/platform/outbox/outbox.go": false, "lab": true, "lab/stack": true, "lab/stack/stack.go": false,
	"exercises": true, "exercises/07-outbox": true, "exercises/07-outbox/README.md": false,
	"README.md": false,
}

// The checkers must catch what they exist to catch, and pass what is right.
func TestLinkAndPathCheckersCatch(t *testing.T) {
	t.Parallel()
	pages := map[string]*page{
		"docs/a.md": parsePage("docs/a.md", []byte("# A page\n\n## Step two: `x`\n")),
	}
	for _, tc := range []struct {
		md   string
		want string // "" = no problem
	}{
		{"[ok](a.md)", ""},
		{"[ok](a.md#a-page)", ""},
		{"[ok](a.md#step-two-x)", ""},
		{"[ok](#b)", ""},
		{"[ok](../services/platform/outbox/outbox.go#L10)", ""},
		{"[ok](../services/platform/outbox/)", ""},
		{"[web](https://example.com/x.md) [dash](http://localhost:8080/sagas)", ""},
		{"[bad](nope.md)", "no file docs/nope.md"},
		{"[bad](a.md#no-such-heading)", "no heading with anchor #no-such-heading"},
		{"[bad](../../outside.md)", "leaves the repository"},
		{"[bad](/docs/a.md)", "absolute paths"},
		{"`services/platform/outbox/outbox.go` `lab/stack.Services` `services/platform/*/outbox.go`", ""},
		{"`go run ./lab up` `services/<name>` `platform/outbox` `a/b`", ""},
		{"`services/platform/outbox/relay.go`", "no such file"},
		{"`compose/docker-compose.yml`", "no such file"},
		{"`lab/nostack.Services`", "no such file"},
		{"`services/*/nothing.go`", "nothing in the repository matches"},
	} {
		pg := parsePage("docs/b.md", []byte("# B\n\n"+tc.md+"\n"))
		pages["docs/b.md"] = pg
		problems := append(checkLinks(pg, pages, fake), checkPaths(pg, fake)...)
		got := strings.Join(problems, "\n")
		switch {
		case tc.want == "" && got != "":
			t.Errorf("%s: unexpected problems:\n%s", tc.md, got)
		case tc.want != "" && !strings.Contains(got, tc.want):
			t.Errorf("%s: want a problem with %q, got %q", tc.md, tc.want, got)
		}
	}
}

func TestGitHubSlugs(t *testing.T) {
	t.Parallel()
	pg := parsePage("x.md", []byte("# Overview (`/`)\n## Saga: choreography & compensations\n## Overview (`/`)\n## Ports, 8000–8107\n"))
	want := []string{"overview-", "saga-choreography--compensations", "overview--1", "ports-80008107"}
	if strings.Join(pg.anchors, " ") != strings.Join(want, " ") {
		t.Errorf("anchors %q, want %q", pg.anchors, want)
	}
}

func TestPatternLinkCheckerCatches(t *testing.T) {
	t.Parallel()
	build := func(readme, index, exercise string) map[string]*page {
		pages := map[string]*page{
			"README.md":                     parsePage("README.md", []byte(readme)),
			"docs/patterns/README.md":       parsePage("docs/patterns/README.md", []byte(index)),
			"docs/patterns/outbox.md":       parsePage("docs/patterns/outbox.md", []byte("# Outbox\n")),
			"exercises/07-outbox/README.md": parsePage("exercises/07-outbox/README.md", []byte(exercise)),
		}
		f := fakeRepo{"README.md": false, "docs/patterns/README.md": false, "docs/patterns/outbox.md": false,
			"exercises/07-outbox/README.md": false}
		for _, p := range pages {
			checkLinks(p, pages, f)
		}
		return pages
	}
	good := build("[o](docs/patterns/outbox.md)", "[o](outbox.md)", "[o](../../docs/patterns/outbox.md)")
	if p := checkPatternLinks(good); len(p) != 0 {
		t.Errorf("linked both ways, yet: %q", p)
	}
	for name, tc := range map[string]struct {
		pages map[string]*page
		want  string
	}{
		"README":   {build("none", "[o](outbox.md)", "[o](../../docs/patterns/outbox.md)"), "README.md does not link"},
		"index":    {build("[o](docs/patterns/outbox.md)", "none", "[o](../../docs/patterns/outbox.md)"), "the index) does not link"},
		"exercise": {build("[o](docs/patterns/outbox.md)", "[o](outbox.md)", "none"), "links no pattern page"},
	} {
		if got := strings.Join(checkPatternLinks(tc.pages), "\n"); !strings.Contains(got, tc.want) {
			t.Errorf("%s: want %q, got %q", name, tc.want, got)
		}
	}
}

func TestDiagramCheckerCatches(t *testing.T) {
	t.Parallel()
	services := []stack.Service{{Name: "gateway", Upstreams: []string{"orders"}}, {Name: "orders"}, {Name: "payments"}}
	exchanges := []string{"shop.events", "lab.control"}
	const good = `flowchart LR
  browser([browser]) -->|REST /api/v1| gateway
  gateway -->|HTTP| orders
  payments["payments"]
  ev{{"shop.events"}}
  ctl{{"lab.control"}}
  orders -.->|publish| ev
  ev -.->|deliver| payments
`
	if p := checkDiagram(good, services, exchanges); len(p) != 0 {
		t.Errorf("a right diagram fails: %q", p)
	}
	if got := strings.Join(checkDiagram(good, append(services, stack.Service{Name: "users"}), exchanges), "\n"); !strings.Contains(got, "service users") {
		t.Errorf("a service missing from the diagram passes: %q", got)
	}
	for _, tc := range []struct{ diagram, want string }{
		{strings.Replace(good, "  gateway -->|HTTP| orders\n", "", 1), "missing arrow gateway -->|HTTP| orders"},
		{good + "  gateway -->|HTTP| payments\n", "gateway has no upstream payments"},
		{good + "  orders -->|publish| payments\n", "joins two services without HTTP"},
		{good + "  x{{\"shop.nothing\"}}\n", "exchange shop.nothing is not one of"},
		{strings.Replace(good, `ctl{{"lab.control"}}`, "", 1), "exchange lab.control (services/contracts) is not in the diagram"},
		{good + "  orders -- publishes --> ev\n", "write arrows as"},
		{good + "  orders -.->|publish| ev -.->|deliver| payments\n", "one arrow a line"},
	} {
		if got := strings.Join(checkDiagram(tc.diagram, services, exchanges), "\n"); !strings.Contains(got, tc.want) {
			t.Errorf("want %q, got %q", tc.want, got)
		}
	}
}

func TestPatternPageCheckerCatches(t *testing.T) {
	t.Parallel()
	const full = "# P\n\n[ex](../../exercises/07-outbox/README.md) [code](../../services/platform/outbox/outbox.go)\n\n" +
		"## What it is\n## When to use it, and when not\n## How microlab implements it\n## What to watch\n## Trade-offs and failure modes\n"
	check := func(md string) string {
		pg := parsePage("docs/patterns/outbox.md", []byte(md))
		checkLinks(pg, map[string]*page{}, fake)
		return strings.Join(checkPatternPage(pg), "\n")
	}
	if got := check(full); got != "" {
		t.Errorf("a complete page fails: %s", got)
	}
	for _, tc := range []struct{ md, want string }{
		{strings.Replace(full, "## What to watch\n", "", 1), "no section #what-to-watch"},
		{strings.Replace(full, "[ex](../../exercises/07-outbox/README.md)", "", 1), "links no exercise"},
		{strings.Replace(full, "[code](../../services/platform/outbox/outbox.go)", "", 1), "links no file of the code"},
	} {
		if got := check(tc.md); !strings.Contains(got, tc.want) {
			t.Errorf("want %q, got %q", tc.want, got)
		}
	}
}
