package dns_test

import (
	"context"
	"net/netip"
	"testing"

	mdns "github.com/miekg/dns"
	"github.com/weft-net/weft/dns"
)

// FuzzServeDNS feeds raw bytes to the handler as a UDP and as a TCP query:
// it must not panic, and must either stay silent (runts and responses only)
// or reply with a valid DNS response of the right ID and size.
func FuzzServeDNS(f *testing.F) {
	for _, seed := range []struct {
		name  string
		qtype uint16
		edns  bool
	}{
		{"api.weft.internal.", mdns.TypeA, false},
		{"api.weft.internal.", mdns.TypeAAAA, true},
		{dns.IDName(apiID, "weft.internal."), mdns.TypeA, false},
		{"weft.internal.", mdns.TypeSOA, true},
		{"10.0.64.100.in-addr.arpa.", mdns.TypePTR, false},
		{"a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.a.9.8.7.6.5.4.3.2.1.d.f.ip6.arpa.", mdns.TypePTR, true},
		{"nope.weft.internal.", mdns.TypeANY, false},
		{"example.com.", mdns.TypeA, true},
	} {
		m := new(mdns.Msg)
		m.SetQuestion(seed.name, seed.qtype)
		if seed.edns {
			m.SetEdns0(4096, true)
		}
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0, 1, 0x28, 0, 0, 1, 0, 0, 0, 0, 0, 0}) // UPDATE header
	f.Add(make([]byte, 12))

	e := newEnv(f, nil)
	e.res.Add(dns.Answer{Name: "many", NodeID: dbID, IPv4: netip.MustParseAddr("100.64.1.1")})
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, query []byte) {
		for _, tcp := range []bool{false, true} {
			reply := e.srv.HandleQuery(ctx, loopback, query, tcp)
			if reply == nil {
				if len(query) >= 12 && query[2]&0x80 == 0 {
					t.Fatalf("no reply to a %d-byte query", len(query))
				}
				continue
			}
			if len(query) < 12 || query[2]&0x80 != 0 {
				t.Fatal("replied to a runt or a response")
			}
			r := new(mdns.Msg)
			if err := r.Unpack(reply); err != nil {
				t.Fatalf("reply does not parse: %v", err)
			}
			if !r.Response || r.Id != uint16(query[0])<<8|uint16(query[1]) {
				t.Fatalf("reply header %v", r.MsgHdr)
			}
			limit := 512
			if r.IsEdns0() != nil {
				limit = dns.MaxUDPSize
			}
			if !tcp && len(reply) > limit {
				t.Fatalf("UDP reply of %d bytes, limit %d", len(reply), limit)
			}
		}
	})
}
