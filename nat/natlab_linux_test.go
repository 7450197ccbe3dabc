//go:build linux

package nat

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/natlab"
)

// Lab tests: real NATs (nftables in router namespaces, see
// internal/natlab) between nodes whose sockets this test process opens
// inside the namespaces. They need root and nft, and skip otherwise.

// listenIn opens a Conn whose socket lives in ns (bound to every address,
// port 0), closed when the test ends.
func listenIn(t *testing.T, ns *natlab.Namespace) *Conn {
	t.Helper()
	var c *Conn
	err := ns.Do(func() (err error) {
		c, err = Listen(Config{Addr: netip.MustParseAddrPort("0.0.0.0:0"), PrivateKey: newKey(t)})
		return err
	})
	if err != nil {
		t.Fatalf("listen in %s: %v", ns, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// localAddrsIn returns ns's interface addresses, for NetcheckConfig.LocalAddrs.
func localAddrsIn(ns *natlab.Namespace) func() ([]netip.Addr, error) {
	return func() ([]netip.Addr, error) {
		var out []netip.Addr
		err := ns.Do(func() error {
			ifas, err := net.InterfaceAddrs()
			for _, ifa := range ifas {
				if p, err := netip.ParsePrefix(ifa.String()); err == nil {
					out = append(out, p.Addr())
				}
			}
			return err
		})
		return out, err
	}
}

// publicLab is the internet side of a NAT lab: a switch with two STUN
// servers (weft nodes) at two addresses, the first also a prober with a
// second socket, and a third node as its change-IP helper.
type publicLab struct {
	lab            *natlab.Lab
	inet           *natlab.Switch
	s1, s2, helper *Conn
}

var (
	s1IP     = netip.MustParseAddr("203.0.113.1")
	s2IP     = netip.MustParseAddr("203.0.113.2")
	helperIP = netip.MustParseAddr("203.0.113.3")
)

func newPublicLab(t *testing.T) *publicLab {
	t.Helper()
	lab := natlab.New(t, natlab.Options{Prefix: "natcheck"})
	natlab.Need(t, "nft")
	p := &publicLab{lab: lab, inet: lab.Switch(t, "inet")}
	node := func(name string, ip netip.Addr) (*natlab.Namespace, *Conn) {
		ns := lab.Namespace(t, name)
		p.inet.Attach(t, natlab.End{NS: ns, Dev: "eth0", Addrs: []string{ip.String() + "/24"}})
		return ns, listenIn(t, ns)
	}
	var s1ns *natlab.Namespace
	s1ns, p.s1 = node("s1", s1IP)
	_, p.s2 = node("s2", s2IP)
	_, p.helper = node("helper", helperIP)
	alt, err := s1ns.ListenPacket("udp4", s1IP.String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { alt.Close() })
	p.s1.ServeProbes(&ProbeConfig{Alt: alt, Helpers: func() []Peer { return []Peer{p.peer(p.helper, helperIP)} }})
	s1Key := p.s1.PublicKey()
	p.helper.ServeProbes(&ProbeConfig{AllowRelay: func(from Peer) bool { return from.Key == s1Key }})
	return p
}

// peer is how nodes on the switch reach c (bound to the wildcard address).
func (p *publicLab) peer(c *Conn, ip netip.Addr) Peer {
	return Peer{Addr: netip.AddrPortFrom(ip, c.LocalAddr().Port()), Key: c.PublicKey()}
}

func (p *publicLab) netcheckConfig(ns *natlab.Namespace) NetcheckConfig {
	return NetcheckConfig{
		STUN:       []netip.AddrPort{p.peer(p.s1, s1IP).Addr, p.peer(p.s2, s2IP).Addr},
		Probers:    []Peer{p.peer(p.s1, s1IP)},
		Timeout:    2 * time.Second,
		ProbeWait:  500 * time.Millisecond,
		LocalAddrs: localAddrsIn(ns),
	}
}

// TestLabNetcheck classifies every NAT type of the lab, and a host with no
// NAT, with the Go netcheck through the node's own socket.
func TestLabNetcheck(t *testing.T) {
	natlab.Root(t)
	p := newPublicLab(t)
	tests := []struct {
		name      string
		typ       natlab.NATType // 0: on the switch, no NAT
		udp       bool
		mapping   Mapping
		filtering Filtering
		kind      string
	}{
		{"none", 0, true, MappingNone, FilteringEndpointIndependent, "open internet"},
		{"full-cone", natlab.FullCone, true, MappingEndpointIndependent, FilteringEndpointIndependent, "full cone"},
		{"address-restricted", natlab.AddressRestricted, true, MappingEndpointIndependent, FilteringAddressDependent, "restricted cone"},
		{"port-restricted", natlab.PortRestricted, true, MappingEndpointIndependent, FilteringAddressAndPortDependent, "port-restricted cone"},
		{"symmetric", natlab.Symmetric, true, MappingEndpointDependent, FilteringAddressAndPortDependent, "symmetric"},
		{"udp-blocked", natlab.UDPBlocked, false, MappingUnknown, FilteringUnknown, "UDP blocked"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var host *natlab.Namespace
			var router *natlab.Router
			pubIP := netip.AddrFrom4([4]byte{203, 0, 113, byte(10 + i)})
			if tt.typ == 0 {
				host = p.lab.Namespace(t, "open")
				p.inet.Attach(t, natlab.End{NS: host, Dev: "eth0", Addrs: []string{pubIP.String() + "/24"}})
			} else {
				router = p.lab.Router(t, "r"+tt.name, p.inet, natlab.RouterConfig{
					Type:   tt.typ,
					Public: netip.PrefixFrom(pubIP, 24),
					LAN:    netip.MustParsePrefix(fmt.Sprintf("10.0.%d.1/24", i)),
				})
				host = router.Host(t, "h"+tt.name, netip.AddrFrom4([4]byte{10, 0, byte(i), 2}))
			}
			c := listenIn(t, host)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			r, err := c.Netcheck(ctx, p.netcheckConfig(host))
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %v", tt.name, r)
			if r.UDP != tt.udp || r.Mapping != tt.mapping || r.Filtering != tt.filtering || r.Kind() != tt.kind {
				t.Errorf("got UDP %v, %v / %v (%s); notes %q %q\nwant UDP %v, %v / %v (%s)",
					r.UDP, r.Mapping, r.Filtering, r.Kind(), r.MappingNote, r.FilteringNote,
					tt.udp, tt.mapping, tt.filtering, tt.kind)
				if router != nil {
					t.Logf("router rules:\n%s", router.Rules(t))
				}
			}
			if tt.udp {
				for _, pub := range r.Public {
					if pub.Addr() != pubIP {
						t.Errorf("public address %v, want one on %v", pub, pubIP)
					}
				}
			}
		})
	}
}

// TestLabFlushAndMove: flushing a symmetric NAT's mappings gives the socket
// a new public port; moving the host to another LAN gives it the other
// router's public address, on the same socket.
func TestLabFlushAndMove(t *testing.T) {
	natlab.Root(t)
	p := newPublicLab(t)
	sym := p.lab.Router(t, "rsym", p.inet, natlab.RouterConfig{Type: natlab.Symmetric,
		Public: netip.MustParsePrefix("203.0.113.20/24"), LAN: netip.MustParsePrefix("10.0.20.1/24")})
	cone := p.lab.Router(t, "rcone", p.inet, natlab.RouterConfig{Type: natlab.FullCone,
		Public: netip.MustParsePrefix("203.0.113.21/24"), LAN: netip.MustParsePrefix("10.0.21.1/24")})
	host := sym.Host(t, "laptop", netip.MustParseAddr("10.0.20.2"))
	c := listenIn(t, host)
	server := p.peer(p.s1, s1IP).Addr
	binding := func() netip.AddrPort {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		m, err := c.STUNBinding(ctx, server)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	first := binding()
	if again := binding(); again != first {
		t.Fatalf("mapping changed without a flush: %v then %v", first, again)
	}
	// masquerade random picks a random port: a new one, almost surely.
	var after netip.AddrPort
	for range 3 {
		sym.FlushMappings(t)
		if after = binding(); after != first {
			break
		}
	}
	if after == first {
		t.Errorf("mapping %v survived three flushes", first)
	}
	sym.Move(t, host, cone, netip.MustParseAddr("10.0.21.2"))
	moved := binding()
	if moved.Addr() != cone.Public {
		t.Errorf("after the move the mapping is %v, want one on %v", moved, cone.Public)
	}
	t.Logf("symmetric %v, after flush %v, after move to full cone %v", first, after, moved)
	cone.FlushMappings(t) // the cone map and conntrack flush cleanly too
}
