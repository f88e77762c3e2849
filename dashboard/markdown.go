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
	goldmark.WithParserOptions(parser.WithASTTransformers(util.Prioritized(localLinks{}, 100))),
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
