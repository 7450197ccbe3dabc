package nat

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestProbeRequestRoundTrip(t *testing.T) {
	tests := []probeRequest{
		{mode: probeChangeIP, txid: stunTxID{1, 2, 3}},
		{mode: probeChangePort, txid: stunTxID{9}, avoid: []netip.Addr{netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("2001:db8::1")}},
		{mode: probeRelay, txid: stunTxID{7}, target: ap("198.51.100.4:41641")},
		{mode: probeRelay, target: ap("[2001:db8::2]:1")},
	}
	for _, want := range tests {
		got, err := parseProbeRequest(want.marshal())
		if err != nil {
			t.Fatalf("%+v: %v", want, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("round trip %+v -> %+v", want, got)
		}
	}
	bad := [][]byte{
		nil,
		(&probeRequest{mode: probeChangeIP}).marshal()[:5],
		append((&probeRequest{mode: probeChangeIP}).marshal(), 0),
		(&probeRequest{mode: probeChangeIP, target: ap("1.2.3.4:5")}).marshal(), // target outside relay
		(&probeRequest{mode: probeRelay}).marshal(),                             // relay without target
		(&probeRequest{mode: 9}).marshal(),
	}
	for _, b := range bad {
		if _, err := parseProbeRequest(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("parseProbeRequest(%x) = %v, want ErrMalformed", b, err)
		}
	}
}

func FuzzParseProbeRequest(f *testing.F) {
	f.Add((&probeRequest{mode: probeChangeIP, avoid: []netip.Addr{netip.MustParseAddr("203.0.113.1")}}).marshal())
	f.Add((&probeRequest{mode: probeRelay, target: ap("[2001:db8::2]:1")}).marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseProbeRequest(b)
		if err != nil {
			return
		}
		again, err := parseProbeRequest(r.marshal())
		if err != nil || !reflect.DeepEqual(again, r) {
			t.Fatalf("re-encoding %+v: %+v, %v", r, again, err)
		}
	})
}

func TestClassifyMapping(t *testing.T) {
	local := ap("10.0.0.2:5000")
	ok := func(server, mapped string) STUNResult { return STUNResult{Server: ap(server), Mapped: ap(mapped)} }
	fail := func(server string) STUNResult { return STUNResult{Server: ap(server), Err: ErrNoSTUNReply} }
	tests := []struct {
		name    string
		servers []STUNResult
		udp     bool
		mapping Mapping
		public  int
	}{
		{"blocked", []STUNResult{fail("203.0.113.1:3478"), fail("203.0.113.2:3478")}, false, MappingUnknown, 0},
		{"eim", []STUNResult{ok("203.0.113.1:3478", "198.51.100.1:5000"), ok("203.0.113.2:3478", "198.51.100.1:5000")}, true, MappingEndpointIndependent, 1},
		{"edm", []STUNResult{ok("203.0.113.1:3478", "198.51.100.1:5000"), ok("203.0.113.2:3478", "198.51.100.1:6000")}, true, MappingEndpointDependent, 2},
		{"one ip", []STUNResult{ok("203.0.113.1:3478", "198.51.100.1:5000"), ok("203.0.113.1:3479", "198.51.100.1:5000")}, true, MappingUnknown, 1},
		{"one answer", []STUNResult{ok("203.0.113.1:3478", "198.51.100.1:5000"), fail("203.0.113.2:3478")}, true, MappingUnknown, 1},
		{"no nat", []STUNResult{ok("203.0.113.1:3478", "10.0.0.2:5000"), ok("203.0.113.2:3478", "10.0.0.2:5000")}, true, MappingNone, 1},
		{"no nat one server", []STUNResult{ok("203.0.113.1:3478", "10.0.0.2:5000")}, true, MappingNone, 1},
		{"same ip other port", []STUNResult{ok("203.0.113.1:3478", "10.0.0.2:5001"), ok("203.0.113.2:3478", "10.0.0.2:5001")}, true, MappingEndpointIndependent, 1},
	}
	c := &Conn{local: local}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &NATReport{Servers: tt.servers}
			c.classifyMapping(r, func() ([]netip.Addr, error) { return []netip.Addr{local.Addr()}, nil })
			if r.UDP != tt.udp || r.Mapping != tt.mapping || len(r.Public) != tt.public {
				t.Errorf("UDP %v mapping %v public %v (%s), want %v %v %d", r.UDP, r.Mapping, r.Public, r.MappingNote, tt.udp, tt.mapping, tt.public)
			}
		})
	}
}

func TestNATReportString(t *testing.T) {
	srv := []STUNResult{{Server: ap("203.0.113.1:3478"), Mapped: ap("203.0.113.5:41641"), Latency: 1200 * time.Microsecond}}
	tests := []struct {
		r    NATReport
		want string
	}{
		{NATReport{UDP: true, Mapping: MappingEndpointIndependent, Filtering: FilteringAddressAndPortDependent, Public: []netip.AddrPort{ap("203.0.113.5:41641")}, Servers: srv},
			"mapping: endpoint-independent, filtering: address-and-port-dependent (port-restricted cone), public 203.0.113.5:41641; latency 203.0.113.1:3478 1.2ms"},
		{NATReport{UDP: true, Mapping: MappingEndpointIndependent, Filtering: FilteringEndpointIndependent, Public: []netip.AddrPort{ap("203.0.113.5:41641")}, Servers: srv},
			"mapping: endpoint-independent, filtering: endpoint-independent (full cone), public 203.0.113.5:41641; latency 203.0.113.1:3478 1.2ms"},
		{NATReport{UDP: true, Mapping: MappingEndpointIndependent, Filtering: FilteringUnknown, FilteringNote: "no probers configured", Public: []netip.AddrPort{ap("203.0.113.5:41641")}, Servers: srv},
			"mapping: endpoint-independent, filtering: unknown (no probers configured), public 203.0.113.5:41641; latency 203.0.113.1:3478 1.2ms"},
		{NATReport{Servers: []STUNResult{{Server: ap("203.0.113.1:3478"), Err: errors.New("no STUN reply")}}},
			"UDP blocked: no reply from any of 1 STUN servers (no STUN reply)"},
	}
	for _, tt := range tests {
		if got := tt.r.String(); got != tt.want {
			t.Errorf("got  %s\nwant %s", got, tt.want)
		}
	}
}

// TestNetcheckLoopback runs a whole netcheck on loopback: no NAT, no
// filtering, through two STUN servers, a prober with a second socket and
// a helper at a third address.
func TestNetcheckLoopback(t *testing.T) {
	at := func(a string) func(*Config) { return func(c *Config) { c.Addr = ap(a) } }
	client := listen(t)
	s1, s2, helper := listen(t), listen(t, at("127.0.0.2:0")), listen(t, at("127.0.0.3:0"))
	alt, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer alt.Close()
	s1.ServeProbes(&ProbeConfig{Alt: alt, Helpers: func() []Peer { return []Peer{peerOf(helper)} }})
	helper.ServeProbes(&ProbeConfig{AllowRelay: func(p Peer) bool { return p.Key == s1.PublicKey() }})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var early *NATReport
	r, err := client.Netcheck(ctx, NetcheckConfig{
		STUN:      []netip.AddrPort{s1.LocalAddr(), s2.LocalAddr()},
		Probers:   []Peer{peerOf(s1)},
		ProbeWait: 300 * time.Millisecond,
		Mapped:    func(r *NATReport) { early = r },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(r)
	// The mapping comes first, before the probes.
	if early == nil || early == r || early.Mapping != MappingNone || early.Filtering != FilteringUnknown || early.Kind() != "no NAT" {
		t.Errorf("Mapped got %v, want a copy with the mapping and filtering unknown", early)
	}
	if !r.UDP || r.Mapping != MappingNone || r.Filtering != FilteringEndpointIndependent || r.Kind() != "open internet" {
		t.Errorf("report %v (%s / %s), want no NAT, endpoint-independent filtering", r, r.MappingNote, r.FilteringNote)
	}
	if len(r.Public) != 1 || r.Public[0] != client.LocalAddr() {
		t.Errorf("public %v, want %v", r.Public, client.LocalAddr())
	}
	if s := helper.Stats(); s.ProbesSent != 1 {
		t.Errorf("helper sent %d probes, want 1", s.ProbesSent)
	}

	// Without a helper the prober cannot test change-IP: the change-port
	// probe arrives, but that is address-dependent or better: unknown.
	s1.ServeProbes(&ProbeConfig{Alt: alt})
	r, err = client.Netcheck(ctx, NetcheckConfig{
		STUN:      []netip.AddrPort{s1.LocalAddr(), s2.LocalAddr()},
		Probers:   []Peer{peerOf(s1)},
		ProbeWait: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Filtering != FilteringUnknown || !strings.Contains(r.FilteringNote, "no probe helper") {
		t.Errorf("without a helper: filtering %v (%s), want unknown for want of a helper", r.Filtering, r.FilteringNote)
	}

	// A helper that does not trust the prober refuses.
	s1.ServeProbes(&ProbeConfig{Alt: alt, Helpers: func() []Peer { return []Peer{peerOf(helper)} }})
	helper.ServeProbes(&ProbeConfig{})
	r, err = client.Netcheck(ctx, NetcheckConfig{STUN: []netip.AddrPort{s1.LocalAddr()}, Probers: []Peer{peerOf(s1)}, ProbeWait: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if r.Filtering != FilteringUnknown || !strings.Contains(r.FilteringNote, "not allowed") {
		t.Errorf("untrusted prober: filtering %v (%s), want unknown, relay not allowed", r.Filtering, r.FilteringNote)
	}

	if _, err := client.Netcheck(ctx, NetcheckConfig{}); err == nil {
		t.Error("Netcheck without servers: no error")
	}
}
