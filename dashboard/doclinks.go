package main

import (
	"io/fs"
	"net/url"
	"path"
	"strconv"
	"strings"

	"github.com/yuin/goldmark"
	"github.com/yuin/goldmark/ast"
	"github.com/yuin/goldmark/parser"
	"github.com/yuin/goldmark/renderer"
	"github.com/yuin/goldmark/text"
	"github.com/yuin/goldmark/util"

	"microlab/docs"
	"microlab/exercises"
)

// The texts the dashboard shows — exercise READMEs and steps, the docs/ pages — are
// written for GitHub: their links are relative paths in the repository
// (../../docs/patterns/outbox.md, ../06-shared-database/README.md,
// ../../services/platform/outbox/outbox.go). In the dashboard a path like that resolves
// under /exercises/ or /docs/ to something it may not serve, and the dashboard never
// links to something that is not there. So siteLinks rewrites each relative link of a
// text whose repository path it knows (renderMarkdownAt) to what the dashboard serves:
//
//	docs/X.md#a              → /docs/X.md#a (served from package docs' embedded pages)
//	exercises/NN-slug/README.md#a, exercises/NN-slug/
//	                         → /exercises/NN-slug#a (the exercise's page)
//	any other repository path (a source file, a directory, a page not embedded)
//	                         → the path as <code title="in the repository">: a learner
//	                           can open it in the checkout; a link would lead nowhere.
//
// Links with a scheme or a host, absolute paths and #fragments are left as they are.
// Headings get the ids GitHub gives them (headingID), so the #anchors written for
// GitHub land on the same headings here.
var siteLinks goldmark.Extender = siteLinksExt{}

// sourceKey carries the repository path of the text being rendered; titleKey returns
// the text of its first heading.
var (
	sourceKey = parser.NewContextKey()
	titleKey  = parser.NewContextKey()
)

type siteLinksExt struct{}

func (siteLinksExt) Extend(m goldmark.Markdown) {
	m.Parser().AddOptions(parser.WithASTTransformers(util.Prioritized(siteLinkRewriter{}, 150)))
	m.Renderer().AddOptions(renderer.WithNodeRenderers(util.Prioritized(repoPathRenderer{}, 500)))
}

// siteLink is where dest, a link in the text at repository path at, leads in the
// dashboard: ok and href for a page (or file) it serves, or !ok and repo, the
// repository path dest names. Links it does not rewrite come back as they are (ok).
func siteLink(at, dest string) (href, repo string, ok bool) {
	u, err := url.Parse(dest)
	if err != nil || u.Scheme != "" || u.Host != "" || u.Path == "" || strings.HasPrefix(u.Path, "/") {
		return dest, "", true
	}
	frag := ""
	if u.Fragment != "" {
		frag = "#" + u.EscapedFragment()
	}
	target := path.Join(path.Dir(at), u.Path)
	if target == "docs" {
		return "/docs/" + frag, "", true // the index (docPage)
	}
	if rel, ok := strings.CutPrefix(target, "docs/"); ok {
		if isFile(docs.FS, rel) {
			return "/docs/" + rel + frag, "", true
		}
		if isFile(docs.FS, path.Join(rel, "README.md")) { // a directory: its README, as GitHub shows it
			return "/docs/" + path.Join(rel, "README.md") + frag, "", true
		}
	}
	if rest, ok := strings.CutPrefix(target, "exercises/"); ok {
		id, file, _ := strings.Cut(rest, "/")
		if (file == "" || file == "README.md") && isFile(exercises.Builtin(), id+"/exercise.yaml") {
			return "/exercises/" + id + frag, "", true
		}
	}
	if strings.HasSuffix(u.Path, "/") {
		target += "/"
	}
	return "", target, false
}

func isFile(fsys fs.FS, name string) bool {
	fi, err := fs.Stat(fsys, name)
	return err == nil && !fi.IsDir()
}

// siteLinkRewriter is the AST transformer; it does nothing to a text whose path is not
// in the parser's context (renderMarkdown).
type siteLinkRewriter struct{}

func (siteLinkRewriter) Transform(doc *ast.Document, reader text.Reader, pc parser.Context) {
	at, _ := pc.Get(sourceKey).(string)
	if at == "" {
		return
	}
	src := reader.Source()
	var links []ast.Node // changed after the walk: a walk must not edit the tree it walks
	seen := map[string]int{}
	_ = ast.Walk(doc, func(n ast.Node, entering bool) (ast.WalkStatus, error) {
		if !entering {
			return ast.WalkContinue, nil
		}
		switch n := n.(type) {
		case *ast.Link, *ast.Image:
			links = append(links, n)
		case *ast.Heading:
			title := docs.HeadingText(n, src)
			if pc.Get(titleKey) == nil {
				pc.Set(titleKey, title)
			}
			// GitHub numbers repeated headings: overview, overview-1, overview-2.
			id := docs.HeadingID(title)
			if k := seen[id]; k > 0 {
				n.SetAttributeString("id", []byte(id+"-"+strconv.Itoa(k)))
			} else {
				n.SetAttributeString("id", []byte(id))
			}
			seen[id]++
		}
		return ast.WalkContinue, nil
	})
	for _, n := range links {
		var dest *[]byte
		switch l := n.(type) {
		case *ast.Link:
			dest = &l.Destination
		case *ast.Image:
			dest = &l.Destination
		}
		href, repo, ok := siteLink(at, string(*dest))
		if ok {
			*dest = []byte(href)
			continue
		}
		// Not served: the path, as code. Link text that is already the path in
		// backticks gives way to it; other text stays, followed by the path.
		parent := n.Parent()
		if c, isCode := n.FirstChild().(*ast.CodeSpan); !isCode || c.NextSibling() != nil {
			for c := n.FirstChild(); c != nil; c = n.FirstChild() {
				parent.InsertBefore(parent, n, c) // moves c out of n
			}
			parent.InsertBefore(parent, n, ast.NewString([]byte(" (")))
			parent.InsertAfter(parent, n, ast.NewString([]byte(")")))
		}
		parent.ReplaceChild(parent, n, &repoPath{path: repo})
	}
}

// repoPath is a path in the repository that the dashboard does not serve, shown as
// code: <code class="repo-path" title="in the repository">services/…/outbox.go</code>.
type repoPath struct {
	ast.BaseInline
	path string
}

var kindRepoPath = ast.NewNodeKind("RepoPath")

func (n *repoPath) Kind() ast.NodeKind { return kindRepoPath }

func (n *repoPath) Dump(src []byte, level int) {
	ast.DumpHelper(n, src, level, map[string]string{"Path": n.path}, nil)
}

type repoPathRenderer struct{}

func (repoPathRenderer) RegisterFuncs(reg renderer.NodeRendererFuncRegisterer) {
	reg.Register(kindRepoPath, func(w util.BufWriter, _ []byte, n ast.Node, entering bool) (ast.WalkStatus, error) {
		if entering {
			_, _ = w.WriteString(`<code class="repo-path" title="in the repository">`)
			_, _ = w.Write(util.EscapeHTML([]byte(n.(*repoPath).path)))
			_, _ = w.WriteString("</code>")
		}
		return ast.WalkSkipChildren, nil
	})
}
