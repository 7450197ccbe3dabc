//go:build linux

package main

import (
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft"
	"github.com/weft-net/weft/internal/natlab"
)

// natUpgradeAfter is the initiator's wait before it retries ICE for a
// relayed peer in TestNATUpgrade ($WEFT_ICE_UPGRADE_AFTER; 30 s by
// default). The wait doubles after each try.
const natUpgradeAfter = 4 * time.Second

// TestNATUpgrade is the path upgrade: a relayed connection keeps trying
// direct pairs and moves to one when it works.
//
// up-a, behind a symmetric NAT, connects to up-b, behind a port-restricted
// one: no hole can be punched, so the path goes through the anchor's
// relay. With an ssh session and a paced download open, up-a's router
// becomes port-restricted in place: up-a sees no change of its own network
// (so watchNetwork does not reconnect), and only the upgrade loop (ice.go
// tendPaths, upgrade) can find the direct path. The router keeps its
// mappings of the flows to the anchor's relay (up-a's allocation, and the
// relayed path to up-b's relay address), so the relayed path lives on; it
// forgets the others, as a rebooted NAT would: the flow to the anchor's DHT
// port, whose STUN answers give up-a its server-reflexive address, and
// the unanswered checks to up-b's. Mapped again the port-restricted way
// (Linux reuses the port of a kept flow from the same host and port), they
// share one port, which up-b's checks then reach.
//
// Within two upgrade waits and some seconds (the change may land just
// after a try, and the next wait is twice as long) `weft ping` says direct,
// up-a's log says the path was upgraded, and both TCP connections lived
// through it.
func TestNATUpgrade(t *testing.T) {
	t.Setenv(iceUpgradeEnv, natUpgradeAfter.String())
	l := newNATLab(t, "weftnatu", true)
	begin := time.Now()
	ra := l.router(t, "r-up-a", natlab.Symmetric)
	a := l.node(t, ra, "up-a", "")
	b := l.natNode(t, natlab.PortRestricted, "up-b")
	r := l.reach(t, a, b, false)
	if r.ping.Path != "relay" {
		t.Fatalf("symmetric -> port-restricted: path %q (%s); want relay to start with", r.ping.Path, r.ping.Reason)
	}

	// An ssh session that stays open until told to end, and a download
	// paced to last ~12 s.
	if b.ssh == nil {
		t.Skip(sshdUnavailable())
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pr.Close(); pw.Close() })
	c := exec.Command("ssh", labSSHArgs(t, a, b, "echo ready; read x; echo survived $x")...)
	c.Env = testEnv(t)
	c.Stdin = pr
	sess := &sshSession{p: natlab.StartCmd(t, "ssh "+b.name, c)}
	sess.p.WaitOutput(t, "ready", 20*time.Second)
	pr.Close() // ssh has its own copy
	dl := l.startDownload(t, a, b, 6<<20, 512<<10)
	time.Sleep(500 * time.Millisecond)

	changed := time.Now()
	ra.SetType(t, natlab.PortRestricted)
	dht := netip.AddrPortFrom(labAnchorIP, 41641)
	n := ra.ForgetMappings(t, func(dst netip.AddrPort) bool { return dst == dht || dst.Addr() != labAnchorIP })
	t.Logf("%s is port-restricted now (%v after the lab was up); %d mapping(s) forgotten", ra, changed.Sub(begin).Round(100*time.Millisecond), n)

	// weft ping until the path is direct.
	bound := 2*natUpgradeAfter + 6*time.Second
	var last weft.PingResult
	for {
		res := runWeft(t, "", "ping", "--state", a.state, "-c", "1", "--json", b.name)
		if res.code == 0 {
			last = weft.PingResult{}
			if err := json.NewDecoder(strings.NewReader(res.stdout)).Decode(&last); err != nil {
				t.Fatalf("weft ping --json: %v\n%s", err, res.stdout)
			}
			if last.Path == "direct" {
				break
			}
		} else {
			t.Logf("weft ping failed %v after the change: %s", time.Since(changed).Round(100*time.Millisecond), strings.TrimSpace(res.stderr))
		}
		if time.Since(changed) > bound {
			t.Fatalf("still %q (%s) %v after up-a's NAT became port-restricted; want direct within %v\ndaemon %s:\n%s",
				last.Path, last.Reason, time.Since(changed).Round(100*time.Millisecond), bound, a.name, tail(a.proc.Output(), 80))
		}
		time.Sleep(300 * time.Millisecond)
	}
	took := time.Since(changed)
	t.Logf("direct %v after the change: %s (%s) via %v", took.Round(100*time.Millisecond), last.Path, last.Reason, last.Endpoint)
	if !strings.Contains(last.Reason, "direct:") {
		t.Errorf("direct path's reason %q does not say direct", last.Reason)
	}
	if !strings.Contains(a.proc.Output(), "path upgraded from relay to direct") {
		t.Errorf("%s did not log \"path upgraded from relay to direct\": the direct path was not found by the upgrade loop\n%s", a.name, tail(a.proc.Output(), 80))
	}
	if out := a.proc.Output(); strings.Contains(out, "network changed") {
		t.Errorf("%s saw its network change; the test means to leave it alone:\n%s", a.name, tail(out, 80))
	}

	// The TCP connections lived through the switch.
	if _, err := pw.WriteString("after-upgrade\n"); err != nil {
		t.Errorf("ssh session's stdin: %v", err)
	}
	sess.check(t, "survived after-upgrade", 20*time.Second)
	dl.check(t, 30*time.Second)
	if p := l.ping(t, a, b); p.Path != "direct" {
		t.Errorf("after the transfers: path %q (%s); want direct", p.Path, p.Reason)
	}
	t.Logf("path upgrade case done in %v", time.Since(begin).Round(100*time.Millisecond))
}
