// Package dnstest holds fakes for testing with package dns: a Resolver
// backed by a map, and an upstream DNS server on loopback.
package dnstest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	mdns "github.com/miekg/dns"
	"github.com/weft-net/weft/addr"
	"github.com/weft-net/weft/dns"
)

// Resolver is a dns.Resolver over a fixed set of nodes. The zero value
// knows no node; add some with Add. It is safe for concurrent use.
type Resolver struct {
	// Domain is stripped from names; empty → addr.DefaultDomain.
	Domain string
	// Err, when set, is returned by every lookup (e.g. to provoke SERVFAIL).
	Err error

	mu    sync.Mutex // guards nodes
	nodes []dns.Answer

	calls atomic.Int64
}

var _ dns.Resolver = (*Resolver)(nil)

// Add adds or replaces (by NodeID) a node.
func (r *Resolver) Add(a dns.Answer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.nodes {
		if r.nodes[i].NodeID == a.NodeID {
			r.nodes[i] = a
			return
		}
	}
	r.nodes = append(r.nodes, a)
}

// Remove forgets the node with id.
func (r *Resolver) Remove(id addr.NodeID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.nodes {
		if r.nodes[i].NodeID == id {
			r.nodes = append(r.nodes[:i], r.nodes[i+1:]...)
			return
		}
	}
}

// Calls returns how many lookups were made.
func (r *Resolver) Calls() int { return int(r.calls.Load()) }

// ResolveName implements dns.Resolver for "NAME.<domain>" and
// "<nodeid>.id.<domain>".
func (r *Resolver) ResolveName(ctx context.Context, name string) (dns.Answer, error) {
	r.calls.Add(1)
	if r.Err != nil {
		return dns.Answer{}, r.Err
	}
	domain := r.Domain
	if domain == "" {
		domain = addr.DefaultDomain
	}
	rel, ok := strings.CutSuffix(name, "."+domain)
	if !ok {
		return dns.Answer{}, fmt.Errorf("%q is outside %s: %w", name, domain, dns.ErrNotFound)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, a := range r.nodes {
		if a.Name == rel || a.NodeID.String()+".id" == rel {
			return a, nil
		}
	}
	return dns.Answer{}, fmt.Errorf("%q: %w", name, dns.ErrNotFound)
}

// ResolveAddr implements dns.Resolver.
func (r *Resolver) ResolveAddr(ctx context.Context, ip netip.Addr) (dns.Answer, error) {
	r.calls.Add(1)
	if r.Err != nil {
		return dns.Answer{}, r.Err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, a := range r.nodes {
		if a.IPv4 == ip || a.IPv6 == ip {
			return a, nil
		}
	}
	return dns.Answer{}, fmt.Errorf("%v: %w", ip, dns.ErrNotFound)
}

// Upstream is a DNS server on 127.0.0.1 (UDP and TCP on one port) that
// answers with Handler, counting the queries it receives.
type Upstream struct {
	// Addr is where it listens.
	Addr netip.AddrPort

	udp, tcp *mdns.Server
	done     chan struct{}
	udpN     atomic.Int64
	tcpN     atomic.Int64
}

// NewUpstream starts an Upstream answering with h, which is told whether
// the query came over TCP. It is shut down when the test ends.
func NewUpstream(t testing.TB, h func(w mdns.ResponseWriter, r *mdns.Msg, tcp bool)) *Upstream {
	t.Helper()
	var (
		pc  net.PacketConn
		ln  net.Listener
		err error
	)
	for range 10 {
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Fatalf("upstream: %v", err)
	}
	u := &Upstream{Addr: pc.LocalAddr().(*net.UDPAddr).AddrPort(), done: make(chan struct{})}
	u.udp = &mdns.Server{PacketConn: pc, Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		u.udpN.Add(1)
		h(w, r, false)
	})}
	u.tcp = &mdns.Server{Listener: ln, Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		u.tcpN.Add(1)
		h(w, r, true)
	})}
	var wg sync.WaitGroup
	for _, srv := range []*mdns.Server{u.udp, u.tcp} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		wg.Add(1)
		go func() {
			defer wg.Done()
			srv.ActivateAndServe()
		}()
		<-started
	}
	t.Cleanup(func() {
		u.udp.Shutdown()
		u.tcp.Shutdown()
		wg.Wait()
	})
	return u
}

// UDPQueries and TCPQueries return how many queries arrived over each.
func (u *Upstream) UDPQueries() int { return int(u.udpN.Load()) }

// TCPQueries returns how many queries arrived over TCP.
func (u *Upstream) TCPQueries() int { return int(u.tcpN.Load()) }

// Answer is a handler for NewUpstream that answers A questions with ip and
// a TTL of ttl seconds, and NXDOMAIN (with an SOA) for names starting with
// "nx".
func Answer(ip netip.Addr, ttl uint32) func(w mdns.ResponseWriter, r *mdns.Msg, tcp bool) {
	return func(w mdns.ResponseWriter, r *mdns.Msg, tcp bool) {
		m := new(mdns.Msg)
		m.SetReply(r)
		m.RecursionAvailable = true
		q := r.Question[0]
		switch {
		case strings.HasPrefix(strings.ToLower(q.Name), "nx"):
			m.Rcode = mdns.RcodeNameError
			m.Ns = []mdns.RR{&mdns.SOA{
				Hdr: mdns.RR_Header{Name: "example.", Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: ttl},
				Ns:  "ns.example.", Mbox: "hostmaster.example.", Serial: 1, Minttl: ttl,
			}}
		case q.Qtype == mdns.TypeA:
			m.Answer = []mdns.RR{&mdns.A{
				Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: ttl},
				A:   ip.AsSlice(),
			}}
		}
		w.WriteMsg(m)
	}
}
