//go:build linux

package natlab

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func nsExists(name string) bool {
	_, err := os.Stat(filepath.Join(netnsDir, name))
	return err == nil
}

func TestLab(t *testing.T) {
	Root(t)
	var names []string
	var etc string
	var sleeper *Process
	t.Run("build", func(t *testing.T) {
		l := New(t, Options{Prefix: "natlabtest"})
		inet := l.Switch(t, "inet")
		a, b := l.Namespace(t, "a"), l.Namespace(t, "b")
		inet.Attach(t, End{NS: a, Dev: "eth0", Addrs: []string{"192.0.2.1/24", "fd00:1::1/64"}})
		inet.Attach(t, End{NS: b, Dev: "eth0", Addrs: []string{"192.0.2.2/24", "fd00:1::2/64"}})
		c := l.Namespace(t, "c")
		l.Veth(t, End{NS: b, Dev: "toc", Addrs: []string{"10.1.0.1/30"}}, End{NS: c, Dev: "tob", Addrs: []string{"10.1.0.2/30"}})
		c.IP(t, "route", "add", "default", "via", "10.1.0.1")
		b.Sysctl(t, "net.ipv4.ip_forward", "1")
		a.IP(t, "route", "add", "10.1.0.0/30", "via", "192.0.2.2")
		for _, ns := range []*Namespace{inet.NS, a, b, c} {
			names = append(names, ns.Name())
			if !strings.HasPrefix(ns.Name(), l.ID()+"-") || !nsExists(ns.Name()) {
				t.Errorf("namespace %s: want a name under %s, existing", ns.Name(), l.ID())
			}
		}
		if got := strings.TrimSpace(b.MustRun(t, "cat", "/proc/sys/net/ipv4/ip_forward")); got != "1" {
			t.Errorf("ip_forward in b = %q after Sysctl", got)
		}
		if got := strings.TrimSpace(a.MustRun(t, "cat", "/proc/sys/net/ipv4/ip_forward")); got != "0" {
			t.Errorf("ip_forward in a = %q: Sysctl leaked out of b", got)
		}

		// Programs: across the switch, and routed through b.
		if ping, err := exec.LookPath("ping"); err == nil {
			a.MustRun(t, ping, "-c1", "-W5", "192.0.2.2")
			a.MustRun(t, ping, "-c1", "-W5", "fd00:1::2")
			a.MustRun(t, ping, "-c1", "-W5", "10.1.0.2")
		}
		r := a.Run(t, 200*time.Millisecond, "sleep", "5")
		if r.Err == nil || !strings.Contains(r.Err.Error(), "timeout") {
			t.Errorf("Run with a timeout: want a timeout error, got %v", r)
		}
		if r := a.Run(t, 0, "sh", "-c", "echo out; echo err >&2; exit 3"); r.ExitCode() != 3 || r.Stdout != "out\n" || r.Stderr != "err\n" {
			t.Errorf("Run: got exit %d, %v", r.ExitCode(), r)
		}

		// resolv.conf: programs in c see the lab's, the host's is untouched.
		host, _ := os.ReadFile("/etc/resolv.conf")
		c.SetResolvConf(t, "nameserver 10.1.0.1\n")
		etc = filepath.Dir(c.ResolvConfPath())
		if got := c.MustRun(t, "cat", "/etc/resolv.conf"); got != "nameserver 10.1.0.1\n" {
			t.Errorf("resolv.conf in c: %q", got)
		}
		c.MustRun(t, "sh", "-c", "echo 'nameserver 10.1.0.9' > /etc/resolv.conf")
		if got, _ := os.ReadFile(c.ResolvConfPath()); string(got) != "nameserver 10.1.0.9\n" {
			t.Errorf("a write to /etc/resolv.conf in c went elsewhere: lab file %q", got)
		}
		if now, _ := os.ReadFile("/etc/resolv.conf"); string(now) != string(host) {
			t.Errorf("the host's resolv.conf changed")
		}

		// Go sockets in namespaces: a server in c, a client in a.
		ln, err := c.Listen("tcp", "10.1.0.2:7000")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			conn, err := ln.Accept()
			if err == nil {
				fmt.Fprint(conn, "hello from c")
				conn.Close()
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, err := a.DialContext(ctx, "tcp", "10.1.0.2:7000")
		if err != nil {
			t.Fatalf("dial from a to c: %v", err)
		}
		got, _ := io.ReadAll(conn)
		conn.Close()
		if string(got) != "hello from c" {
			t.Errorf("read %q", got)
		}
		checkHostNamespace(t)
		if pc, err := c.ListenPacket("udp", "192.0.2.1:53"); err == nil {
			pc.Close()
			t.Errorf("c could bind a's address: the socket is not in c")
		}

		// Background processes, killed with their group when the test ends.
		sleeper = b.Start(t, "sleeper", "sh", "-c", "echo ready; sleep 60 & sleep 60")
		sleeper.WaitOutput(t, "ready", 5*time.Second)
		if out := b.IP(t, "netns", "identify", fmt.Sprint(sleeper.Pid())); !strings.Contains(out, b.Name()) {
			t.Errorf("sleeper runs in %q, want %s", out, b.Name())
		}
	})
	if sleeper == nil {
		return
	}
	if !sleeper.Exited() {
		t.Errorf("sleeper still runs after its test ended")
	}
	// The group's orphaned child is killed too (it may linger as a zombie
	// until init reaps it).
	if live := liveInGroup(sleeper.Pid()); len(live) > 0 {
		t.Errorf("processes %v of sleeper's group still run after its test ended", live)
	}
	for _, n := range names {
		if nsExists(n) {
			t.Errorf("namespace %s still exists after its test ended", n)
		}
	}
	if _, err := os.Stat(etc); err == nil {
		t.Errorf("%s still exists after its test ended", etc)
	}
}

// liveInGroup lists the processes of group pgid that are not zombies.
func liveInGroup(pgid int) []string {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var live []string
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces.
		_, rest, ok := strings.Cut(string(b), ") ")
		if fields := strings.Fields(rest); ok && len(fields) > 2 && fields[2] == fmt.Sprint(pgid) && fields[0] != "Z" {
			live = append(live, strings.TrimSpace(string(b[:strings.Index(string(b), ")")+1])))
		}
	}
	return live
}

// hostNetns is the test process's namespace, read before any test ran.
// (Not /proc/self/ns/net later: that is the main thread's, and a goroutine
// of Do may have ended on the main thread, which then stays parked in the
// lab namespace for good.)
var hostNetns, _ = os.Readlink("/proc/thread-self/ns/net")

// checkHostNamespace checks that the test's goroutine is still in the
// process's namespace after Listen and DialContext.
func checkHostNamespace(t *testing.T) {
	self, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	if self != hostNetns {
		t.Errorf("the test's thread is in %s, the process in %s", self, hostNetns)
	}
}

func TestRemoveStale(t *testing.T) {
	Root(t)
	// A process that has exited: its pid names a crashed run.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	pid := dead.Process.Pid
	stale := fmt.Sprintf("natlabstale-%d-abcdef-x", pid)
	live := fmt.Sprintf("natlabstale-%d-abcdef-y", os.Getppid()) // the go command: alive
	other := fmt.Sprintf("natlabstaleother-%d-abcdef-x", pid)    // another prefix
	for _, n := range []string{stale, live, other} {
		mustIP(t, "netns", "add", n)
		t.Cleanup(func() { deleteNamespace(t, n) })
	}
	if err := os.MkdirAll(filepath.Join(etcNetns, stale), 0o755); err != nil {
		t.Fatal(err)
	}
	New(t, Options{Prefix: "natlabstale"})
	if nsExists(stale) {
		t.Errorf("stale namespace %s of dead pid %d not removed", stale, pid)
	}
	if _, err := os.Stat(filepath.Join(etcNetns, stale)); err == nil {
		t.Errorf("/etc/netns/%s not removed", stale)
	}
	if !nsExists(live) {
		t.Errorf("namespace %s of a live process removed", live)
	}
	if !nsExists(other) {
		t.Errorf("namespace %s of another prefix removed", other)
	}
}
