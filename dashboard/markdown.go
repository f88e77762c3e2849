package main

import (
	"bytes"
	"strings"

	"github.com/yuin/goldmark"
	"github.com/yuin/goldmark/ast"
	"github.com/yuin/goldmark/extension"
	"github.com/yuin/goldmark/parser"
	"github.com/yuin/goldmark/text"
	"github.com/yuin/goldmark/util"

	"microlab/dashboard/views"
)

// markdown renders an exercise's Markdown (its README, a step's instructions) to HTML
// for the page. goldmark's HTML renderer is used as it comes, without WithUnsafe: raw
// HTML in the Markdown is omitted ("<!-- raw HTML omitted -->") and dangerous link
// destinations (javascript:) are dropped, so nothing from the file reaches the page as
// markup of its own. Links to the dashboard as `lab up` serves it
// (http://localhost:8080/sagas) become relative, so they work under any of its names;
// relative links become the dashboard's own pages, or code (siteLinks, doclinks.go).
var markdown = goldmark.New(
	goldmark.WithExtensions(extension.GFM, siteLinks),
	goldmark.WithParserOptions(parser.WithASTTransformers(util.Prioritized(localLinks{}, 100), util.Prioritized(uiLinks{}, 200))),
)

// renderMarkdown is src as HTML ("" if it cannot be rendered, which goldmark's
// renderer does not do for text in memory).
func renderMarkdown(src string) string {
	out, _ := renderMarkdownAt(src, "")
	return out
}

// renderMarkdownAt is renderMarkdown of a text at repository path at
// (exercises/07-outbox/README.md, docs/patterns/outbox.md): its relative links are
// resolved from there (siteLinks) and its headings get GitHub's ids. title is the text
// of its first heading ("" if none).
func renderMarkdownAt(src, at string) (out, title string) {
	pc := parser.NewContext()
	pc.Set(sourceKey, at)
	var buf bytes.Buffer
	if err := markdown.Convert([]byte(src), &buf, parser.WithContext(pc)); err != nil {
		return "", ""
	}
	title, _ = pc.Get(titleKey).(string)
	return buf.String(), title
}

// renderMarkdownFor is renderMarkdownAt with the links to Jaeger's UI and Grafana made
// true to this lab (uiLinks): a README's [Grafana](http://localhost:3000) is a link
// only while Grafana answers.
func renderMarkdownFor(src, at string, ext views.Externals) string {
	pc := parser.NewContext()
	pc.Set(sourceKey, at)
	pc.Set(externalsKey, ext)
	var buf bytes.Buffer
	if err := markdown.Convert([]byte(src), &buf, parser.WithContext(pc)); err != nil {
		return ""
	}
	return buf.String()
}

// renderInline is a line of an exercise's Markdown — a hint, what is missing, the
// hint after a wrong answer — as HTML without its paragraph: `code` spans and links
// as in the instructions, not as backticks and brackets.
func renderInline(src string) string { return renderInlineAt(src, "") }

// renderInlineAt is renderInline of a line of the text at repository path at (an
// exercise's exercise.yaml), its relative links resolved from there.
func renderInlineAt(src, at string) string {
	out, _ := renderMarkdownAt(src, at)
	out = strings.TrimSpace(out)
	if inner, ok := strings.CutPrefix(out, "<p>"); ok {
		if inner, ok := strings.CutSuffix(inner, "</p>"); ok && !strings.Contains(inner, "<p>") {
			return inner
		}
	}
	return out
}

// renderInlines is renderInlineAt of each.
func renderInlines(src []string, at string) []string {
	out := make([]string, len(src))
	for i, s := range src {
		out[i] = renderInlineAt(s, at)
	}
	return out
}

// dashboardOrigins are how READMEs name the dashboard.
var dashboardOrigins = []string{"http://localhost:8080", "http://127.0.0.1:8080"}

// localLinks rewrites links to the dashboard's own pages into paths.
type localLinks struct{}

func (localLinks) Transform(doc *ast.Document, _ text.Reader, _ parser.Context) {
	_ = ast.Walk(doc, func(n ast.Node, entering bool) (ast.WalkStatus, error) {
		if l, ok := n.(*ast.Link); ok && entering {
			dest := string(l.Destination)
			for _, o := range dashboardOrigins {
				if rest, ok := strings.CutPrefix(dest, o); ok && (rest == "" || strings.HasPrefix(rest, "/")) {
					if rest == "" {
						rest = "/"
					}
					l.Destination = []byte(rest)
				}
			}
		}
		return ast.WalkContinue, nil
	})
}

// How READMEs name Jaeger's UI and Grafana: as the compose lab publishes them.
var (
	jaegerOrigins  = []string{"http://localhost:16686", "http://127.0.0.1:16686"}
	grafanaOrigins = []string{"http://localhost:3000", "http://127.0.0.1:3000"}
)

// externalsKey carries the views.Externals a page is rendered with (renderMarkdownFor).
var externalsKey = parser.NewContextKey()

// uiLinks makes a link to Jaeger's UI or Grafana ([text](url) or <url>; a bare
// http://localhost:… stays text, as GFM links only names with a dot) true to this lab:
// while the UI is up, a link to it at its configured base; otherwise its text followed
// by why it is not a link ("… (not part of this lab)"). Without externals in the
// context (renderMarkdown) it changes nothing.
type uiLinks struct{}

func (uiLinks) Transform(doc *ast.Document, reader text.Reader, pc parser.Context) {
	ext, ok := pc.Get(externalsKey).(views.Externals)
	if !ok {
		return
	}
	match := func(dest string) (views.UI, string, bool) {
		for _, c := range []struct {
			ui      views.UI
			origins []string
		}{{ext.Jaeger, jaegerOrigins}, {ext.Grafana, grafanaOrigins}} {
			for _, o := range c.origins {
				if rest, ok := strings.CutPrefix(dest, o); ok && (rest == "" || strings.HasPrefix(rest, "/") || strings.HasPrefix(rest, "?")) {
					return c.ui, rest, true
				}
			}
		}
		return views.UI{}, "", false
	}
	src := reader.Source()
	var found []ast.Node // changed after the walk: a walk must not edit the tree it walks
	_ = ast.Walk(doc, func(n ast.Node, entering bool) (ast.WalkStatus, error) {
		switch n.(type) {
		case *ast.Link, *ast.AutoLink:
			if entering {
				found = append(found, n)
			}
			return ast.WalkSkipChildren, nil
		}
		return ast.WalkContinue, nil
	})
	for _, n := range found {
		parent := n.Parent()
		switch l := n.(type) {
		case *ast.Link:
			ui, rest, ok := match(string(l.Destination))
			if !ok {
				continue
			}
			if href := ui.Link(rest); href != "" {
				l.Destination = []byte(href)
				continue
			}
			// The link's text stays, as text, followed by why it is not a link.
			for c := l.FirstChild(); c != nil; c = l.FirstChild() {
				parent.InsertBefore(parent, l, c) // moves c out of l
			}
			parent.InsertBefore(parent, l, ast.NewString([]byte(" ("+ui.Short()+")")))
			parent.RemoveChild(parent, l)
		case *ast.AutoLink:
			ui, rest, ok := match(string(l.URL(src)))
			if !ok {
				continue
			}
			if href := ui.Link(rest); href != "" {
				link := ast.NewLink()
				link.Destination = []byte(href)
				link.AppendChild(link, ast.NewString([]byte(href)))
				parent.ReplaceChild(parent, l, link)
				continue
			}
			parent.ReplaceChild(parent, l, ast.NewString([]byte(string(l.Label(src))+" ("+ui.Short()+")")))
		}
	}
}
