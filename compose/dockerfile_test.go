package compose_test

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"

	"microlab/lab/stack"
	"microlab/lab/topology"
)

// instruction is one line of the Dockerfile as BuildKit's parser reads it.
type instruction struct {
	cmd   string   // "from", "run", "user", …
	args  []string // its words (a RUN in shell form is one)
	flags []string // --mount=…, --from=…
	line  int
}

func parseDockerfile(t *testing.T) []instruction {
	t.Helper()
	f, err := os.Open("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		t.Fatalf("BuildKit cannot parse compose/Dockerfile: %v", err)
	}
	for _, w := range res.Warnings {
		t.Errorf("compose/Dockerfile: %s", w.Short)
	}
	var out []instruction
	for _, n := range res.AST.Children {
		in := instruction{cmd: strings.ToLower(n.Value), flags: n.Flags, line: n.StartLine}
		for a := n.Next; a != nil; a = a.Next {
			in.args = append(in.args, a.Value)
		}
		out = append(out, in)
	}
	return out
}

func TestDockerfileStagesArePinnedAndTheImageRunsAsNobody(t *testing.T) {
	var stages []string // names so far
	var final []instruction
	for _, in := range parseDockerfile(t) {
		switch in.cmd {
		case "from":
			base := in.args[0]
			switch {
			case base == "scratch", contains(stages, base):
			case !pinned.MatchString(base):
				t.Errorf("line %d: FROM %s is not pinned to an exact version", in.line, base)
			}
			if len(in.args) == 3 && strings.EqualFold(in.args[1], "as") {
				stages = append(stages, in.args[2])
			}
			final = nil
		default:
			final = append(final, in)
		}
	}
	if len(stages) < 1 {
		t.Fatal("want a multi-stage build: a named build stage, then the final image")
	}
	var user string
	for _, in := range final {
		switch in.cmd {
		case "user":
			user = in.args[0]
		case "run":
			t.Errorf("line %d: the final stage runs %v: it should only copy the binaries", in.line, in.args)
		}
	}
	uid, _, _ := strings.Cut(user, ":")
	if user == "" || uid == "0" || uid == "root" {
		t.Errorf("the final image runs as %q, want a non-root user", user)
	}
	// The Go toolchain of the build stage is the one go.mod asks for.
	mod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(mod)
	df, _ := os.ReadFile("Dockerfile")
	if goVersion == nil || !bytes.Contains(df, []byte("FROM golang:"+string(goVersion[1])+"-")) {
		t.Errorf("the build stage's golang image is not go.mod's Go %s", goVersion[1])
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// runCommand is the Dockerfile's RUN (shell form) that contains what.
func runCommand(t *testing.T, what string) string {
	t.Helper()
	for _, in := range parseDockerfile(t) {
		if in.cmd == "run" && len(in.args) == 1 && strings.Contains(in.args[0], what) {
			return in.args[0]
		}
	}
	t.Fatalf("compose/Dockerfile has no RUN with %s", what)
	return ""
}

// TestTheImagesCarryEveryServicesMigrations runs the Dockerfile's migrations step
// natively in the Docker context: the lab CLI's `lab topology` finds every service's
// migrations under the images' /migrations the way it finds them in the source tree.
func TestTheImagesCarryEveryServicesMigrations(t *testing.T) {
	mig := topology.DirMigrations(imageMigrations(t))
	for _, s := range stack.Services {
		if !s.DB {
			continue
		}
		fsys, err := mig(s.Name)
		if err != nil {
			t.Errorf("%s: %v", s.Name, err)
			continue
		}
		if files, _ := fs.Glob(fsys, "*.sql"); len(files) == 0 {
			t.Errorf("%s: no migrations in the image", s.Name)
		}
	}
}

// imageMigrations is the images' /migrations, made by the Dockerfile's own step run
// natively in the Docker context.
func imageMigrations(t *testing.T) string {
	t.Helper()
	ctxDir, err := dockerContext(filepath.Join(t.TempDir(), "context"))
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	c := exec.Command("sh", "-c", strings.ReplaceAll(runCommand(t, "migrations"), "/out/", out+"/"))
	c.Dir = ctxDir
	if b, err := c.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	return filepath.Join(out, strings.TrimPrefix(stack.ComposeMigrationsDir, "/"))
}

// buildCommand is the Dockerfile's `go build` RUN, in shell form.
func buildCommand(t *testing.T) string {
	t.Helper()
	for _, in := range parseDockerfile(t) {
		if in.cmd == "run" && len(in.args) == 1 && strings.Contains(in.args[0], "go build") {
			return in.args[0]
		}
	}
	t.Fatal("compose/Dockerfile has no RUN with go build")
	return ""
}

// TestEveryBinaryBuildsFromTheDockerContext runs the Dockerfile's own build command,
// natively, for every process compose builds, in a copy of exactly the files the
// Docker build context holds (the repository minus .dockerignore): a file the build
// needs that .dockerignore leaves out (an embedded migration, say) fails here. The
// parity test runs these binaries.
func TestEveryBinaryBuildsFromTheDockerContext(t *testing.T) {
	bins := imageBinaries(t)
	for pkg, dir := range bins {
		for _, bin := range []string{"app", "probe"} {
			assertStatic(t, pkg, filepath.Join(dir, bin))
		}
	}
	if len(bins) != len(stack.Services)+1 {
		t.Errorf("built %d images' binaries, want one per process and the lab CLI", len(bins))
	}
}

var (
	buildOnce sync.Once
	built     map[string]string // package → directory holding its image's /app and /probe
	buildErr  error
	buildRoot string // removed by TestMain
)

// imageBinaries builds, once per test binary, what each image holds: for every package
// compose builds, the Dockerfile's RUN with /out/ mapped to a directory of its own.
func imageBinaries(t *testing.T) map[string]string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds every binary")
	}
	buildOnce.Do(func() {
		buildRoot, buildErr = os.MkdirTemp("", "microlab-compose-")
		if buildErr != nil {
			return
		}
		var ctxDir string
		ctxDir, buildErr = dockerContext(filepath.Join(buildRoot, "context"))
		if buildErr != nil {
			return
		}
		cmd := buildCommand(t)
		packages := []string{"./lab"} // the load profile's image
		for _, s := range stack.Services {
			packages = append(packages, s.Package())
		}
		built = map[string]string{}
		for _, pkg := range packages {
			out := filepath.Join(buildRoot, "images", strings.Trim(strings.ReplaceAll(pkg, "/", "-"), ".-"))
			c := exec.Command("sh", "-c", strings.ReplaceAll(cmd, "/out/", out+"/"))
			c.Dir = ctxDir
			c.Env = append(os.Environ(), "PACKAGE="+pkg)
			if b, err := c.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("PACKAGE=%s %s: %v\n%s", pkg, cmd, err, b)
				return
			}
			built[pkg] = out
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return built
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildRoot != "" {
		_ = os.RemoveAll(buildRoot)
	}
	os.Exit(code)
}

// assertStatic checks that a binary runs on `scratch`: no dynamic loader.
func assertStatic(t *testing.T, pkg, path string) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("%s: %v", pkg, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s: %s is dynamically linked: it cannot run on scratch", pkg, filepath.Base(path))
		}
	}
}

// dockerContext copies the repository into dst the way `docker build` sends it: every
// file .dockerignore does not exclude.
func dockerContext(dst string) (string, error) {
	root, err := filepath.Abs("..")
	if err != nil {
		return "", err
	}
	f, err := os.Open(filepath.Join(root, ".dockerignore"))
	if err != nil {
		return "", err
	}
	patterns, err := ignorefile.ReadAll(f)
	f.Close()
	if err != nil {
		return "", err
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		return "", err
	}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if rel == "." {
			return os.MkdirAll(dst, 0o755)
		}
		skip, err := pm.MatchesOrParentMatches(filepath.ToSlash(rel))
		if err != nil {
			return err
		}
		if skip {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		return "", err
	}
	for _, gone := range []string{".git", "artifacts", "services/orders/orders_test.go"} {
		if _, err := os.Stat(filepath.Join(dst, gone)); err == nil {
			return "", fmt.Errorf(".dockerignore lets %s into the build context", gone)
		}
	}
	return dst, nil
}
