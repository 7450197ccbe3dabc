package weft

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/weft-net/weft/addr"
	"github.com/weft-net/weft/nat"
	"github.com/weft-net/weft/nat/ice"
	"github.com/weft-net/weft/trust"
)

func TestSignalRoundTrip(t *testing.T) {
	long := strings.Repeat("n", 100)
	for _, tc := range []struct {
		name    string
		id      uint64
		rec     []byte
		nat     string
		desc    []byte
		wantNAT string
	}{
		{"typical", 42, []byte("record"), "symmetric", []byte("description"), "symmetric"},
		{"no record no nat", 0, nil, "", []byte{1}, ""},
		{"long nat kind is cut", 1<<64 - 1, bytes.Repeat([]byte{7}, 600), long, []byte("d"), long[:64]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := decodeSignal(encodeSignal(tc.id, tc.rec, tc.nat, tc.desc))
			if err != nil {
				t.Fatal(err)
			}
			if s.id != tc.id || !bytes.Equal(s.raw, tc.rec) || s.nat != tc.wantNAT || !bytes.Equal(s.desc, tc.desc) {
				t.Fatalf("got id %d raw %q nat %q desc %q", s.id, s.raw, s.nat, s.desc)
			}
		})
	}
}

func TestDecodeSignalMalformed(t *testing.T) {
	good := encodeSignal(7, []byte("rec"), "full cone", []byte("desc"))
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"short header", good[:10]},
		{"record longer than the message", append(append([]byte{}, good[:8]...), 0xff, 0xff, 1)},
		{"nat kind truncated", good[:8+2+3+1+3]},
		{"no description", encodeSignal(7, []byte("rec"), "x", nil)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := decodeSignal(tc.b); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

// FuzzDecodeSignal: decodeSignal never panics, and what it accepts
// encodes back to the same bytes.
func FuzzDecodeSignal(f *testing.F) {
	f.Add(encodeSignal(1, []byte("record"), "symmetric", []byte("desc")))
	f.Add(encodeSignal(0, nil, "", []byte{0}))
	f.Add([]byte{})
	f.Add(make([]byte, 11))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := decodeSignal(b)
		if err != nil {
			return
		}
		if len(s.desc) == 0 {
			t.Fatal("accepted a signal without a description")
		}
		if out := encodeSignal(s.id, s.raw, s.nat, s.desc); !bytes.Equal(out, b) {
			t.Fatalf("re-encoded %x, want %x", out, b)
		}
	})
}

func TestPathReason(t *testing.T) {
	ap := netip.MustParseAddrPort
	relay := ice.Path{LocalType: ice.TypeRelay, RemoteType: ice.TypeSrflx, Local: ap("203.0.113.1:50000"), Remote: ap("198.51.100.2:4000"), Relayed: true}
	remoteRelay := ice.Path{LocalType: ice.TypeSrflx, RemoteType: ice.TypeRelay, Local: ap("198.51.100.2:4000"), Remote: ap("203.0.113.1:50001"), Relayed: true}
	for _, tc := range []struct {
		name      string
		p         ice.Path
		own, peer string
		want      string
	}{
		{"both symmetric", relay, "symmetric", "symmetric", "relay: both sides behind endpoint-dependent (symmetric) NAT; via TURN relay address 203.0.113.1:50000"},
		{"symmetric here, port-restricted there", relay, "symmetric", "port-restricted cone", "relay: symmetric NAT here, port-restricted NAT at peer;"},
		{"peer's relay", remoteRelay, "port-restricted cone", "symmetric", "relay: port-restricted NAT here, symmetric NAT at peer; via the peer's TURN relay address 203.0.113.1:50001"},
		{"UDP blocked", relay, "UDP blocked", "full cone", "relay: UDP blocked here;"},
		{"unknown", relay, "", "", "relay: no direct candidate pair worked (NAT types unknown"},
		{"one known", relay, "symmetric", "", "relay: no direct candidate pair worked (symmetric NAT here, NAT type unknown at peer)"},
		{"LAN", ice.Path{LocalType: ice.TypeHost, RemoteType: ice.TypeHost, Local: ap("192.168.1.2:41641"), Remote: ap("192.168.1.3:41641")}, "", "", "direct: host candidate on the same LAN (192.168.1.3:41641)"},
		{"public host", ice.Path{LocalType: ice.TypeHost, RemoteType: ice.TypeHost, Local: ap("203.0.113.2:41641"), Remote: ap("203.0.113.3:41641")}, "", "", "direct: host candidate, no NAT between"},
		{"hole punched", ice.Path{LocalType: ice.TypeSrflx, RemoteType: ice.TypePrflx, Local: ap("198.51.100.2:4000"), Remote: ap("198.51.100.9:5000")}, "full cone", "full cone", "direct: server-reflexive (NAT hole punched)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := pathReason(tc.p, tc.own, tc.peer); !strings.HasPrefix(got, tc.want) {
				t.Errorf("got  %q\nwant %q...", got, tc.want)
			}
		})
	}
}

func TestRelaySetDescribe(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    relaySet
		want string
	}{
		{"none known", relaySet{}, "no relay known"},
		{"refused", relaySet{known: 1, notes: []string{"relay of pub: credentials refused"}}, "no relay usable: relay of pub: credentials refused"},
		{"no path", relaySet{known: 1, turn: []ice.TURNServer{{Addr: netip.MustParseAddrPort("203.0.113.1:3478")}}}, "relays 203.0.113.1:3478 gave no working path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.s.describe(); !strings.HasPrefix(got, tc.want) {
				t.Errorf("got %q, want %q...", got, tc.want)
			}
		})
	}
}

func TestRelayPublicIP(t *testing.T) {
	ap := netip.MustParseAddrPort
	for _, tc := range []struct {
		name   string
		listen netip.AddrPort
		eps    []netip.AddrPort
		want   string
	}{
		{"specific listen", ap("192.0.2.7:3478"), []netip.AddrPort{ap("203.0.113.1:41641")}, "192.0.2.7"},
		{"public endpoint first", ap("0.0.0.0:3478"), []netip.AddrPort{ap("10.0.0.2:41641"), ap("127.0.0.1:41641"), ap("203.0.113.1:41641")}, "203.0.113.1"},
		{"private if nothing public", ap("0.0.0.0:3478"), []netip.AddrPort{ap("127.0.0.1:41641"), ap("10.0.0.2:41641")}, "10.0.0.2"},
		{"loopback last", ap("0.0.0.0:3478"), []netip.AddrPort{ap("127.0.0.1:41641")}, "127.0.0.1"},
		{"IPv4 relay skips IPv6", ap("0.0.0.0:3478"), []netip.AddrPort{ap("[2001:db8::1]:41641")}, "invalid IP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := relayPublicIP(tc.listen, tc.eps).String(); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

// TestNATReportUpdatesReasons: a netcheck that names the NAT after a path
// was chosen updates the path's reason; an early (mapping-only) report
// does not replace a report that names the NAT.
func TestNATReportUpdatesReasons(t *testing.T) {
	ap := netip.MustParseAddrPort
	rec := &trust.NodeRecord{Cert: &trust.Certificate{Name: "peer", NodeID: addr.NodeID{1}}}
	path := ice.Path{LocalType: ice.TypeRelay, RemoteType: ice.TypePrflx, Local: ap("203.0.113.1:50000"), Remote: ap("198.51.100.2:4000"), Relayed: true}
	n := &Node{logger: slog.New(slog.DiscardHandler), peers: map[addr.NodeID]*peerState{},
		nat: &natState{paths: map[addr.NodeID]*peerPath{}, checked: make(chan struct{})}}
	pp := &peerPath{rec: rec, path: path, peerNAT: "symmetric"}
	pp.reason = n.pathReason(path, pp.peerNAT)
	n.nat.paths[rec.Cert.NodeID] = pp
	n.peers[rec.Cert.NodeID] = &peerState{rec: rec, reason: pp.reason}
	if strings.Contains(pp.reason, "both sides") {
		t.Fatalf("before a netcheck: %q", pp.reason)
	}

	unknown := &nat.NATReport{UDP: true, Mapping: nat.MappingUnknown}
	n.setNATReport(unknown, false)
	select {
	case <-n.nat.checked:
		t.Error("checked closed by a report that does not name the NAT")
	default:
	}
	sym := &nat.NATReport{UDP: true, Mapping: nat.MappingEndpointDependent}
	n.setNATReport(sym, true)
	select {
	case <-n.nat.checked:
	default:
		t.Error("checked still open after a report naming a symmetric NAT")
	}
	want := "relay: both sides behind endpoint-dependent (symmetric) NAT"
	if got := n.peers[rec.Cert.NodeID].reason; !strings.HasPrefix(got, want) {
		t.Errorf("peer's reason %q, want %q...", got, want)
	}
	// An early report does not replace one that names the NAT.
	n.setNATReport(&nat.NATReport{UDP: true, Mapping: nat.MappingNone}, true)
	if got := n.natKind(); got != "symmetric" {
		t.Errorf("after an early report: NAT %q, want symmetric kept", got)
	}
}
