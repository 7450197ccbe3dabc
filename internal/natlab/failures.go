package natlab

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// failTail is how many lines of a process's output a failed test logs; the
// whole output goes to a file under FailureLogDir.
const failTail = 15

var (
	failMu   sync.Mutex
	failDir  string
	failed   []string // test names, in the order they failed
	failSeen = map[string]bool{}
)

// noteFailure records that t failed, saves out (the output of the process
// labelled label) to a file and logs its last lines and the file's path:
// the whole debug logs of every daemon of a failed lab test would bury the
// failure itself in a CI log.
func noteFailure(t testing.TB, label, cmdline, out string) {
	failMu.Lock()
	defer failMu.Unlock()
	if !failSeen[t.Name()] {
		failSeen[t.Name()] = true
		failed = append(failed, t.Name())
	}
	if failDir == "" {
		d, err := os.MkdirTemp("", "natlab-logs-")
		if err != nil {
			t.Logf("natlab: output of %s (%s):\n%s", label, cmdline, out)
			return
		}
		failDir = d
	}
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name() + "." + label + ".log")
	path := filepath.Join(failDir, name)
	if err := os.WriteFile(path, []byte(cmdline+"\n"+out), 0o644); err != nil {
		t.Logf("natlab: output of %s (%s):\n%s", label, cmdline, out)
		return
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) > failTail {
		lines = lines[len(lines)-failTail:]
	}
	t.Logf("natlab: last lines of %s (all of it in %s):\n%s", label, path, strings.Join(lines, "\n"))
}

// Failures returns the names of the failed tests whose processes' logs
// were saved, and the directory they are in ("" if none). A TestMain
// prints them last, where a truncated CI log still shows them.
func Failures() (tests []string, logDir string) {
	failMu.Lock()
	defer failMu.Unlock()
	return append([]string(nil), failed...), failDir
}
