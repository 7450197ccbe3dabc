//go:build linux

package natlab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Process is a background program started by Start or StartCmd.
type Process struct {
	// Label names the process in logs and errors.
	Label string
	cmd   *exec.Cmd
	out   *syncBuffer
	done  chan struct{} // closed when the process has exited
	err   error         // of Wait; valid after done
}

// Start runs name in the namespace in the background, in a process group of
// its own. When t ends, the group is killed (if still running) and its
// output logged if NATLAB_VERBOSE is set; if t failed, its last lines are
// logged and the whole output saved to a file (see Failures).
func (ns *Namespace) Start(t testing.TB, label, name string, args ...string) *Process {
	t.Helper()
	return StartCmd(t, label, ns.Command(context.Background(), name, args...))
}

// StartCmd starts cmd (from Namespace.Command, or any command) the way
// Start does. Its Stdout and Stderr are replaced by the captured output.
func StartCmd(t testing.TB, label string, cmd *exec.Cmd) *Process {
	t.Helper()
	p := &Process{Label: label, cmd: cmd, out: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	// Not killed by the parent's context: the process lives until the test
	// ends or the test stops it.
	if cmd.WaitDelay == 0 {
		cmd.WaitDelay = 2 * time.Second
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("natlab: start %s (%s): %v", label, strings.Join(cmd.Args, " "), err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.Exited() {
			// `ip netns exec` execs the program, so the group is the program's.
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			select {
			case <-p.done:
			case <-time.After(5 * time.Second):
				t.Errorf("natlab: %s (pid %d) did not exit after SIGKILL", label, cmd.Process.Pid)
			}
		}
		switch {
		case os.Getenv("NATLAB_VERBOSE") != "":
			t.Logf("natlab: output of %s (%s):\n%s", label, strings.Join(cmd.Args, " "), p.out.String())
		case t.Failed():
			noteFailure(t, label, strings.Join(cmd.Args, " "), p.out.String())
		}
	})
	return p
}

// Pid is the process ID (of the program itself: `ip netns exec` execs it).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Output returns what the process has written to stdout and stderr so far.
func (p *Process) Output() string { return p.out.String() }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Signal sends sig to the process (not its group).
func (p *Process) Signal(sig syscall.Signal) error {
	return syscall.Kill(p.cmd.Process.Pid, sig)
}

// Wait waits up to timeout for the process to exit and returns the error
// of exec.Cmd.Wait; it fails t if the process is still running then.
func (p *Process) Wait(t testing.TB, timeout time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		t.Fatalf("natlab: %s did not exit within %v; output:\n%s", p.Label, timeout, p.Output())
		return nil
	}
}

// WaitOutput waits up to timeout until the output contains s; it fails t
// if the process exits or the time runs out first.
func (p *Process) WaitOutput(t testing.TB, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(p.Output(), s) {
		if p.Exited() {
			t.Fatalf("natlab: %s exited (%v) before printing %q; output:\n%s", p.Label, p.err, s, p.Output())
		}
		if time.Now().After(deadline) {
			t.Fatalf("natlab: %s has not printed %q after %v; output:\n%s", p.Label, s, timeout, p.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *Process) String() string { return fmt.Sprintf("%s (pid %d)", p.Label, p.Pid()) }

// syncBuffer is a bytes.Buffer safe for a process writing and a test
// reading.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
