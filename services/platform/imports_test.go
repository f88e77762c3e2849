package platform_test

import (
	"encoding/json"
	"io"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// House rule (DESIGN §2): services know each other only through contracts and HTTP. A
// service package never imports another service; platform and observability import
// nothing from services but contracts (and platform itself).
//
// services/shop holds the pure rules the microservices and the monolith share (the
// card and shipping rules, stock checks, seed data, the token signer): any service may
// import it, and it imports nothing from services but contracts and platform/httpx (the
// API error shape its order validation answers with; its tests may use platform's
// testenv), so it can never become a back door from one service into
// another. The monolith is a service like the others here: platform, contracts and
// shop, nothing else.
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
	listed := map[string]bool{}
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
		listed[p.ImportPath] = true
		own := serviceOf(p.ImportPath)
		for _, imp := range append(append(p.Imports, p.TestImports...), p.XTestImports...) {
			if !strings.HasPrefix(imp, "microlab/services/") {
				continue
			}
			target := serviceOf(imp)
			switch {
			case own == "shop" && target != "contracts" && target != "shop":
				if target == "platform" && (!slices.Contains(p.Imports, imp) || imp == "microlab/services/platform/httpx") {
					continue // shop's tests use testenv; shop itself only httpx's error shape and Printable
				}
				t.Errorf("%s imports %s: shop may only import contracts and platform/httpx", p.ImportPath, imp)
			case target == "contracts" || target == "platform" || target == "shop":
				if target == "shop" && (own == "platform" || strings.HasPrefix(p.ImportPath, "microlab/observability")) {
					t.Errorf("%s imports %s: platform/observability may only import contracts", p.ImportPath, imp)
				}
			case own == "platform" || strings.HasPrefix(p.ImportPath, "microlab/observability"):
				t.Errorf("%s imports %s: platform/observability may only import contracts", p.ImportPath, imp)
			case target != own:
				t.Errorf("%s imports %s: services talk through contracts and HTTP, never by import", p.ImportPath, imp)
			}
		}
	}
	for _, must := range []string{"microlab/services/shop", "microlab/services/monolith"} {
		if !listed[must] {
			t.Errorf("%s was not checked: the listing is wrong", must)
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
