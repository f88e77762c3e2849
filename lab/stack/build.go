package stack

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Build compiles every service in Services into binDir/<name>, in one `go build`
// invocation (the packages share most of their dependencies, so one build is much faster
// than eight). root is the module's root directory. A progress line goes to out (see Progress); a
// failure's error carries the compiler's output. flags go to go build (the end-to-end
// tests pass -race, so the services' own concurrency is checked under real load).
func Build(ctx context.Context, root, binDir string, out io.Writer, flags ...string) error {
	pkgs := make([]string, 0, len(Services))
	for _, s := range Services {
		pkgs = append(pkgs, s.Package())
	}
	return build(ctx, root, binDir, pkgs, out, flags)
}

func build(ctx context.Context, root, binDir string, pkgs []string, out io.Writer, flags []string) error {
	names := make([]string, len(pkgs))
	for i, p := range pkgs {
		names[i] = filepath.Base(p)
	}
	fmt.Fprintf(out, "build: %s → %s\n", strings.Join(names, " "), binDir)
	// go build says nothing until it is done: a minute or more on a first run, with
	// every dependency to compile.
	p := StartProgress(out, "building the services")
	err := goBuild(ctx, root, binDir, pkgs, flags)
	p.Stop(err == nil)
	return err
}

// goBuild runs go build in dir (a module's root) for pkgs, each main package becoming
// binDir/<last element of its path>.
func goBuild(ctx context.Context, dir, binDir string, pkgs []string, flags []string) error {
	gobin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("build: Go toolchain not found on PATH: %w", err)
	}
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return fmt.Errorf("build: %w", err)
	}
	// A trailing separator makes -o a directory: one binary per main package, named
	// after the package's directory.
	args := append(append([]string{"build"}, flags...), "-o", filepath.Clean(binDir)+string(filepath.Separator))
	args = append(args, pkgs...)
	cmd := exec.CommandContext(ctx, gobin, args...)
	cmd.Dir = dir
	// go build prints only problems; they go into the error, not (twice) into out.
	var compiler bytes.Buffer
	cmd.Stdout, cmd.Stderr = &compiler, &compiler
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(compiler.String())
		if len(msg) > 4000 {
			msg = "…" + msg[len(msg)-4000:]
		}
		return fmt.Errorf("go build (in %s): %w\n%s", dir, err, msg)
	}
	return nil
}
