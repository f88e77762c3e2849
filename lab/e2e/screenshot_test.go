package e2e

import (
	"bytes"
	"image/png"
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// The README shows the dashboard as TestDashboardInBrowser last captured it
// (UPDATE_SCREENSHOTS=1 rewrites it): the file is there, a PNG of a README's size and
// not a blank one, and the README's image points at it. No browser needed.
func TestReadmeScreenshot(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join(repoRoot(), readmeScreenshot))
	if err != nil {
		t.Fatalf("%v (regenerate: UPDATE_SCREENSHOTS=1 go test ./lab/e2e/ -run TestDashboardInBrowser)", err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("%s is not a PNG: %v", readmeScreenshot, err)
	}
	size := img.Bounds().Size()
	if size.X < 1000 || size.X > 2000 || size.Y < 600 || size.Y > 1400 {
		t.Errorf("%s is %dx%d, want about 1280x1000", readmeScreenshot, size.X, size.Y)
	}
	if len(b) < 20<<10 || len(b) > 2<<20 {
		t.Errorf("%s is %d bytes: a blank page, or far too large for a README", readmeScreenshot, len(b))
	}
	// A blank (or all-one-colour) capture has one colour; the map has many.
	colours := map[[4]uint32]bool{}
	for y := img.Bounds().Min.Y; y < img.Bounds().Max.Y && len(colours) < 64; y += 7 {
		for x := img.Bounds().Min.X; x < img.Bounds().Max.X && len(colours) < 64; x += 7 {
			r, g, b, a := img.At(x, y).RGBA()
			colours[[4]uint32{r, g, b, a}] = true
		}
	}
	if len(colours) < 16 {
		t.Errorf("%s has %d colours: a blank capture", readmeScreenshot, len(colours))
	}
	readme, err := os.ReadFile(filepath.Join(repoRoot(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`!\[[^\]]+\]\(` + regexp.QuoteMeta(readmeScreenshot) + `\)`).Match(readme) {
		t.Errorf("README.md does not show %s (want ![The microlab dashboard](%s))", readmeScreenshot, readmeScreenshot)
	}
}
