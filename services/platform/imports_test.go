package platform_test

import (
	"encoding/json"
	"io"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// House rule (DESIGN §2): services know each other only through contracts and HTTP. A
// service package never imports another service; platform and observability import
// nothing from services but contracts (and platform itself).
func TestImportBoundaries(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	cmd := exec.Command("go", "list", "-json=ImportPath,Imports,TestImports,XTestImports", "./services/...", "./observability/...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		// observability may not exist yet; retry with services only.
		cmd = exec.Command("go", "list", "-json=ImportPath,Imports,TestImports,XTestImports", "./services/...")
		cmd.Dir = root
		if out, err = cmd.Output(); err != nil {
			t.Fatalf("go list: %v", err)
		}
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	checked := 0
	for {
		var p struct {
			ImportPath                         string
			Imports, TestImports, XTestImports []string
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		checked++
		own := serviceOf(p.ImportPath)
		for _, imp := range append(append(p.Imports, p.TestImports...), p.XTestImports...) {
			if !strings.HasPrefix(imp, "microlab/services/") {
				continue
			}
			target := serviceOf(imp)
			switch {
			case target == "contracts" || target == "platform":
			case own == "platform" || strings.HasPrefix(p.ImportPath, "microlab/observability"):
				t.Errorf("%s imports %s: platform/observability may only import contracts", p.ImportPath, imp)
			case target != own:
				t.Errorf("%s imports %s: services talk through contracts and HTTP, never by import", p.ImportPath, imp)
			}
		}
	}
	if checked < 3 {
		t.Fatalf("only %d packages checked; the listing is wrong", checked)
	}
}

// serviceOf("microlab/services/orders/saga") = "orders".
func serviceOf(path string) string {
	rest := strings.TrimPrefix(path, "microlab/services/")
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		rest = rest[:i]
	}
	return rest
}
