package main

import (
	"io/fs"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"golang.org/x/net/html"

	"microlab/services/platform/httpx"
)

// TestLinksInTextsAnswer is "the dashboard never links to something that is not
// running", for the texts it shows: every exercise's page and every page under docs/
// (as the disk has them, so a page the dashboard does not embed fails too) are rendered
// by a real dashboard, and every same-origin href and src in them — the texts' links,
// the layout's, the images — is asked for: each answers 200, and a #fragment names an
// element of the page it points into.
func TestLinksInTextsAnswer(t *testing.T) {
	t.Parallel()
	list := builtin(t)
	f := newExerciseLab(t, list).fixture
	var pages []string
	for _, ex := range list {
		pages = append(pages, "/exercises/"+ex.ID)
	}
	err := fs.WalkDir(os.DirFS("../docs"), ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".md") {
			pages = append(pages, "/docs/"+p)
		}
		return err
	})
	if err != nil || len(pages) < len(list)+10 {
		t.Fatalf("docs/: %v (%d pages)", err, len(pages)-len(list))
	}
	pages = append(pages, "/docs/") // the nav's entry
	lc := newLinkChecker(t, f)
	for _, p := range pages {
		doc, ok := lc.page(p)
		if !ok {
			t.Errorf("%s: %s", p, lc.failed[p])
			continue
		}
		for _, ref := range refs(doc) {
			if problem := lc.check(p, ref); problem != "" {
				t.Errorf("%s: %s", p, problem)
			}
		}
	}
	if lc.asked < 100 {
		t.Errorf("only %d links asked for: the pages lost their links", lc.asked)
	}
}

// linkChecker asks the dashboard for each URL once.
type linkChecker struct {
	t      *testing.T
	f      *fixture
	base   *url.URL
	docs   map[string]*html.Node // path → parsed page (HTML answers)
	failed map[string]string     // path → why it does not answer
	asked  int
}

func newLinkChecker(t *testing.T, f *fixture) *linkChecker {
	base, err := url.Parse(f.ts.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	return &linkChecker{t: t, f: f, base: base, docs: map[string]*html.Node{}, failed: map[string]string{}}
}

// page GETs p (a path and query), parsed if it is HTML; false if it does not answer 200.
func (lc *linkChecker) page(p string) (*html.Node, bool) {
	if doc, ok := lc.docs[p]; ok {
		return doc, true
	}
	if _, ok := lc.failed[p]; ok {
		return nil, false
	}
	resp, body := lc.f.do(lc.t, "GET", p, "", nil)
	if resp.StatusCode != 200 {
		lc.failed[p] = resp.Status + ": " + strings.TrimSpace(body[:min(len(body), 200)])
		return nil, false
	}
	var doc *html.Node
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		var err error
		if doc, err = html.Parse(strings.NewReader(body)); err != nil {
			lc.t.Fatalf("%s: %v", p, err)
		}
	}
	lc.docs[p] = doc
	return doc, true
}

// check asks for ref, found on page from; "" if it answers (or is not the dashboard's).
func (lc *linkChecker) check(from, ref string) string {
	pu, err := lc.base.Parse(from)
	if err != nil {
		return err.Error()
	}
	u, err := pu.Parse(ref)
	if err != nil {
		return "link " + ref + ": " + err.Error()
	}
	if u.Scheme != lc.base.Scheme || u.Host != lc.base.Host {
		return "" // not the dashboard's: TestExerciseTextsNameWhatExists holds those to the lab
	}
	lc.asked++
	target := u.EscapedPath()
	if u.RawQuery != "" {
		target += "?" + u.RawQuery
	}
	doc, ok := lc.page(target)
	if !ok {
		return "link " + ref + ": " + lc.failed[target]
	}
	if u.Fragment == "" {
		return ""
	}
	if doc == nil || !hasID(doc, u.Fragment) {
		return "link " + ref + ": " + target + " has no element with id " + u.Fragment
	}
	return ""
}

// refs are the href and src attributes of a page's links, images, scripts and
// stylesheets.
func refs(doc *html.Node) []string {
	var out []string
	for n := range doc.Descendants() {
		if n.Type != html.ElementNode || !slices.Contains([]string{"a", "img", "script", "link"}, n.Data) {
			continue
		}
		for _, a := range n.Attr {
			if a.Key == "href" || a.Key == "src" {
				out = append(out, a.Val)
			}
		}
	}
	return out
}

func hasID(doc *html.Node, id string) bool {
	for n := range doc.Descendants() {
		for _, a := range n.Attr {
			if a.Key == "id" && a.Val == id {
				return true
			}
		}
	}
	return false
}

// The checker must catch what it exists to catch: a page that is not served, an anchor
// that is not on its page.
func TestLinkCheckerCatches(t *testing.T) {
	t.Parallel()
	f := newFixture(t, map[string]string{"PROMETHEUS_URL": closedURL(t), "RABBITMQ_MANAGEMENT_URL": closedURL(t)}, Sources{}, nil)
	lc := newLinkChecker(t, f)
	for _, c := range []struct{ from, ref string }{
		{"/docs/patterns/outbox.md", "../no-such-page.md"},
		{"/docs/patterns/outbox.md", "../../services/platform/outbox/outbox.go"},
		{"/docs/patterns/outbox.md", "#no-such-heading"},
		{"/", "/docs/architecture.md#no-such-heading"},
		{"/", "/static/no-such.js"},
	} {
		if problem := lc.check(c.from, c.ref); problem == "" {
			t.Errorf("%s on %s passes the checker", c.ref, c.from)
		}
	}
	for _, c := range []struct{ from, ref string }{
		{"/", "https://example.com/elsewhere"}, // not the dashboard's
		{"/", "/switchboard"},
		{"/docs/patterns/outbox.md", "../architecture.md"},
		{"/docs/patterns/outbox.md", "/exercises"},
	} {
		if problem := lc.check(c.from, c.ref); problem != "" {
			t.Errorf("%s on %s: %s", c.ref, c.from, problem)
		}
	}
}

// siteLink maps the links written for GitHub to what the dashboard serves, or to the
// repository path it cannot serve.
func TestSiteLinks(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ at, dest, href, repo string }{
		{"exercises/07-outbox/README.md", "../../docs/patterns/outbox.md", "/docs/patterns/outbox.md", ""},
		{"exercises/07-outbox/README.md", "../../docs/architecture.md#the-outbox", "/docs/architecture.md#the-outbox", ""},
		{"exercises/07-outbox/README.md", "../01-follow-an-order/README.md", "/exercises/01-follow-an-order", ""},
		{"exercises/07-outbox/exercise.yaml", "../01-follow-an-order/", "/exercises/01-follow-an-order", ""},
		{"docs/patterns/outbox.md", "../../exercises/07-outbox/README.md#what-to-do", "/exercises/07-outbox#what-to-do", ""},
		{"docs/patterns/outbox.md", "idempotent-consumer.md", "/docs/patterns/idempotent-consumer.md", ""},
		{"docs/architecture.md", "patterns/", "/docs/patterns/README.md", ""},
		{"exercises/07-outbox/README.md", "../../docs/", "/docs/", ""},
		{"docs/architecture.md", "#topology", "#topology", ""},
		{"docs/architecture.md", "http://localhost:16686/search", "http://localhost:16686/search", ""},
		{"docs/architecture.md", "/traces", "/traces", ""},
		// Not served: the repository path.
		{"docs/patterns/outbox.md", "../../services/platform/outbox/outbox.go", "", "services/platform/outbox/outbox.go"},
		{"docs/patterns/outbox.md", "../../services/orders/saga/", "", "services/orders/saga/"},
		{"docs/operations.md", "../README.md", "", "README.md"},
		{"docs/operations.md", "benchmarks.json", "", "docs/benchmarks.json"},
		{"docs/operations.md", "no-such-page.md", "", "docs/no-such-page.md"},
		{"exercises/07-outbox/README.md", "exercise.yaml", "", "exercises/07-outbox/exercise.yaml"},
		{"exercises/07-outbox/README.md", "../99-no-such/README.md", "", "exercises/99-no-such/README.md"},
	} {
		href, repo, ok := siteLink(c.at, c.dest)
		if href != c.href || repo != c.repo || ok != (c.repo == "") {
			t.Errorf("siteLink(%q, %q) = %q, %q, %v; want %q, %q", c.at, c.dest, href, repo, ok, c.href, c.repo)
		}
	}
}

// Rendered: a link to a repository file is its path as code, titled; the link's own
// text stays unless it is the path in backticks; headings get GitHub's ids, repeated
// ones numbered; the first heading is the title.
func TestRenderMarkdownAt(t *testing.T) {
	t.Parallel()
	src := "# The `outbox` table, and_why\n\n" +
		"See [`services/platform/outbox/outbox.go`](../services/platform/outbox/outbox.go), " +
		"[the relay](../services/platform/outbox/outbox.go), ![a diagram](../nowhere.png) and " +
		"[the page](patterns/outbox.md#what-it-is).\n\n## Steps\n\n## Steps\n"
	out, title := renderMarkdownAt(src, "docs/architecture.md")
	code := `<code class="repo-path" title="in the repository">services/platform/outbox/outbox.go</code>`
	for _, want := range []string{
		`<h1 id="the-outbox-table-and_why">`,
		"See " + code + ", the relay (" + code + "), a diagram (" + `<code class="repo-path" title="in the repository">nowhere.png</code>)`,
		`<a href="/docs/patterns/outbox.md#what-it-is">the page</a>`,
		`<h2 id="steps">Steps</h2>`, `<h2 id="steps-1">Steps</h2>`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %s in\n%s", want, out)
		}
	}
	if title != "The outbox table, and_why" {
		t.Errorf("title %q", title)
	}
	// Without a path (a line the engine wrote), nothing is rewritten.
	if out := renderInline("[x](../y.go)"); out != `<a href="../y.go">x</a>` {
		t.Errorf("renderInline: %s", out)
	}
}

// Images are served as files; what is not a page or a file of docs/ is the dashboard's
// 404, and nothing outside docs/ is reachable.
func TestDocsServeFilesAndRefuseTheRest(t *testing.T) {
	t.Parallel()
	f := newFixture(t, map[string]string{"PROMETHEUS_URL": closedURL(t), "RABBITMQ_MANAGEMENT_URL": closedURL(t)}, Sources{}, nil)
	png := "\x89PNG\r\n\x1a\n not really"
	fsys := fstest.MapFS{"images/a.png": {Data: []byte(png)}, "patterns/README.md": {Data: []byte("# Index\n")},
		"x.md": {Data: []byte("no heading")}}
	for _, c := range []struct {
		path, ctype, location string
		code                  int
	}{
		{"images/a.png", "image/png", "", 200},
		{"x.md", "text/html; charset=utf-8", "", 200},
		{"", "", "/docs/patterns/README.md", 302},
		{"patterns", "", "/docs/patterns/README.md", 302},
		{"patterns/", "", "/docs/patterns/README.md", 302},
		{"images", "", "", 404},
		{"images/b.png", "", "", 404},
		{"../go.mod", "", "", 404},
		{"/etc/passwd", "", "", 404},
	} {
		w := httptest.NewRecorder()
		r := httptest.NewRequest("GET", "/docs/"+c.path, nil)
		if err := f.srv.serveDoc(w, r, fsys, c.path); err != nil {
			httpx.WriteError(w, r, quiet(), err)
		}
		if w.Code != c.code || w.Header().Get("Content-Type") != c.ctype && c.ctype != "" || w.Header().Get("Location") != c.location {
			t.Errorf("%q: %d %q %q, want %d %q %q", c.path, w.Code, w.Header().Get("Content-Type"), w.Header().Get("Location"),
				c.code, c.ctype, c.location)
		}
		if c.code == 404 && !strings.Contains(w.Body.String(), `"not_found"`) {
			t.Errorf("%q: not the dashboard's 404: %s", c.path, w.Body.String())
		}
		if c.path == "images/a.png" && w.Body.String() != png {
			t.Errorf("the image's bytes changed: %q", w.Body.String())
		}
		if c.path == "x.md" && !strings.Contains(w.Body.String(), "<title>x · microlab</title>") {
			t.Errorf("a page without a heading is titled by its name: %s", w.Body.String())
		}
	}
}
