//go:build linux

package main

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/natlab"
)

// TestNATFaults breaks things under running transfers in the NAT lab: a
// relay that dies while a direct path exists, NAT mappings that are
// flushed, a node that moves to another LAN, and a symmetric pair relayed
// through an external coturn given with --turn. The anchor runs no relay
// of its own here, so the relays in use are the coturns each case starts.
// The cases run at once, each with its own routers and nodes.
func TestNATFaults(t *testing.T) {
	l := newNATLab(t, "weftnatf", false)
	natlab.NeedCoturn(t)
	begin := time.Now()
	// Two coturns on the public switch, beside the anchor: one that the
	// relay-dies case kills, one for the symmetric pair.
	doomedIP, coturnIP := netip.MustParseAddr("203.0.113.2"), netip.MustParseAddr("203.0.113.3")
	for _, ip := range []netip.Addr{doomedIP, coturnIP} {
		l.pub.AddAddr(t, "eth0", ip.String()+"/24")
	}
	const cUser, cPass = "lab", "coturn-secret"
	turnFlag := func(ip netip.Addr) string {
		return fmt.Sprintf("turn:%s?user=%s&pass=%s", netip.AddrPortFrom(ip, 3478), cUser, cPass)
	}
	doomed := l.pub.StartCoturn(t, natlab.CoturnConfig{IP: doomedIP, User: cUser, Password: cPass})
	coturn := l.pub.StartCoturn(t, natlab.CoturnConfig{IP: coturnIP, User: cUser, Password: cPass})

	var wg sync.WaitGroup
	runCase := func(name string, f func(t *testing.T)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Run(name, f)
		}()
	}

	// (a) The relay dies mid-transfer while the pair has a direct path:
	// the transfer goes on.
	runCase("relay dies", func(t *testing.T) {
		a := l.natNode(t, natlab.PortRestricted, "rd-a", "--turn", turnFlag(doomedIP))
		b := l.natNode(t, natlab.PortRestricted, "rd-b", "--turn", turnFlag(doomedIP))
		r := l.reach(t, a, b, false)
		if r.ping.Path != "direct" {
			t.Errorf("port-restricted pair with a relay: path %q (%s); want direct", r.ping.Path, r.ping.Reason)
		}
		dl := l.startDownload(t, a, b, 6<<20, 2<<20) // 3 s
		time.Sleep(time.Second)
		if err := doomed.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		t.Logf("coturn %s killed 1 s into a 3 s transfer", doomedIP)
		dl.check(t, 20*time.Second)
		if p := l.ping(t, a, b); p.Path != "direct" {
			t.Errorf("after the relay died: path %q (%s); want direct", p.Path, p.Reason)
		}
	})

	// (b) Both NATs forget every mapping mid-transfer: the tunnel
	// recovers and the TCP stream survives.
	runCase("mappings flushed", func(t *testing.T) {
		ra, rb := l.router(t, "r-fl-a", natlab.PortRestricted), l.router(t, "r-fl-b", natlab.PortRestricted)
		a, b := l.node(t, ra, "fl-a", ""), l.node(t, rb, "fl-b", "")
		l.reach(t, a, b, false)
		dl := l.startDownload(t, a, b, 8<<20, 2<<20) // 4 s
		sess := l.startSSH(t, a, b, "sleep 3; echo survived")
		time.Sleep(time.Second)
		ra.FlushMappings(t)
		rb.FlushMappings(t)
		t.Logf("both routers' mappings flushed 1 s into a 4 s transfer")
		dl.check(t, 60*time.Second)
		sess.check(t, "survived", 60*time.Second)
		if p := l.ping(t, a, b); p.Path != "direct" {
			t.Errorf("after the flush: path %q (%s); want direct", p.Path, p.Reason)
		}
	})

	// (c) A node moves to another LAN behind another NAT mid-session:
	// the tunnel recovers and the ssh session survives.
	runCase("node moves", func(t *testing.T) {
		home, away := l.router(t, "r-mv-home", natlab.PortRestricted), l.router(t, "r-mv-away", natlab.PortRestricted)
		// The mover listens on the wildcard address: its socket survives
		// the move (its eth0 and address do not).
		a := l.node(t, home, "mv-a", "0.0.0.0:41641")
		b := l.natNode(t, natlab.PortRestricted, "mv-b")
		l.reach(t, a, b, false)
		sess := l.startSSH(t, a, b, "sleep 4; echo survived")
		time.Sleep(time.Second)
		moved := time.Now()
		home.Move(t, a.ns, away, nextLANAddr(away))
		t.Logf("%s moved from %v to %v", a.name, home, away)
		// The tunnel is back when weft ping answers again.
		var last result
		for {
			last = runWeft(t, "", "ping", "--state", a.state, "-c", "1", "--json", b.name)
			if last.code == 0 {
				break
			}
			if time.Since(moved) > 90*time.Second {
				t.Fatalf("the tunnel has not recovered 90 s after the move:\n%v\ndaemon %s:\n%s", last, a.name, tail(a.proc.Output(), 60))
			}
			time.Sleep(time.Second)
		}
		back := time.Since(moved)
		t.Logf("tunnel back %v after the move: %s", back.Round(100*time.Millisecond), strings.TrimSpace(last.stdout))
		// The mover sees its addresses change and connects again at once
		// (watchNetwork), not when ICE consent fails (30 s).
		if back > 10*time.Second {
			t.Errorf("the tunnel came back %v after the move; want under 10 s", back.Round(100*time.Millisecond))
		}
		sess.check(t, "survived", 120*time.Second)
		r := l.reach(t, a, b, false)
		if !strings.Contains(r.ping.Endpoint.String()+r.ping.Reason, away.Public.String()) && r.ping.Path == "direct" {
			t.Logf("after the move: %s (%s)", r.ping.Path, r.ping.Reason)
		}
	})

	// (d) symmetric <-> symmetric through an external coturn (--turn),
	// run with coturn's defaults. coturn closes an allocation when one
	// send from its relay socket fails (here: ENETUNREACH to the peer's
	// 10.x host candidate, the public namespace having no route there);
	// weft must not ask it to relay to private addresses
	// (nat/ice/turnfilter.go), or both allocations die a second after
	// they are made.
	runCase("coturn relay", func(t *testing.T) {
		a := l.natNode(t, natlab.Symmetric, "ct-a", "--turn", turnFlag(coturnIP))
		b := l.natNode(t, natlab.Symmetric, "ct-b", "--turn", turnFlag(coturnIP))
		r := l.reach(t, a, b, true)
		if r.ping.Path != "relay" || !strings.Contains(r.ping.Reason, "symmetric") {
			t.Errorf("symmetric <-> symmetric through coturn: path %q (%s); want relay, naming symmetric NAT", r.ping.Path, r.ping.Reason)
		}
		if r.ping.Relay.Addr() != coturnIP && !strings.Contains(r.ping.Reason, coturnIP.String()) {
			t.Errorf("symmetric <-> symmetric: relay %v (%s); want coturn's %v", r.ping.Relay, r.ping.Reason, coturnIP)
		}
		// A bulk transfer through the relay arrives whole.
		dl := l.startDownload(t, a, b, 16<<20, 0)
		dl.check(t, 30*time.Second)
		// coturn prints "udp send: ERROR" (perror) for each failed send
		// from a relay socket, each of which closed an allocation.
		if out := coturn.Output(); strings.Contains(out, "udp send:") {
			t.Errorf("coturn failed to send from a relay socket, closing the allocation:\n%s", tail(out, 40))
		}
	})
	wg.Wait()
	t.Logf("fault cases done in %v", time.Since(begin).Round(100*time.Millisecond))
}

// download is a curl download through the SOCKS5 proxy running in the
// background.
type download struct {
	p    *natlab.Process
	n    int64
	desc string
}

// startDownload starts fetching n bytes, at rate bytes/s (0: as fast as
// possible), from to's HTTP server into from's namespace.
func (l *natLab) startDownload(t *testing.T, from, to *labNode, n, rate int64) *download {
	t.Helper()
	url := fmt.Sprintf("http://%s:8080/bulk?n=%d&rate=%d", to.name, n, rate)
	p := from.ns.Start(t, "curl "+url, l.curl, "-sS", "-o", "/dev/null", "--max-time", "120",
		"-w", "%{size_download} %{http_code} %{speed_download}\n", "--socks5-hostname", "127.0.0.1:1080", url)
	return &download{p: p, n: n, desc: fmt.Sprintf("%s <- %s %d MiB", from.name, to.name, n>>20)}
}

// check waits for the download and fails t unless all of it arrived.
func (d *download) check(t *testing.T, timeout time.Duration) {
	t.Helper()
	err := d.p.Wait(t, timeout)
	f := strings.Fields(d.p.Output())
	if err != nil || len(f) < 3 || f[0] != strconv.FormatInt(d.n, 10) || f[1] != "200" {
		t.Errorf("download %s: %v, curl said %q; want %d bytes, HTTP 200", d.desc, err, d.p.Output(), d.n)
		return
	}
	bps, _ := strconv.ParseFloat(f[2], 64)
	t.Logf("download %s complete: %.1f MB/s", d.desc, bps/1e6)
}

// sshSession is an ssh command running in the background.
type sshSession struct{ p *natlab.Process }

// startSSH runs cmd on to's sshd over ssh through from's `weft nc`.
func (l *natLab) startSSH(t *testing.T, from, to *labNode, cmd string) *sshSession {
	t.Helper()
	if to.ssh == nil {
		t.Skip(sshdUnavailable())
	}
	// ssh runs beside the test, not in a lab namespace: weft nc talks to
	// the daemon's API socket.
	c := exec.Command("ssh", labSSHArgs(t, from, to, cmd)...)
	c.Env = testEnv(t)
	return &sshSession{p: natlab.StartCmd(t, "ssh "+to.name, c)}
}

// check waits for the session to end and fails t unless it printed want.
func (s *sshSession) check(t *testing.T, want string, timeout time.Duration) {
	t.Helper()
	err := s.p.Wait(t, timeout)
	if err != nil || !strings.Contains(s.p.Output(), want) {
		t.Errorf("ssh session: %v, output %q; want %q", err, s.p.Output(), want)
		return
	}
	t.Logf("ssh session survived: %q", strings.TrimSpace(s.p.Output()))
}
