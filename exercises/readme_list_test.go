package exercises

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// The repository's README lists every built-in exercise, with its title and a link to
// its README, and names none that does not exist: a newcomer's list is the lab's.
func TestTheREADMEListsEveryExercise(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	list, err := Load(Builtin())
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, e := range list {
		ids[e.ID] = true
		row := "| [`" + e.ID + "`](exercises/" + e.ID + "/README.md) | " + e.Title + " |"
		if !strings.Contains(readme, row) {
			t.Errorf("README.md has no row for %s: want a line starting %q", e.ID, row)
		}
	}
	for _, m := range regexp.MustCompile("`(\\d\\d-[a-z0-9-]+)`").FindAllStringSubmatch(readme, -1) {
		if !ids[m[1]] {
			t.Errorf("README.md names exercise %s, which does not exist", m[1])
		}
	}
}
