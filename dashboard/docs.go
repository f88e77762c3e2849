package main

import (
	"io/fs"
	"net/http"
	"path"
	"strings"

	"microlab/dashboard/views"
	"microlab/docs"
	"microlab/services/platform/httpx"
)

// docsIndex is the page /docs/ leads to: the patterns' index, which links the rest.
const docsIndex = "patterns/README.md"

// docPage serves GET /docs/{path...} from package docs' embedded pages.
func (s *server) docPage(w http.ResponseWriter, r *http.Request) error {
	return s.serveDoc(w, r, docs.FS, r.PathValue("path"))
}

// serveDoc serves p of fsys: a Markdown page rendered inside the layout (its links made
// the dashboard's own, siteLinks), any other file (an image) as it is, /docs/ and a
// directory as a redirect to the index and its README. Anything else is the
// dashboard's 404.
func (s *server) serveDoc(w http.ResponseWriter, r *http.Request, fsys fs.FS, p string) error {
	if p == "" {
		http.Redirect(w, r, "/docs/"+docsIndex, http.StatusFound)
		return nil
	}
	// A directory with a README (patterns/): the README, as GitHub shows it.
	if dir := strings.TrimSuffix(p, "/"); fs.ValidPath(dir) && isFile(fsys, path.Join(dir, "README.md")) {
		http.Redirect(w, r, "/docs/"+path.Join(dir, "README.md"), http.StatusFound)
		return nil
	}
	notFound := httpx.Errorf(http.StatusNotFound, "not_found", "no page docs/%s", p)
	// fs.ValidPath refuses "..", "." and empty elements, so nothing outside docs/ is
	// reachable; a directory is not a page.
	if !fs.ValidPath(p) || !isFile(fsys, p) {
		return notFound
	}
	if path.Ext(p) != ".md" {
		// The images a page shows. Stat said it is a file; ServeFileFS sets the type
		// from the extension and answers If-Modified-Since and ranges.
		http.ServeFileFS(w, r, fsys, p)
		return nil
	}
	src, err := fs.ReadFile(fsys, p)
	if err != nil {
		return err
	}
	body, title := renderMarkdownAt(string(src), "docs/"+p)
	if title == "" {
		title = strings.TrimSuffix(path.Base(p), ".md")
	}
	return s.render(w, r, views.Page{Title: title, Active: "docs"}, views.Doc(views.DocModel{Path: p, HTML: body, Index: docsIndex}))
}

// docExists reports whether the docs have page p (patterns/grpc.md): the map's pattern
// strip links only to pages this build serves.
func docExists(p string) bool {
	_, err := fs.Stat(docs.FS, p)
	return err == nil
}
