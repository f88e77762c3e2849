// Package testbrowser is the tests' headless Chromium (Debian's package, never a
// downloaded one) driven by chromedp: every console error, failed load and uncaught
// exception of the pages is collected, so a test can demand that there were none.
// The dashboard's and lab/e2e's browser tests share it.
package testbrowser

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"microlab/services/platform/testenv"
)

// Deadline bounds every action: generous, since a loaded machine runs a -race lab
// slowly, and only an action that never completes fails.
const Deadline = 2 * time.Minute

// Browser is one Chromium with one tab, closed when the test ends.
type Browser struct {
	T   *testing.T
	Ctx context.Context
	// ScreenshotDir is where Screenshot writes when ARTIFACTS_DIR is not set ("": it
	// does not).
	ScreenshotDir string

	ignore func(string) bool
	sink   *sink // shared by the tabs of one Chromium
}

// sink is where the tabs of one Chromium collect their errors.
type sink struct {
	mu     sync.Mutex
	errors []string
}

// New starts Chromium. ignore, if not nil, drops the errors a test provokes on purpose
// (a refused request logged as a failed load, say).
func New(t *testing.T, ignore func(msg string) bool) *Browser {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		testenv.Missing(t, "Chromium", "apt-get install -y chromium", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // root in a container
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1000),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	b := &Browser{T: t, Ctx: ctx, ignore: ignore, sink: &sink{}}
	b.listen(path)
	return b
}

// Tab opens another tab in the same Chromium, closed when the test ends: a learner
// keeps the exercise open in one tab and works in the other. Its errors are collected
// with this one's (ConsoleErrors of either returns both).
func (b *Browser) Tab() *Browser {
	b.T.Helper()
	ctx, cancel := chromedp.NewContext(b.Ctx)
	b.T.Cleanup(cancel)
	tab := &Browser{T: b.T, Ctx: ctx, ScreenshotDir: b.ScreenshotDir, ignore: b.ignore, sink: b.sink}
	tab.listen("a new tab")
	return tab
}

// listen collects the tab's console errors, failed loads and uncaught exceptions.
func (b *Browser) listen(what string) {
	t := b.T
	t.Helper()
	ctx := b.Ctx
	// Listen's callback runs in the tab's read loop: it only records, under a lock.
	err := chromedp.Listen(ctx, func(ev any) {
		var msg string
		switch e := ev.(type) {
		case *cdpruntime.EventExceptionThrown:
			msg = "exception: " + e.ExceptionDetails.Text
			if e.ExceptionDetails.Exception != nil {
				msg += " " + e.ExceptionDetails.Exception.Description
			}
		case *cdpruntime.EventConsoleAPICalled:
			if e.Type == cdpruntime.ConsoleAPICalledTypeError {
				var parts []string
				for _, a := range e.Args {
					parts = append(parts, strings.Trim(string(a.Value), `"`)+a.Description)
				}
				msg = "console.error: " + strings.Join(parts, " ")
			}
		case *cdplog.EventEntryAdded:
			if e.Entry.Level == cdplog.EntryLevelError {
				msg = "log: " + e.Entry.Text + " " + e.Entry.URL
			}
		}
		if msg != "" && (b.ignore == nil || !b.ignore(msg)) {
			b.sink.mu.Lock()
			b.sink.errors = append(b.sink.errors, msg)
			b.sink.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatalf("start Chromium (%s): %v", what, err)
	}
	if _, err := chromedp.Call(ctx, cdplog.Enable, cdp.Empty{}); err != nil {
		t.Fatalf("enable the log domain: %v", err)
	}
}

// Do runs actions within Deadline, failing the test with what was being done.
func (b *Browser) Do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.T.Helper()
	ctx, cancel := context.WithTimeout(b.Ctx, Deadline)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.T.Fatalf("%s: %v", what, err)
	}
}

// Get runs one action that returns a value, within Deadline.
func Get[T any](b *Browser, what string, a chromedp.Action[T]) T {
	b.T.Helper()
	ctx, cancel := context.WithTimeout(b.Ctx, Deadline)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.T.Fatalf("%s: %v", what, err)
	}
	return v
}

// WaitJS polls a JavaScript condition until it is true (within Deadline).
func (b *Browser) WaitJS(what, cond string) {
	b.T.Helper()
	Get(b, what, chromedp.Poll[chromedp.Void](cond, chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(Deadline)))
}

// ConsoleErrors returns and forgets the errors collected so far.
func (b *Browser) ConsoleErrors() []string {
	b.sink.mu.Lock()
	defer b.sink.mu.Unlock()
	out := b.sink.errors
	b.sink.errors = nil
	return out
}

// Screenshot saves the page as a PNG test artifact into ARTIFACTS_DIR, or ScreenshotDir.
func (b *Browser) Screenshot(name string) {
	b.T.Helper()
	dir := os.Getenv("ARTIFACTS_DIR")
	if dir == "" {
		dir = b.ScreenshotDir
	}
	if dir == "" {
		return
	}
	png := Get(b, "screenshot "+name, chromedp.FullScreenshot(100))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.T.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		b.T.Fatal(err)
	}
}
