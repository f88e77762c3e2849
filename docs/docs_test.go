// The tests that keep the documentation true of the repository (the package's doc is
// in embed.go).

package docs

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/yuin/goldmark"
	mdast "github.com/yuin/goldmark/ast"
	"github.com/yuin/goldmark/extension"
	"github.com/yuin/goldmark/text"

	"microlab/lab/stack"
)

// root is the repository, seen from this package's directory.
const root = ".."

// topDirs are the repository's top-level directories: a code span starting with one of
// them and containing a slash is a path the page cites. compose/ is listed although it
// may not exist yet, so a page citing it fails until it does.
var topDirs = []string{"services", "lab", "dashboard", "exercises", "observability", "compose",
	"docs", "scripts", "tools"}

// page is one Markdown file, parsed.
type page struct {
	path     string   // slash-separated, relative to the repository root
	links    []string // link and image destinations as written
	code     []string // code span texts
	anchors  []string // GitHub's anchors of its headings
	mermaid  []string // the bodies of its ```mermaid blocks
	resolved []string // links resolved to repository paths (no fragment), filled by checkLinks
}

// parsePage parses src as GitHub renders it (GFM) and collects what the checks need.
func parsePage(p string, src []byte) *page {
	pg := &page{path: p}
	doc := goldmark.New(goldmark.WithExtensions(extension.GFM)).Parser().Parse(text.NewReader(src))
	seen := map[string]int{}
	_ = mdast.Walk(doc, func(n mdast.Node, entering bool) (mdast.WalkStatus, error) {
		if !entering {
			return mdast.WalkContinue, nil
		}
		switch n := n.(type) {
		case *mdast.Link:
			pg.links = append(pg.links, string(n.Destination))
		case *mdast.Image:
			pg.links = append(pg.links, string(n.Destination))
		case *mdast.CodeSpan:
			pg.code = append(pg.code, HeadingText(n, src))
		case *mdast.Heading:
			slug := HeadingID(HeadingText(n, src))
			// GitHub numbers repeated headings: overview, overview-1, overview-2.
			if k := seen[slug]; k > 0 {
				pg.anchors = append(pg.anchors, slug+"-"+strconv.Itoa(k))
			} else {
				pg.anchors = append(pg.anchors, slug)
			}
			seen[slug]++
		case *mdast.FencedCodeBlock:
			if string(n.Language(src)) == "mermaid" {
				var sb strings.Builder
				for i := 0; i < n.Lines().Len(); i++ {
					seg := n.Lines().At(i)
					sb.Write(seg.Value(src))
				}
				pg.mermaid = append(pg.mermaid, sb.String())
			}
		}
		return mdast.WalkContinue, nil
	})
	return pg
}

// docPages are the pages a learner reads on GitHub: the README, everything under docs/
// and every exercise's README.
func docPages(t *testing.T) map[string]*page {
	t.Helper()
	var paths []string
	paths = append(paths, "README.md")
	err := filepath.WalkDir(filepath.Join(root, "docs"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".md") {
			return err
		}
		rel, err := filepath.Rel(root, p)
		paths = append(paths, filepath.ToSlash(rel))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	ex, err := filepath.Glob(filepath.Join(root, "exercises", "*", "README.md"))
	if err != nil || len(ex) == 0 {
		t.Fatalf("no exercise READMEs: %v", err)
	}
	for _, p := range ex {
		rel, _ := filepath.Rel(root, p)
		paths = append(paths, filepath.ToSlash(rel))
	}
	pages := map[string]*page{}
	for _, p := range paths {
		b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(p)))
		if err != nil {
			t.Fatal(err)
		}
		pages[p] = parsePage(p, b)
	}
	return pages
}

// repo answers questions about the repository's files; tests give it a fake one.
type repo interface {
	exists(p string) (isDir, ok bool)
	glob(pattern string) []string
}

type diskRepo struct{}

func (diskRepo) exists(p string) (bool, bool) {
	fi, err := os.Stat(filepath.Join(root, filepath.FromSlash(p)))
	if err != nil {
		return false, false
	}
	return fi.IsDir(), true
}

func (diskRepo) glob(pattern string) []string {
	m, _ := filepath.Glob(filepath.Join(root, filepath.FromSlash(pattern)))
	return m
}

// checkLinks resolves every relative link of pg: the file (or directory) exists inside
// the repository, and a #fragment names a heading of the Markdown file it points at.
// Links with a scheme or a host (Jaeger, Grafana, the dashboard, the web) are not
// files and are left alone.
func checkLinks(pg *page, pages map[string]*page, r repo) []string {
	var problems []string
	for _, dest := range pg.links {
		u, err := url.Parse(dest)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: link %q: %v", pg.path, dest, err))
			continue
		}
		if u.Scheme != "" || u.Host != "" {
			continue
		}
		target := pg.path
		if u.Path != "" {
			if strings.HasPrefix(u.Path, "/") {
				problems = append(problems, fmt.Sprintf("%s: link %q: absolute paths break outside GitHub; make it relative", pg.path, dest))
				continue
			}
			target = path.Join(path.Dir(pg.path), u.Path)
			if target == ".." || strings.HasPrefix(target, "../") {
				problems = append(problems, fmt.Sprintf("%s: link %q leaves the repository", pg.path, dest))
				continue
			}
			if _, ok := r.exists(target); !ok {
				problems = append(problems, fmt.Sprintf("%s: link %q: no file %s", pg.path, dest, target))
				continue
			}
			pg.resolved = append(pg.resolved, target)
		}
		if u.Fragment == "" || strings.HasPrefix(u.Fragment, "L") && isLineRef(u.Fragment) {
			continue
		}
		tp, ok := pages[target]
		if !ok {
			if !strings.HasSuffix(target, ".md") {
				continue // a fragment into a non-Markdown file is GitHub's business
			}
			problems = append(problems, fmt.Sprintf("%s: link %q: %s is not a page this test reads", pg.path, dest, target))
			continue
		}
		if !slices.Contains(tp.anchors, u.Fragment) {
			problems = append(problems, fmt.Sprintf("%s: link %q: %s has no heading with anchor #%s (it has: %s)",
				pg.path, dest, target, u.Fragment, strings.Join(tp.anchors, ", ")))
		}
	}
	return problems
}

var lineRef = regexp.MustCompile(`^L\d+(-L\d+)?$`)

func isLineRef(f string) bool { return lineRef.MatchString(f) }

// goIdent matches "lab/stack.Services": a package's directory, then an exported name.
var goIdent = regexp.MustCompile(`^(.+)\.([A-Z][A-Za-z0-9]*(\.[A-Za-z0-9]+)?)$`)

// checkPaths: every code span that cites a repository path (it starts with one of
// topDirs and contains a slash) names something that exists: a file, a directory, a
// glob with a match, or a Go package directory followed by an exported name
// (`lab/stack.Services`). Spans with spaces or placeholders (`services/<name>`) are
// prose or commands, not paths.
func checkPaths(pg *page, r repo) []string {
	var problems []string
	for _, c := range pg.code {
		p := strings.Join(strings.Fields(c), " ") // a code span may wrap a line
		first, _, ok := strings.Cut(p, "/")
		if !ok || !slices.Contains(topDirs, first) || strings.ContainsAny(p, " <>{}…$|=") {
			continue
		}
		p = strings.TrimPrefix(p, "./")
		p = strings.TrimSuffix(p, "/")
		if strings.ContainsAny(p, "*?[") {
			if len(r.glob(p)) == 0 {
				problems = append(problems, fmt.Sprintf("%s: `%s`: nothing in the repository matches", pg.path, c))
			}
			continue
		}
		if _, ok := r.exists(p); ok {
			continue
		}
		if m := goIdent.FindStringSubmatch(p); m != nil {
			if isDir, ok := r.exists(m[1]); ok && isDir {
				continue
			}
		}
		problems = append(problems, fmt.Sprintf("%s: `%s`: no such file or directory in the repository", pg.path, c))
	}
	return problems
}

// TestLinksAndPathsResolve: every relative link in README.md, docs/**/*.md and the
// exercises' READMEs leads to a file of the repository (and its #anchor to a heading
// there), and every path a page cites in backticks exists.
func TestLinksAndPathsResolve(t *testing.T) {
	t.Parallel()
	pages := docPages(t)
	for _, p := range sortedKeys(pages) {
		for _, problem := range checkLinks(pages[p], pages, diskRepo{}) {
			t.Error(problem)
		}
		for _, problem := range checkPaths(pages[p], diskRepo{}) {
			t.Error(problem)
		}
	}
}

// checkPatternLinks: every pattern page (docs/patterns/*.md but its index) is linked
// from README.md, from the index and from at least one exercise README, and every
// exercise README links at least one pattern page. pages must have been through
// checkLinks (resolved).
func checkPatternLinks(pages map[string]*page) []string {
	var patterns, exercises []string
	for _, p := range sortedKeys(pages) {
		switch {
		case strings.HasPrefix(p, "docs/patterns/") && p != "docs/patterns/README.md":
			patterns = append(patterns, p)
		case strings.HasPrefix(p, "exercises/"):
			exercises = append(exercises, p)
		}
	}
	var problems []string
	if len(patterns) == 0 {
		problems = append(problems, "no pattern pages under docs/patterns/")
	}
	linksTo := func(from, to string) bool { pg := pages[from]; return pg != nil && slices.Contains(pg.resolved, to) }
	for _, pat := range patterns {
		if !linksTo("README.md", pat) {
			problems = append(problems, fmt.Sprintf("README.md does not link %s", pat))
		}
		if !linksTo("docs/patterns/README.md", pat) {
			problems = append(problems, fmt.Sprintf("docs/patterns/README.md (the index) does not link %s", pat))
		}
		if !slices.ContainsFunc(exercises, func(ex string) bool { return linksTo(ex, pat) }) {
			problems = append(problems, fmt.Sprintf("no exercise README links %s: which exercise teaches it?", pat))
		}
	}
	for _, ex := range exercises {
		if !slices.ContainsFunc(patterns, func(pat string) bool { return linksTo(ex, pat) }) {
			problems = append(problems, fmt.Sprintf("%s links no pattern page (docs/patterns/)", ex))
		}
	}
	return problems
}

// TestPatternPagesAreLinkedBothWays: a pattern page nobody links is a page nobody
// reads, and an exercise that does not say where to read more leaves its learner at the
// end of its README.
func TestPatternPagesAreLinkedBothWays(t *testing.T) {
	t.Parallel()
	pages := docPages(t)
	for _, p := range pages {
		checkLinks(p, pages, diskRepo{}) // resolves; broken links fail TestLinksAndPathsResolve
	}
	for _, problem := range checkPatternLinks(pages) {
		t.Error(problem)
	}
}

// patternSections are the headings every pattern page has, in this order: a learner
// finds the same answer in the same place on every page.
var patternSections = []string{"what-it-is", "when-to-use-it-and-when-not", "how-microlab-implements-it",
	"what-to-watch", "trade-offs-and-failure-modes"}

// checkPatternPage: a pattern page has the sections, and links the exercise that
// teaches it and at least one file of the code that implements it.
func checkPatternPage(pg *page) []string {
	var problems []string
	i := 0
	for _, a := range pg.anchors {
		if i < len(patternSections) && a == patternSections[i] {
			i++
		}
	}
	if i < len(patternSections) {
		problems = append(problems, fmt.Sprintf("%s: no section #%s (want, in order: %s)", pg.path, patternSections[i], strings.Join(patternSections, ", ")))
	}
	if !slices.ContainsFunc(pg.resolved, func(p string) bool { return strings.HasPrefix(p, "exercises/") }) {
		problems = append(problems, fmt.Sprintf("%s links no exercise", pg.path))
	}
	if !slices.ContainsFunc(pg.resolved, func(p string) bool {
		first, _, _ := strings.Cut(p, "/")
		return first != "docs" && first != "exercises" && first != "README.md"
	}) {
		problems = append(problems, fmt.Sprintf("%s links no file of the code that implements it", pg.path))
	}
	return problems
}

// TestPatternPagesHaveTheirSections: every pattern page answers the same questions.
func TestPatternPagesHaveTheirSections(t *testing.T) {
	t.Parallel()
	pages := docPages(t)
	for _, p := range sortedKeys(pages) {
		checkLinks(pages[p], pages, diskRepo{})
	}
	for _, p := range sortedKeys(pages) {
		if strings.HasPrefix(p, "docs/patterns/") && p != "docs/patterns/README.md" {
			for _, problem := range checkPatternPage(pages[p]) {
				t.Error(problem)
			}
		}
	}
}

// edge is one arrow of the diagram.
type edge struct{ from, label, to string }

var (
	// An arrow as the diagram writes them: a --> b, a -.-> b, a ==> b, with an optional
	// |label| after the arrow. Node shapes may follow an id (a[...], a{{...}}).
	arrowLine = regexp.MustCompile(`^\s*([A-Za-z][A-Za-z0-9_]*)(?:[\[({].*?[\])}])?\s*(-->|-\.->|==>)\s*(?:\|([^|]*)\|)?\s*([A-Za-z][A-Za-z0-9_]*)`)
	anyArrow  = regexp.MustCompile(`--|==|-\.`)
	nodeDef   = regexp.MustCompile(`(?:^|\s|&)([A-Za-z][A-Za-z0-9_]*)\s*[\[({]`)
	exchName  = regexp.MustCompile(`\b(?:shop|lab)\.[a-z]+\b`)
)

// parseDiagram reads a Mermaid flowchart's nodes, arrows and the exchange names in it.
// A line with an arrow this reader cannot parse is reported: the check must see every
// edge.
func parseDiagram(src string) (nodes map[string]bool, edges []edge, exchanges []string, problems []string) {
	nodes = map[string]bool{}
	for l := range strings.Lines(src) {
		line := strings.TrimSpace(l)
		if line == "" || strings.HasPrefix(line, "%%") || strings.HasPrefix(line, "flowchart") ||
			strings.HasPrefix(line, "classDef") || strings.HasPrefix(line, "class ") || strings.HasPrefix(line, "style ") ||
			strings.HasPrefix(line, "linkStyle") {
			continue
		}
		for _, m := range exchName.FindAllString(line, -1) {
			if !slices.Contains(exchanges, m) {
				exchanges = append(exchanges, m)
			}
		}
		if strings.HasPrefix(line, "subgraph") || line == "end" || line == "direction LR" || line == "direction TB" {
			if f := strings.Fields(line); len(f) > 1 && f[0] == "subgraph" {
				id, _, _ := strings.Cut(f[1], "[")
				nodes[id] = true
			}
			continue
		}
		if m := arrowLine.FindStringSubmatch(line); m != nil {
			if rest := line[len(m[0]):]; anyArrow.MatchString(stripLabels(rest)) {
				problems = append(problems, fmt.Sprintf("diagram line %q: one arrow a line, so the check sees every edge", line))
				continue
			}
			edges = append(edges, edge{from: m[1], label: strings.Trim(strings.TrimSpace(m[3]), `"`), to: m[4]})
			nodes[m[1]], nodes[m[4]] = true, true
			continue
		}
		if anyArrow.MatchString(stripLabels(line)) {
			problems = append(problems, fmt.Sprintf("diagram line %q: write arrows as `a -->|label| b`, one a line", line))
			continue
		}
		for _, m := range nodeDef.FindAllStringSubmatch(line, -1) {
			nodes[m[1]] = true
		}
	}
	return nodes, edges, exchanges, problems
}

// stripLabels removes quoted and bracketed text (node labels may contain dashes).
func stripLabels(line string) string {
	return regexp.MustCompile(`"[^"]*"|\[[^\]]*\]|\{[^}]*\}|\([^)]*\)`).ReplaceAllString(line, "")
}

// checkDiagram holds the diagram to the topology: every service of lab/stack is a node;
// the arrows labelled HTTP between services are exactly the services' upstreams
// (Service.Upstreams); two services are joined by no other arrow (they talk through the
// broker otherwise); every exchange named is one services/contracts declares, and
// every one it declares is drawn.
func checkDiagram(src string, services []stack.Service, contractExchanges []string) []string {
	nodes, edges, exchanges, problems := parseDiagram(src)
	isService := map[string]bool{}
	want := map[edge]bool{}
	for _, s := range services {
		isService[s.Name] = true
		if !nodes[s.Name] {
			problems = append(problems, fmt.Sprintf("service %s (lab/stack.Services) is not in the diagram: give it the node id %s", s.Name, s.Name))
		}
		for _, up := range s.Upstreams {
			want[edge{from: s.Name, label: "HTTP", to: up}] = true
		}
	}
	got := map[edge]bool{}
	for _, e := range edges {
		if !isService[e.from] || !isService[e.to] {
			continue
		}
		if !strings.HasPrefix(e.label, "HTTP") {
			problems = append(problems, fmt.Sprintf("arrow %s -->|%s| %s joins two services without HTTP: services call each other only over HTTP (Service.Upstreams); messages go through an exchange", e.from, e.label, e.to))
			continue
		}
		k := edge{from: e.from, label: "HTTP", to: e.to}
		got[k] = true
		if !want[k] {
			problems = append(problems, fmt.Sprintf("arrow %s -->|HTTP| %s: %s has no upstream %s in lab/stack.Services", e.from, e.to, e.from, e.to))
		}
	}
	for _, k := range sortedEdges(want) {
		if !got[k] {
			problems = append(problems, fmt.Sprintf("missing arrow %s -->|HTTP| %s: %s calls %s (lab/stack.Services Upstreams)", k.from, k.to, k.from, k.to))
		}
	}
	for _, x := range exchanges {
		if !slices.Contains(contractExchanges, x) {
			problems = append(problems, fmt.Sprintf("exchange %s is not one of services/contracts' (%s)", x, strings.Join(contractExchanges, ", ")))
		}
	}
	for _, x := range contractExchanges {
		if !slices.Contains(exchanges, x) {
			problems = append(problems, fmt.Sprintf("exchange %s (services/contracts) is not in the diagram", x))
		}
	}
	return problems
}

// contractExchanges reads the exported Exchange* string constants of
// services/contracts from its source, so a new exchange is seen without this test
// listing it.
func contractExchanges(t *testing.T) []string {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join(root, "services", "contracts", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range file.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if !strings.HasPrefix(name.Name, "Exchange") || !name.IsExported() || i >= len(vs.Values) {
						continue
					}
					if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						v, _ := strconv.Unquote(lit.Value)
						out = append(out, v)
					}
				}
			}
		}
	}
	if len(out) == 0 {
		t.Fatal("services/contracts declares no Exchange* constants: has it moved?")
	}
	return out
}

// TestArchitectureDiagramMatchesTopology: the diagram in docs/architecture.md is the
// topology the code runs, not a drawing of what it once was.
func TestArchitectureDiagramMatchesTopology(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join(root, "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	pg := parsePage("docs/architecture.md", b)
	if len(pg.mermaid) != 1 {
		t.Fatalf("docs/architecture.md has %d ```mermaid blocks, want 1 (the process diagram)", len(pg.mermaid))
	}
	for _, problem := range checkDiagram(pg.mermaid[0], stack.Services, contractExchanges(t)) {
		t.Error(problem)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func sortedEdges(m map[edge]bool) []edge {
	var out []edge
	for e := range m {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].from+" "+out[i].to < out[j].from+" "+out[j].to
	})
	return out
}
