//go:build !linux

package natlab

import (
	"runtime"
	"testing"
)

// Root skips t: namespace labs need Linux.
func Root(t testing.TB) {
	t.Helper()
	t.Skipf("natlab: network namespace tests need Linux, not %s; skipped", runtime.GOOS)
}
