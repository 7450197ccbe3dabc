//go:build linux

package main

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft"
	"github.com/weft-net/weft/internal/natlab"
)

// TestNATPortMapping: two nodes behind symmetric NATs, which no hole
// punching gets through (TestNATTraversal relays them), connect directly
// when their gateways offer NAT-PMP: each node asks its gateway (a real
// miniupnpd on the router) to map its port, names the mapped address in
// its record and its ICE offer or answer, and the peer's checks reach it
// there. `weft netcheck` shows the mapping; curl and ssh work over the
// path; `weft down` deletes the mapping.
//
// miniupnpd refuses to map when the router's public address is a reserved
// one (203.0.113.0/24 included), so these routers are on 11.0.0.0/24, a
// second subnet on the lab's switch: the anchor gets an address there too,
// and the routers reach 203.0.113.0/24 on the same segment.
func TestNATPortMapping(t *testing.T) {
	l := newNATLab(t, "weftnatp", true)
	natlab.NeedMiniupnpd(t)
	l.pub.AddAddr(t, "eth0", "11.0.0.1/24")
	router := func(short string, i byte) *natlab.Router {
		r := l.lab.Router(t, short, l.inet, natlab.RouterConfig{Type: natlab.Symmetric, PortMapping: true,
			Public: netip.PrefixFrom(netip.AddrFrom4([4]byte{11, 0, 0, 10 + i}), 24),
			LAN:    netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 200 + i, 1}), 24)})
		r.NS.IP(t, "route", "add", "203.0.113.0/24", "dev", "wan")
		return r
	}
	ra, rb := router("r-pm-a", 1), router("r-pm-b", 2)
	a := l.node(t, ra, "pm-a", "")
	b := l.node(t, rb, "pm-b", "")

	// Each node maps its port on its gateway.
	for _, n := range []*labNode{a, b} {
		var rep weft.NetcheckReport
		deadline := time.Now().Add(20 * time.Second)
		for {
			res := runWeft(t, "", "netcheck", "--state", n.state, "--json")
			if res.code == 0 && json.Unmarshal([]byte(res.stdout), &rep) == nil && strings.HasPrefix(rep.PortMapping, "NAT-PMP") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no port mapping after 20 s; netcheck says %q:\n%v\n%s", n.name, rep.PortMapping, res, tail(n.proc.Output(), 30))
			}
			time.Sleep(500 * time.Millisecond)
		}
		t.Logf("%s: netcheck: %s; port mapping: %s", n.name, rep.Summary, rep.PortMapping)
		if !strings.Contains(rep.PortMapping, "11.0.0.") {
			t.Errorf("%s: port mapping %q does not name the gateway's public address", n.name, rep.PortMapping)
		}
		out := mustWeft(t, "netcheck", "--state", n.state).stdout
		if !strings.Contains(out, "portmap    NAT-PMP") {
			t.Errorf("%s: weft netcheck does not show the mapping:\n%s", n.name, out)
		}
	}

	r := l.reach(t, a, b, true)
	if r.ping.Path != "direct" {
		t.Fatalf("symmetric <-> symmetric with NAT-PMP: path %q (%s); want direct", r.ping.Path, r.ping.Reason)
	}
	if !strings.HasPrefix(r.ping.Endpoint.Addr().String(), "11.0.0.") {
		t.Errorf("path endpoint %v; want the peer's mapped address on its gateway (11.0.0.x)", r.ping.Endpoint)
	}
	if !r.ssh {
		t.Errorf("ssh over the mapped path did not work")
	}

	// weft down deletes the mapping: miniupnpd's lease file empties.
	stopTUNDaemon(t, a.proc, a.state)
	leases := func() string { return ra.NS.MustRun(t, "nft", "list", "table", "inet", "miniupnpd") }
	deadline := time.Now().Add(5 * time.Second)
	for strings.Contains(leases(), "dnat") {
		if time.Now().After(deadline) {
			t.Fatalf("the mapping of pm-a is still on its gateway after weft down:\n%s", leases())
		}
		time.Sleep(200 * time.Millisecond)
	}
}
