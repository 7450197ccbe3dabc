package dns_test

import (
	"context"
	"crypto/sha256"
	"net/netip"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/weft-net/weft/addr"
	"github.com/weft-net/weft/dns"
	"github.com/weft-net/weft/dns/dnstest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var (
	v4Prefix = netip.MustParsePrefix("100.64.0.0/10")
	v6Prefix = netip.MustParsePrefix("fd12:3456:789a::/48")

	apiID    = addr.NodeID(sha256.Sum256([]byte("api")))
	dbID     = addr.NodeID(sha256.Sum256([]byte("db")))
	anonID   = addr.NodeID(sha256.Sum256([]byte("anon")))
	api      = dns.Answer{Name: "api", NodeID: apiID, IPv4: netip.MustParseAddr("100.64.0.10"), IPv6: netip.MustParseAddr("fd12:3456:789a::a")}
	db       = dns.Answer{Name: "db", NodeID: dbID, IPv4: netip.MustParseAddr("100.64.0.11"), TTL: 10 * time.Minute}
	anon     = dns.Answer{NodeID: anonID, IPv4: netip.MustParseAddr("100.64.0.12"), TTL: 1500 * time.Millisecond}
	loopback = netip.MustParseAddr("127.0.0.1")
	public   = netip.MustParseAddr("8.8.8.8")
)

// clock is an injectable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type env struct {
	srv   *dns.Server
	res   *dnstest.Resolver
	clock *clock
}

// newEnv returns a server over a resolver holding api, db and anon, with
// the overlay prefixes and an injected clock; mutate adjusts the Config.
func newEnv(t testing.TB, mutate func(*dns.Config)) *env {
	t.Helper()
	res := &dnstest.Resolver{}
	for _, a := range []dns.Answer{api, db, anon} {
		res.Add(a)
	}
	clk := newClock()
	cfg := dns.Config{
		Domain:   "weft.internal",
		Resolver: res,
		Prefixes: []netip.Prefix{v4Prefix, v6Prefix},
		Now:      clk.Now,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	srv, err := dns.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return &env{srv: srv, res: res, clock: clk}
}

// query asks the server directly (no sockets) as src over UDP.
func (e *env) query(t testing.TB, src netip.Addr, m *mdns.Msg) *mdns.Msg {
	t.Helper()
	return e.raw(t, src, m, false)
}

func (e *env) raw(t testing.TB, src netip.Addr, m *mdns.Msg, tcp bool) *mdns.Msg {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	reply := e.srv.HandleQuery(context.Background(), src, b, tcp)
	if reply == nil {
		t.Fatalf("no reply to %v", m.Question)
	}
	r := new(mdns.Msg)
	if err := r.Unpack(reply); err != nil {
		t.Fatalf("reply does not parse: %v", err)
	}
	if r.Id != m.Id || !r.Response {
		t.Fatalf("reply id %d response %v, want id %d response", r.Id, r.Response, m.Id)
	}
	return r
}

func question(name string, qtype uint16) *mdns.Msg {
	m := new(mdns.Msg)
	m.SetQuestion(name, qtype)
	return m
}

// rr parses a record in zone-file form into the form RR.String prints.
func rr(t testing.TB, s string) string {
	t.Helper()
	r, err := mdns.NewRR(s)
	if err != nil {
		t.Fatalf("bad test record %q: %v", s, err)
	}
	return r.String()
}

func strs(rrs []mdns.RR) []string {
	var out []string
	for _, r := range rrs {
		if r.Header().Rrtype == mdns.TypeOPT {
			continue
		}
		out = append(out, r.String())
	}
	return out
}
