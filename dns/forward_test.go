package dns_test

import (
	"context"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/weft-net/weft/dns"
	"github.com/weft-net/weft/dns/dnstest"
)

// blockingResolver blocks every lookup until release is closed.
type blockingResolver struct {
	*dnstest.Resolver
	release chan struct{}
	entered chan struct{}
	calls   atomic.Int64
}

func (b *blockingResolver) ResolveName(ctx context.Context, name string) (dns.Answer, error) {
	b.calls.Add(1)
	select {
	case b.entered <- struct{}{}:
	default:
	}
	<-b.release
	return b.Resolver.ResolveName(ctx, name)
}

func mustPack(t testing.TB, m *mdns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dnstestUpstreamPTR starts an upstream answering every PTR with
// upstream.example.
func dnstestUpstreamPTR(t *testing.T) netip.AddrPort {
	u := dnstest.NewUpstream(t, func(w mdns.ResponseWriter, r *mdns.Msg, tcp bool) {
		m := new(mdns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		m.Answer = []mdns.RR{&mdns.PTR{Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypePTR, Class: mdns.ClassINET, Ttl: 60}, Ptr: "upstream.example."}}
		w.WriteMsg(m)
	})
	return u.Addr
}

// bigHandler answers "big." with 100 A records, truncating over UDP to the
// client's size as a real server does, and defers to next otherwise.
func bigHandler(next func(mdns.ResponseWriter, *mdns.Msg, bool)) func(mdns.ResponseWriter, *mdns.Msg, bool) {
	return func(w mdns.ResponseWriter, r *mdns.Msg, tcp bool) {
		q := r.Question[0]
		if q.Name != "big." {
			next(w, r, tcp)
			return
		}
		m := new(mdns.Msg)
		m.SetReply(r)
		for i := range 100 {
			m.Answer = append(m.Answer, &mdns.A{
				Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 300},
				A:   netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}).AsSlice(),
			})
		}
		if !tcp {
			size := mdns.MinMsgSize
			if o := r.IsEdns0(); o != nil {
				size = int(o.UDPSize())
				m.SetEdns0(o.UDPSize(), false)
			}
			m.Truncate(size)
		}
		w.WriteMsg(m)
	}
}

// deadUDP returns an address where nothing listens (port unreachable).
func deadUDP(t *testing.T) netip.AddrPort {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ap := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	pc.Close()
	return ap
}

// silentUDP returns an address that swallows queries.
func silentUDP(t *testing.T) netip.AddrPort {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

func TestForwarding(t *testing.T) {
	u := dnstest.NewUpstream(t, bigHandler(dnstest.Answer(netip.MustParseAddr("192.0.2.1"), 300)))
	e := newEnv(t, func(c *dns.Config) { c.Upstreams = []netip.AddrPort{u.Addr} })

	t.Run("answer and cache", func(t *testing.T) {
		q := question("www.Example.", mdns.TypeA)
		r := e.query(t, loopback, q)
		if r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*mdns.A).A.String() != "192.0.2.1" || !r.RecursionAvailable || r.Authoritative {
			t.Fatalf("got %v", r)
		}
		e.clock.Advance(100 * time.Second)
		r = e.query(t, loopback, question("WWW.example.", mdns.TypeA))
		if u.UDPQueries() != 1 {
			t.Fatalf("upstream asked %d times, want 1", u.UDPQueries())
		}
		if got := r.Answer[0].Header(); got.Ttl != 200 || got.Name != "WWW.example." {
			t.Errorf("cached answer header %v, want TTL 200 and the question's spelling", got)
		}
		e.clock.Advance(200 * time.Second)
		e.query(t, loopback, q)
		if u.UDPQueries() != 2 {
			t.Fatalf("upstream asked %d times after expiry, want 2", u.UDPQueries())
		}
	})
	t.Run("negative cached", func(t *testing.T) {
		before := u.UDPQueries()
		for range 2 {
			r := e.query(t, loopback, question("nx.example.", mdns.TypeA))
			if r.Rcode != mdns.RcodeNameError || len(r.Ns) != 1 {
				t.Fatalf("got %v", r)
			}
		}
		if u.UDPQueries() != before+1 {
			t.Errorf("upstream asked %d times, want 1", u.UDPQueries()-before)
		}
	})
	t.Run("refused for public source", func(t *testing.T) {
		for _, name := range []string{"www.example.", "fresh.example."} { // cached and not
			r := e.query(t, public, question(name, mdns.TypeA))
			if r.Rcode != mdns.RcodeRefused || len(r.Answer) != 0 || r.RecursionAvailable {
				t.Errorf("%s: got %v", name, r)
			}
		}
		// Overlay names are still answered.
		if r := e.query(t, public, question("api.weft.internal.", mdns.TypeA)); len(r.Answer) != 1 {
			t.Errorf("overlay name for public source: %v", r)
		}
		// Private and overlay sources may forward.
		for _, src := range []string{"10.1.2.3", "192.168.1.1", "100.64.0.10", "fd12:3456:789a::a", "::1"} {
			if r := e.query(t, netip.MustParseAddr(src), question("www.example.", mdns.TypeA)); r.Rcode != mdns.RcodeSuccess {
				t.Errorf("source %s: got %v", src, r)
			}
		}
	})
	t.Run("truncated upstream retried over TCP", func(t *testing.T) {
		q := question("big.", mdns.TypeA)
		r := e.query(t, loopback, q)
		if u.TCPQueries() != 1 {
			t.Fatalf("upstream TCP queries %d, want 1", u.TCPQueries())
		}
		if !r.Truncated || len(r.Answer) == 0 || len(r.Answer) == 100 {
			t.Errorf("UDP reply without EDNS: TC %v, %d answers", r.Truncated, len(r.Answer))
		}
		if n := len(e.srv.HandleQuery(context.Background(), loopback, mustPack(t, question("big.", mdns.TypeA)), false)); n > 512 {
			t.Errorf("UDP reply without EDNS is %d bytes", n)
		}
		q.SetEdns0(4096, false)
		raw := e.srv.HandleQuery(context.Background(), loopback, mustPack(t, q), false)
		if len(raw) > dns.MaxUDPSize {
			t.Errorf("UDP reply with EDNS 4096 is %d bytes, want <= %d", len(raw), dns.MaxUDPSize)
		}
		r = new(mdns.Msg)
		if err := r.Unpack(raw); err != nil || !r.Truncated || r.IsEdns0() == nil {
			t.Errorf("EDNS reply: %v %v", err, r)
		}
		r = e.raw(t, loopback, question("big.", mdns.TypeA), true)
		if r.Truncated || len(r.Answer) != 100 {
			t.Errorf("TCP reply: TC %v, %d answers", r.Truncated, len(r.Answer))
		}
		if u.TCPQueries() != 1 {
			t.Errorf("upstream TCP queries %d, want 1 (cached)", u.TCPQueries())
		}
	})
	st := e.srv.Stats()
	if st.Forwarded != 4 || st.Refused != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestUpstreamFailover(t *testing.T) {
	good := dnstest.NewUpstream(t, dnstest.Answer(netip.MustParseAddr("192.0.2.7"), 60))
	failing := dnstest.NewUpstream(t, func(w mdns.ResponseWriter, r *mdns.Msg, tcp bool) {
		m := new(mdns.Msg)
		m.SetRcode(r, mdns.RcodeServerFailure)
		w.WriteMsg(m)
	})
	tests := []struct {
		name      string
		upstreams []netip.AddrPort
		rcode     int
	}{
		{"dead then good", []netip.AddrPort{deadUDP(t), good.Addr}, mdns.RcodeSuccess},
		{"silent then good", []netip.AddrPort{silentUDP(t), good.Addr}, mdns.RcodeSuccess},
		{"SERVFAIL then good", []netip.AddrPort{failing.Addr, good.Addr}, mdns.RcodeSuccess},
		{"all down", []netip.AddrPort{deadUDP(t), silentUDP(t), failing.Addr}, mdns.RcodeServerFailure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(c *dns.Config) {
				c.Upstreams = tt.upstreams
				c.UpstreamTimeout = 200 * time.Millisecond
			})
			start := time.Now()
			r := e.query(t, loopback, question("www.example.", mdns.TypeA))
			if r.Rcode != tt.rcode {
				t.Fatalf("rcode %s, want %s", mdns.RcodeToString[r.Rcode], mdns.RcodeToString[tt.rcode])
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}

func TestAllowForwardHook(t *testing.T) {
	u := dnstest.NewUpstream(t, dnstest.Answer(netip.MustParseAddr("192.0.2.1"), 60))
	e := newEnv(t, func(c *dns.Config) {
		c.Upstreams = []netip.AddrPort{u.Addr}
		c.AllowForward = func(src netip.Addr) bool { return src == public }
	})
	if r := e.query(t, public, question("www.example.", mdns.TypeA)); r.Rcode != mdns.RcodeSuccess {
		t.Errorf("allowed source: %v", r)
	}
	if r := e.query(t, loopback, question("www.example.", mdns.TypeA)); r.Rcode != mdns.RcodeRefused {
		t.Errorf("disallowed loopback source: %v", r)
	}
}
