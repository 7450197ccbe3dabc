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

// Relay lab tests: two hosts behind symmetric NATs (no direct path between
// them: each NAT maps every destination to a new port and lets in only
// replies) exchange UDP through a TURN server on the public switch: the
// weft relay, and coturn. Root, nft (and coturn) or they skip.

var (
	relayIP  = netip.MustParseAddr("203.0.113.1")
	coturnIP = netip.MustParseAddr("203.0.113.2")
)

// symmetricPair is the lab: a public switch and two hosts, each behind a
// symmetric NAT of its own.
type symmetricPair struct {
	lab    *natlab.Lab
	inet   *natlab.Switch
	ha, hb *natlab.Namespace
}

func newSymmetricPair(t *testing.T) *symmetricPair {
	t.Helper()
	lab := natlab.New(t, natlab.Options{Prefix: "natrelay"})
	natlab.Need(t, "nft")
	p := &symmetricPair{lab: lab, inet: lab.Switch(t, "inet")}
	for i, h := range []**natlab.Namespace{&p.ha, &p.hb} {
		r := lab.Router(t, fmt.Sprintf("r%d", i), p.inet, natlab.RouterConfig{
			Type:   natlab.Symmetric,
			Public: netip.MustParsePrefix(fmt.Sprintf("203.0.113.%d/24", 10+i)),
			LAN:    netip.MustParsePrefix(fmt.Sprintf("10.0.%d.1/24", i)),
		})
		*h = r.Host(t, fmt.Sprintf("h%d", i), netip.AddrFrom4([4]byte{10, 0, byte(i), 2}))
	}
	return p
}

// public adds a namespace on the switch at ip.
func (p *symmetricPair) public(t *testing.T, name string, ip netip.Addr) *natlab.Namespace {
	ns := p.lab.Namespace(t, name)
	p.inet.Attach(t, natlab.End{NS: ns, Dev: "eth0", Addrs: []string{ip.String() + "/24"}})
	return ns
}

// allocateIn allocates on server from a socket in ns.
func allocateIn(t *testing.T, ns *natlab.Namespace, server netip.AddrPort, user, pass string) *allocation {
	t.Helper()
	a, err := allocateFrom(t, func() (net.PacketConn, error) { return ns.ListenPacket("udp4", "0.0.0.0:0") }, server, user, pass)
	if err != nil {
		t.Fatalf("allocate on %v from %s: %v", server, ns, err)
	}
	return a
}

// relayBetween checks that a and b, allocations on one TURN server,
// exchange datagrams through it both ways.
func relayBetween(t *testing.T, a, b *allocation) {
	t.Helper()
	ra, rb := net.UDPAddrFromAddrPort(a.relayedAddr()), net.UDPAddrFromAddrPort(b.relayedAddr())
	t.Logf("relayed addresses %v and %v", ra, rb)
	// Permissions first: a relay drops what comes from peers it was not
	// told about (ICE creates them for the remote candidates).
	if err := a.client.CreatePermission(rb); err != nil {
		t.Fatal(err)
	}
	if err := b.client.CreatePermission(ra); err != nil {
		t.Fatal(err)
	}
	const n = 50
	for _, d := range []struct {
		name     string
		from, to *allocation
		dst      *net.UDPAddr
	}{{"a to b", a, b, rb}, {"b to a", b, a, ra}} {
		for i := range n {
			msg := fmt.Appendf(nil, "%s %d", d.name, i)
			if _, err := d.from.relayed.WriteTo(msg, d.dst); err != nil {
				t.Fatalf("%s: %v", d.name, err)
			}
		}
		got := 0
		buf := make([]byte, 1500)
		for got < n {
			d.to.relayed.SetReadDeadline(time.Now().Add(2 * time.Second))
			m, from, err := d.to.relayed.ReadFrom(buf)
			if err != nil {
				break
			}
			if from.String() != d.from.relayed.LocalAddr().String() {
				t.Errorf("%s: datagram %q from %v, want from %v", d.name, buf[:m], from, d.from.relayed.LocalAddr())
			}
			got++
		}
		t.Logf("%s: %d of %d datagrams arrived", d.name, got, n)
		if got < n*9/10 {
			t.Errorf("%s: only %d of %d datagrams arrived", d.name, got, n)
		}
	}
}

// TestLabRelaySymmetric: two members behind symmetric NATs get credentials
// from a weft relay over the control RPC (through their NATs) and relay
// through it.
func TestLabRelaySymmetric(t *testing.T) {
	natlab.Root(t)
	p := newSymmetricPair(t)
	rns := p.public(t, "relay", relayIP)
	rc := listenIn(t, rns)
	var relay *Relay
	err := rns.Do(func() (err error) {
		relay, err = NewRelay(RelayConfig{
			Listen:       netip.AddrPortFrom(netip.IPv4Unspecified(), DefaultRelayPort),
			PublicIP:     relayIP,
			Authorize:    func(Peer) bool { return true },
			ListenPacket: rns.ListenPacket,
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relay.Close() })
	rc.ServeRelay(relay)
	relayPeer := Peer{Addr: netip.AddrPortFrom(relayIP, rc.LocalAddr().Port()), Key: rc.PublicKey()}

	var allocs []*allocation
	for _, h := range []*natlab.Namespace{p.ha, p.hb} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		creds, err := listenIn(t, h).RelayCredentials(ctx, relayPeer)
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", h, err)
		}
		if creds.Addr != netip.AddrPortFrom(relayIP, DefaultRelayPort) {
			t.Errorf("%s: credentials for %v, want %v:%d", h, creds.Addr, relayIP, DefaultRelayPort)
		}
		allocs = append(allocs, allocateIn(t, h, creds.Addr, creds.Username, creds.Password))
	}
	relayBetween(t, allocs[0], allocs[1])
	t.Logf("relay stats: %+v", relay.Stats())
}

// TestLabRelayCoturn: the same through coturn, configured the way a user
// would: a TURN URL with a static credential.
func TestLabRelayCoturn(t *testing.T) {
	natlab.Root(t)
	natlab.NeedCoturn(t)
	p := newSymmetricPair(t)
	tns := p.public(t, "coturn", coturnIP)
	tns.StartCoturn(t, natlab.CoturnConfig{IP: coturnIP, User: "u", Password: "p", Realm: "weft"})
	u, err := ParseTURNURL("turn:" + coturnIP.String() + ":3478?transport=udp&user=u&pass=p")
	if err != nil {
		t.Fatal(err)
	}
	a := allocateIn(t, p.ha, u.Addr, u.Username, u.Password)
	b := allocateIn(t, p.hb, u.Addr, u.Username, u.Password)
	relayBetween(t, a, b)
}
