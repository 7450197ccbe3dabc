package dns_test

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/weft-net/weft/dns"
)

func TestOverlayAnswers(t *testing.T) {
	e := newEnv(t, nil)
	apiHex := dns.IDName(apiID, "weft.internal.")
	soa := "weft.internal. 5 IN SOA weft.internal. hostmaster.weft.internal. 1 3600 600 86400 5"
	tests := []struct {
		name   string
		qname  string
		qtype  uint16
		rcode  int
		answer []string
		ns     []string
	}{
		{"A", "api.weft.internal.", mdns.TypeA, mdns.RcodeSuccess, []string{"api.weft.internal. 30 IN A 100.64.0.10"}, nil},
		{"AAAA", "api.weft.internal.", mdns.TypeAAAA, mdns.RcodeSuccess, []string{"api.weft.internal. 30 IN AAAA fd12:3456:789a::a"}, nil},
		{"case echoed", "ApI.WEFT.internal.", mdns.TypeA, mdns.RcodeSuccess, []string{"ApI.WEFT.internal. 30 IN A 100.64.0.10"}, nil},
		{"id form", apiHex, mdns.TypeA, mdns.RcodeSuccess, []string{apiHex + " 30 IN A 100.64.0.10"}, nil},
		{"id form upper case", strings.ToUpper(apiHex), mdns.TypeAAAA, mdns.RcodeSuccess, []string{strings.ToUpper(apiHex) + " 30 IN AAAA fd12:3456:789a::a"}, nil},
		{"id form half", apiID.String()[:32] + ".id.weft.internal.", mdns.TypeA, mdns.RcodeNameError, nil, []string{soa}},
		{"id form unknown", dns.IDName(dbID, "weft.internal.")[:10] + "0000000000" + dns.IDName(dbID, "weft.internal.")[20:], mdns.TypeA, mdns.RcodeNameError, nil, []string{soa}},
		{"TTL capped", "db.weft.internal.", mdns.TypeA, mdns.RcodeSuccess, []string{"db.weft.internal. 60 IN A 100.64.0.11"}, nil},
		{"nameless node has no name", "anon.weft.internal.", mdns.TypeA, mdns.RcodeNameError, nil, []string{soa}},
		{"NODATA no IPv6", "db.weft.internal.", mdns.TypeAAAA, mdns.RcodeSuccess, nil, []string{soa}},
		{"NODATA MX", "api.weft.internal.", mdns.TypeMX, mdns.RcodeSuccess, nil, []string{soa}},
		{"NODATA ANY", "api.weft.internal.", mdns.TypeANY, mdns.RcodeSuccess, nil, []string{soa}},
		{"NXDOMAIN", "nope.weft.internal.", mdns.TypeA, mdns.RcodeNameError, nil, []string{soa}},
		{"NXDOMAIN deeper", "a.api.weft.internal.", mdns.TypeA, mdns.RcodeNameError, nil, []string{soa}},
		{"NXDOMAIN bad id", "abcd.id.weft.internal.", mdns.TypeA, mdns.RcodeNameError, nil, []string{soa}},
		{"NXDOMAIN bad label", "under_score.weft.internal.", mdns.TypeA, mdns.RcodeNameError, nil, []string{soa}},
		{"id is an empty non-terminal", "id.weft.internal.", mdns.TypeA, mdns.RcodeSuccess, nil, []string{soa}},
		{"apex SOA", "weft.internal.", mdns.TypeSOA, mdns.RcodeSuccess, []string{soa}, nil},
		{"apex SOA case", "Weft.Internal.", mdns.TypeSOA, mdns.RcodeSuccess, []string{strings.Replace(soa, "weft.internal.", "Weft.Internal.", 1)}, nil},
		{"apex NS", "weft.internal.", mdns.TypeNS, mdns.RcodeSuccess, []string{"weft.internal. 60 IN NS weft.internal."}, nil},
		{"apex A", "weft.internal.", mdns.TypeA, mdns.RcodeSuccess, nil, []string{soa}},
		{"PTR v4", "10.0.64.100.in-addr.arpa.", mdns.TypePTR, mdns.RcodeSuccess, []string{"10.0.64.100.in-addr.arpa. 30 IN PTR api.weft.internal."}, nil},
		{"PTR v6", "a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.a.9.8.7.6.5.4.3.2.1.d.f.ip6.arpa.", mdns.TypePTR, mdns.RcodeSuccess,
			[]string{"a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.a.9.8.7.6.5.4.3.2.1.d.f.ip6.arpa. 30 IN PTR api.weft.internal."}, nil},
		{"PTR nameless node", "12.0.64.100.in-addr.arpa.", mdns.TypePTR, mdns.RcodeSuccess, []string{"12.0.64.100.in-addr.arpa. 2 IN PTR " + dns.IDName(anonID, "weft.internal.")}, nil},
		{"PTR unknown overlay address", "99.0.64.100.in-addr.arpa.", mdns.TypePTR, mdns.RcodeNameError, nil,
			[]string{"100.in-addr.arpa. 5 IN SOA weft.internal. hostmaster.weft.internal. 1 3600 600 86400 5"}},
		{"PTR NODATA", "10.0.64.100.in-addr.arpa.", mdns.TypeTXT, mdns.RcodeSuccess, nil,
			[]string{"100.in-addr.arpa. 5 IN SOA weft.internal. hostmaster.weft.internal. 1 3600 600 86400 5"}},
		{"PTR outside overlay, no upstreams", "1.1.168.192.in-addr.arpa.", mdns.TypePTR, mdns.RcodeRefused, nil, nil},
		{"other name, no upstreams", "example.com.", mdns.TypeA, mdns.RcodeRefused, nil, nil},
		{"escaped dot is another zone", `x\.weft.internal.`, mdns.TypeA, mdns.RcodeRefused, nil, nil},
		{"CHAOS in overlay", "api.weft.internal.", mdns.TypeTXT, mdns.RcodeRefused, nil, nil}, // class set below
		{"AXFR", "weft.internal.", mdns.TypeAXFR, mdns.RcodeRefused, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := question(tt.qname, tt.qtype)
			if tt.name == "CHAOS in overlay" {
				m.Question[0].Qclass = mdns.ClassCHAOS
			}
			r := e.query(t, loopback, m)
			if r.Rcode != tt.rcode {
				t.Fatalf("rcode %s, want %s\n%v", mdns.RcodeToString[r.Rcode], mdns.RcodeToString[tt.rcode], r)
			}
			var want, wantNS []string
			for _, s := range tt.answer {
				want = append(want, rr(t, s))
			}
			for _, s := range tt.ns {
				wantNS = append(wantNS, rr(t, s))
			}
			if got := strs(r.Answer); !slices.Equal(got, want) {
				t.Errorf("answer\n got %q\nwant %q", got, want)
			}
			if got := strs(r.Ns); !slices.Equal(got, wantNS) {
				t.Errorf("authority\n got %q\nwant %q", got, wantNS)
			}
			if len(r.Question) != 1 || r.Question[0].Name != tt.qname {
				t.Errorf("question %v, want %q echoed", r.Question, tt.qname)
			}
			authoritative := tt.rcode == mdns.RcodeSuccess || tt.rcode == mdns.RcodeNameError
			if r.Authoritative != authoritative {
				t.Errorf("AA %v, want %v", r.Authoritative, authoritative)
			}
		})
	}
}

func TestResolverErrors(t *testing.T) {
	e := newEnv(t, nil)
	e.res.Err = errors.New("dht unreachable")
	for _, q := range []*mdns.Msg{question("api.weft.internal.", mdns.TypeA), question("10.0.64.100.in-addr.arpa.", mdns.TypePTR)} {
		if r := e.query(t, loopback, q); r.Rcode != mdns.RcodeServerFailure {
			t.Errorf("%v: rcode %s, want SERVFAIL", q.Question[0], mdns.RcodeToString[r.Rcode])
		}
	}
	// Wrapped ErrNotFound is NXDOMAIN, and SERVFAIL is never cached.
	e.res.Err = nil
	if r := e.query(t, loopback, question("api.weft.internal.", mdns.TypeA)); r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
		t.Errorf("after recovery: %v", r)
	}
	st := e.srv.Stats()
	if st.ServFail != 2 || st.OverlayHits != 1 || st.Queries != 3 {
		t.Errorf("stats %+v", st)
	}
}

func TestNoPrefixesReverseFallsThrough(t *testing.T) {
	u := dnstestUpstreamPTR(t)
	e := newEnv(t, func(c *dns.Config) {
		c.Prefixes = nil
		c.Upstreams = []netip.AddrPort{u}
	})
	r := e.query(t, loopback, question("10.0.64.100.in-addr.arpa.", mdns.TypePTR))
	if len(r.Answer) != 1 || r.Answer[0].(*mdns.PTR).Ptr != "api.weft.internal." || !r.Authoritative {
		t.Fatalf("overlay PTR: %v", r)
	}
	r = e.query(t, loopback, question("99.0.64.100.in-addr.arpa.", mdns.TypePTR))
	if len(r.Answer) != 1 || r.Answer[0].(*mdns.PTR).Ptr != "upstream.example." || r.Authoritative {
		t.Fatalf("unknown address not forwarded: %v", r)
	}
}

func TestProtocol(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	packed := func(m *mdns.Msg) []byte {
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	base := question("api.weft.internal.", mdns.TypeA)
	base.Id = 0x1234

	t.Run("drops runts and responses", func(t *testing.T) {
		for _, b := range [][]byte{nil, {1}, make([]byte, 11)} {
			if r := e.srv.HandleQuery(ctx, loopback, b, false); r != nil {
				t.Errorf("reply to %d-byte packet", len(b))
			}
		}
		resp := base.Copy()
		resp.Response = true
		if r := e.srv.HandleQuery(ctx, loopback, packed(resp), false); r != nil {
			t.Error("replied to a response")
		}
	})
	t.Run("garbage body is FORMERR", func(t *testing.T) {
		b := append(packed(base)[:12:12], 0xff, 0xff, 0xff)
		r := new(mdns.Msg)
		if err := r.Unpack(e.srv.HandleQuery(ctx, loopback, b, false)); err != nil {
			t.Fatal(err)
		}
		if r.Rcode != mdns.RcodeFormatError || r.Id != 0x1234 || !r.RecursionDesired {
			t.Errorf("got %v", r)
		}
	})
	t.Run("no question is FORMERR", func(t *testing.T) {
		m := base.Copy()
		m.Question = nil
		if r := e.query(t, loopback, m); r.Rcode != mdns.RcodeFormatError {
			t.Errorf("got %v", r)
		}
	})
	t.Run("two questions is FORMERR", func(t *testing.T) {
		m := base.Copy()
		m.Question = append(m.Question, mdns.Question{Name: "db.weft.internal.", Qtype: mdns.TypeA, Qclass: mdns.ClassINET})
		if r := e.query(t, loopback, m); r.Rcode != mdns.RcodeFormatError {
			t.Errorf("got %v", r)
		}
	})
	t.Run("opcodes other than QUERY are NOTIMP", func(t *testing.T) {
		for _, op := range []int{mdns.OpcodeNotify, mdns.OpcodeUpdate, mdns.OpcodeStatus, mdns.OpcodeIQuery} {
			m := base.Copy()
			m.Opcode = op
			if r := e.query(t, loopback, m); r.Rcode != mdns.RcodeNotImplemented || r.Opcode != op {
				t.Errorf("opcode %d: got %v", op, r)
			}
		}
	})
	t.Run("EDNS echoed", func(t *testing.T) {
		m := base.Copy()
		m.SetEdns0(4096, true)
		r := e.query(t, loopback, m)
		opt := r.IsEdns0()
		if opt == nil || opt.UDPSize() != dns.MaxUDPSize || !opt.Do() || opt.Version() != 0 || len(r.Answer) != 1 {
			t.Errorf("got %v", r)
		}
		if r := e.query(t, loopback, base); r.IsEdns0() != nil {
			t.Error("OPT in reply to a query without one")
		}
	})
	t.Run("EDNS version 1 is BADVERS", func(t *testing.T) {
		m := base.Copy()
		m.SetEdns0(1232, false)
		m.IsEdns0().SetVersion(1)
		r := e.query(t, loopback, m)
		if r.Rcode != mdns.RcodeBadVers || r.IsEdns0() == nil || len(r.Answer) != 0 {
			t.Errorf("got %v", r)
		}
	})
	t.Run("two OPTs is FORMERR", func(t *testing.T) {
		m := base.Copy()
		m.SetEdns0(1232, false)
		m.Extra = append(m.Extra, m.Extra[0])
		if r := e.query(t, loopback, m); r.Rcode != mdns.RcodeFormatError || r.IsEdns0() != nil {
			t.Errorf("got %v", r)
		}
	})
	t.Run("OPT as question type is FORMERR", func(t *testing.T) {
		if r := e.query(t, loopback, question("api.weft.internal.", mdns.TypeOPT)); r.Rcode != mdns.RcodeFormatError {
			t.Errorf("got %v", r)
		}
	})
	st := e.srv.Stats()
	if st.Dropped != 4 || st.FormErr != 5 || st.NotImp != 4 {
		t.Errorf("stats %+v", st)
	}
}

func TestOverlayCache(t *testing.T) {
	e := newEnv(t, nil)
	q := question("api.weft.internal.", mdns.TypeA)
	e.query(t, loopback, q)
	e.clock.Advance(10 * time.Second)
	r := e.query(t, loopback, q)
	if e.res.Calls() != 1 {
		t.Fatalf("resolver called %d times, want 1 (cached)", e.res.Calls())
	}
	if ttl := r.Answer[0].Header().Ttl; ttl != 20 {
		t.Errorf("TTL from cache %d, want 20", ttl)
	}
	e.clock.Advance(20 * time.Second)
	e.query(t, loopback, q)
	if e.res.Calls() != 2 {
		t.Fatalf("resolver called %d times after expiry, want 2", e.res.Calls())
	}

	// Negative answers are cached for the negative TTL.
	nq := question("new.weft.internal.", mdns.TypeA)
	if r := e.query(t, loopback, nq); r.Rcode != mdns.RcodeNameError {
		t.Fatalf("got %v", r)
	}
	newNode := api
	newNode.Name, newNode.NodeID, newNode.IPv4 = "new", dbID, netip.MustParseAddr("100.64.0.20")
	newNode.NodeID[0] ^= 1
	e.res.Add(newNode)
	if r := e.query(t, loopback, nq); r.Rcode != mdns.RcodeNameError {
		t.Fatalf("negative answer not cached: %v", r)
	}
	e.clock.Advance(dns.DefaultNegativeTTL)
	if r := e.query(t, loopback, nq); r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("after negative TTL: %v", r)
	}
	if st := e.srv.Stats(); st.CacheHits != 2 || st.NXDomain != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestCacheBounded(t *testing.T) {
	e := newEnv(t, func(c *dns.Config) { c.CacheSize = 2 })
	for _, n := range []string{"api", "db", "api", "nope", "db"} {
		e.query(t, loopback, question(n+".weft.internal.", mdns.TypeA))
	}
	// api miss, db miss, api hit, nope miss (evicts db), db miss.
	if e.res.Calls() != 4 {
		t.Errorf("resolver called %d times, want 4", e.res.Calls())
	}
	off := newEnv(t, func(c *dns.Config) { c.CacheSize = -1 })
	for range 3 {
		off.query(t, loopback, question("api.weft.internal.", mdns.TypeA))
	}
	if off.res.Calls() != 3 {
		t.Errorf("cache disabled: resolver called %d times, want 3", off.res.Calls())
	}
}

func TestInvalidate(t *testing.T) {
	e := newEnv(t, nil)
	qA := question("api.weft.internal.", mdns.TypeA)
	qID := question(dns.IDName(apiID, "weft.internal."), mdns.TypeAAAA)
	qPTR := question("10.0.64.100.in-addr.arpa.", mdns.TypePTR)
	qDB := question("db.weft.internal.", mdns.TypeA)
	warm := func() {
		for _, q := range []*mdns.Msg{qA, qID, qPTR, qDB} {
			e.query(t, loopback, q)
		}
	}
	warm()
	moved := api
	moved.IPv4 = netip.MustParseAddr("100.64.0.99")
	e.res.Add(moved)
	if r := e.query(t, loopback, qA); r.Answer[0].(*mdns.A).A.String() != "100.64.0.10" {
		t.Fatalf("not cached: %v", r)
	}
	for _, name := range []string{"api", "API.weft.internal.", apiID.String(), dns.IDName(apiID, "weft.internal"), apiID.String() + ".id.weft.internal", "100.64.0.10", "fd12:3456:789a::a"} {
		e.srv.Flush()
		e.res.Add(api)
		warm()
		e.res.Add(moved)
		if n := e.srv.Invalidate(name); n != 3 {
			t.Errorf("Invalidate(%q) dropped %d replies, want 3 (A, id AAAA, PTR)", name, n)
		}
		if r := e.query(t, loopback, qA); r.Answer[0].(*mdns.A).A.String() != "100.64.0.99" {
			t.Errorf("Invalidate(%q): still %v", name, r.Answer)
		}
		if r := e.query(t, loopback, qPTR); r.Rcode != mdns.RcodeNameError {
			t.Errorf("Invalidate(%q): old PTR still answered: %v", name, r)
		}
	}
	// A lookup in flight during Invalidate is not cached.
	block := &blockingResolver{Resolver: e.res, release: make(chan struct{}), entered: make(chan struct{}, 1)}
	b := newEnv(t, func(c *dns.Config) { c.Resolver = block })
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.srv.HandleQuery(context.Background(), loopback, mustPack(t, qA), false)
	}()
	<-block.entered
	b.srv.Invalidate("api")
	close(block.release)
	<-done
	b.query(t, loopback, qA)
	if block.calls.Load() != 2 {
		t.Errorf("resolver called %d times, want 2: an answer resolved across Invalidate was cached", block.calls.Load())
	}
}
