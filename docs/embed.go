// Package docs is the lab's documentation — the architecture, one page per pattern,
// operations, benchmarks — as Markdown, embedded so the dashboard can serve the pages
// its texts link to (/docs/...) from the binary, with nothing to find on disk. Its
// tests keep the pages true of the repository: a learner who follows a link, types a
// path a page cites or trusts the architecture diagram must find what the page says is
// there.
//
// Only the dashboard imports it; platform and observability must not (they are the
// services' kit, and documentation is not part of a service).
package docs

import (
	"embed"
	"strings"
	"unicode"

	"github.com/yuin/goldmark/ast"
)

// FS holds every page: *.md and patterns/*.md, at those paths (architecture.md,
// patterns/outbox.md). go:embed refuses a pattern that matches nothing, so a kind of
// file is listed here once the first one exists: when docs/ gets images, add their
// pattern (images/*.png) to the line below, or the dashboard cannot serve them (its
// link test fails for a page that shows one).
//
//go:embed *.md patterns/*.md
var FS embed.FS

// HeadingID is the anchor GitHub gives a heading, which the pages' links are written
// for and the dashboard gives its rendered headings too: lower case; letters, marks,
// digits, connector punctuation ("_") and "-" kept; spaces made hyphens; everything
// else (punctuation, backticks, dashes other than "-") dropped.
func HeadingID(heading string) string {
	var sb strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case unicode.IsLetter(r), unicode.IsMark(r), unicode.IsNumber(r), unicode.Is(unicode.Pc, r), r == '-':
			sb.WriteRune(r)
		case r == ' ':
			sb.WriteByte('-')
		}
	}
	return sb.String()
}

// HeadingText is a heading's text as GitHub reads it for its anchor (HeadingID of it):
// the text, code spans included, without the markup. src is the Markdown n was parsed
// from. It works for any node (a code span's text, say), but headings are why it is
// here: the dashboard and this package's tests must read a heading the same way, or a
// link one of them checks would not be the link the other renders.
func HeadingText(n ast.Node, src []byte) string {
	var sb strings.Builder
	_ = ast.Walk(n, func(c ast.Node, entering bool) (ast.WalkStatus, error) {
		if !entering {
			return ast.WalkContinue, nil
		}
		switch c := c.(type) {
		case *ast.Text:
			sb.Write(c.Segment.Value(src))
			if c.SoftLineBreak() {
				sb.WriteByte(' ')
			}
		case *ast.String:
			sb.Write(c.Value)
		}
		return ast.WalkContinue, nil
	})
	return sb.String()
}
