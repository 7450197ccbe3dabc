package weft

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/weft-net/weft/trust"
)

// tcp4 builds an IPv4/TCP header with the given flags (checksums zero: the
// filter does not look at them).
func tcp4(src, dst netip.Addr, sport, dport uint16, flags byte) []byte {
	p := make([]byte, 40)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], 40)
	p[9] = 6
	s4, d4 := src.As4(), dst.As4()
	copy(p[12:], s4[:])
	copy(p[16:], d4[:])
	binary.BigEndian.PutUint16(p[20:], sport)
	binary.BigEndian.PutUint16(p[22:], dport)
	p[33] = flags
	return p
}

func udp4pkt(src, dst netip.Addr, sport, dport uint16) []byte {
	p := make([]byte, 28)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], 28)
	p[9] = 17
	s4, d4 := src.As4(), dst.As4()
	copy(p[12:], s4[:])
	copy(p[16:], d4[:])
	binary.BigEndian.PutUint16(p[20:], sport)
	binary.BigEndian.PutUint16(p[22:], dport)
	return p
}

func TestPolicyFilter(t *testing.T) {
	me := netip.MustParseAddr("100.64.0.1")
	web := netip.MustParseAddr("100.64.0.2")
	other := netip.MustParseAddr("100.64.0.3")
	p := &trust.Policy{Rules: []trust.Rule{{From: []string{"web"}, To: []string{"db"}, Proto: "tcp", Ports: []trust.PortRange{{Lo: 5432, Hi: 5432}}}}}
	f := newFilter()
	// No policy: everything passes.
	if got := f.filterInbound([][]byte{tcp4(other, me, 1000, 22, 0x02)}, 0); len(got) != 1 {
		t.Fatal("without a policy a packet was dropped")
	}
	f.update(p, []string{"db"}, map[netip.Addr][]string{web: {"web"}})
	cases := []struct {
		name string
		pkt  []byte
		want bool
	}{
		{"web syn to 5432", tcp4(web, me, 1000, 5432, 0x02), true},
		{"web syn to 22", tcp4(web, me, 1000, 22, 0x02), false},
		{"untagged syn to 5432", tcp4(other, me, 1000, 5432, 0x02), false},
		{"syn-ack reply from anyone", tcp4(other, me, 22, 1000, 0x12), true},
		{"ack of an established flow", tcp4(other, me, 22, 1000, 0x10), true},
		{"udp from untagged", udp4pkt(other, me, 53, 4000), false},
		{"garbage", []byte{0x45, 1, 2}, true},
	}
	for _, c := range cases {
		got := len(f.filterInbound([][]byte{c.pkt}, 0)) == 1
		if got != c.want {
			t.Errorf("%s: allowed=%v, want %v", c.name, got, c.want)
		}
	}
	// A UDP flow this node started lets its replies in.
	f.noteOutbound(udp4pkt(me, other, 4000, 53), 100)
	if !f.allowInbound(f.state.Load(), udp4pkt(other, me, 53, 4000), 100) {
		t.Error("reply to our own UDP flow refused")
	}
	if f.allowInbound(f.state.Load(), udp4pkt(other, me, 53, 4000), 100+int64(udpFlowTTL.Seconds())+1) {
		t.Error("reply accepted after the flow expired")
	}
	if f.dropped.Load() == 0 {
		t.Error("drops not counted")
	}
}

func TestStatementsRoundTrip(t *testing.T) {
	in := []statement{{kindRevocation, []byte("r")}, {kindChange, bytes.Repeat([]byte{7}, 300)}, {kindPolicy, nil}}
	out, err := decodeStatements(encodeStatements(in, 1<<16))
	if err != nil || len(out) != 3 || out[1].kind != kindChange || len(out[1].body) != 300 {
		t.Fatalf("round trip: %v %+v", err, out)
	}
	if got := encodeStatements(in, 10); len(got) > 10 {
		t.Fatalf("encode exceeded its bound: %d bytes", len(got))
	}
	for _, bad := range [][]byte{{1}, {9, 0, 0}, {1, 0, 5, 1}} {
		if _, err := decodeStatements(bad); err == nil {
			t.Errorf("decoded garbage %x", bad)
		}
	}
}

func FuzzDecodeStatements(f *testing.F) {
	f.Add(encodeStatements([]statement{{kindRevocation, []byte("abc")}}, 1<<16))
	f.Add([]byte{3, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		ss, err := decodeStatements(b)
		if err != nil {
			return
		}
		if again := encodeStatements(ss, 1<<20); !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs: %x vs %x", again, b)
		}
	})
}

func FuzzParseTransport(f *testing.F) {
	f.Add(tcp4(netip.MustParseAddr("100.64.0.2"), netip.MustParseAddr("100.64.0.1"), 1, 2, 2))
	f.Add(udp4pkt(netip.MustParseAddr("100.64.0.2"), netip.MustParseAddr("100.64.0.1"), 1, 2))
	f.Add(make([]byte, 48))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, ok := parseTransport(b)
		if ok && !h.src.IsValid() {
			t.Fatal("parsed a packet without a source address")
		}
		packetDst(b)
		packetSrc(b)
	})
}

func FuzzDecodeReachProbe(f *testing.F) {
	nonce := bytes.Repeat([]byte{7}, reachNonceLen)
	seed, err := encodeReachProbe(nonce, [32]byte{1}, []netip.AddrPort{
		netip.MustParseAddrPort("192.0.2.1:41641"), netip.MustParseAddrPort("[2001:db8::1]:51820")})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add(seed[:len(seed)-1])
	f.Add(append(bytes.Clone(seed), 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		nonce, key, eps, err := decodeReachProbe(b)
		if err != nil {
			return
		}
		for _, ep := range eps {
			if !ep.IsValid() || ep.Addr().IsUnspecified() || ep.Port() == 0 {
				t.Fatalf("decoded unusable endpoint %v", ep)
			}
		}
		again, err := encodeReachProbe(nonce, key, eps)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs: %x vs %x (%v)", again, b, err)
		}
	})
}
