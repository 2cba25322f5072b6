package testenv

import (
	"context"
	"os/exec"
	"testing"

	"github.com/chromedp/chromedp"
)

// Chromium starts Debian's headless Chromium with a fresh profile in tb's
// temporary directory and returns a chromedp context on a new tab whose
// window is width×height. The browser is closed when tb ends. The browser
// needs the Debian package chromium, which `make test` installs.
func Chromium(tb testing.TB, width, height int) context.Context {
	tb.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		tb.Fatalf("testenv: chromium not found: the browser tests need a real Chromium; run `make test`, which installs it")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(tb.TempDir()),
		chromedp.WindowSize(width, height),
		// Running as root needs no sandbox; headless has no GPU; and on a
		// closed network the background services only flood it with
		// refused connections.
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	tb.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	// Start the browser now, so a start-up failure is reported here. (The
	// first action's context owns the browser process: no timeout on it.)
	if err := chromedp.Do(ctx); err != nil {
		tb.Fatalf("testenv: start chromium: %v", err)
	}
	return ctx
}
