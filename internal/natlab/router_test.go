//go:build linux

package natlab

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// udpEcho answers every datagram on pc with the address it came from.
func udpEcho(pc net.PacketConn) {
	buf := make([]byte, 1500)
	for {
		_, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		pc.WriteTo([]byte(from.String()), from)
	}
}

// askEcho sends one datagram from pc to echo and returns the reply, or ""
// if none came within a second.
func askEcho(t *testing.T, pc net.PacketConn, echo netip.AddrPort) string {
	t.Helper()
	if _, err := pc.WriteTo([]byte("hi"), net.UDPAddrFromAddrPort(echo)); err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 1500)
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		return ""
	}
	return string(buf[:n])
}

// TestRouters builds a router of every type with a host behind it, and
// checks that UDP goes out translated to the router's public address (or,
// for UDPBlocked, not at all) and that ICMP passes every type. The NAT
// behaviours themselves are checked by nat's lab netcheck test.
func TestRouters(t *testing.T) {
	Root(t)
	Need(t, "nft")
	l := New(t, Options{Prefix: "natlabrouter"})
	inet := l.Switch(t, "inet")
	srv := l.Namespace(t, "srv")
	inet.Attach(t, End{NS: srv, Dev: "eth0", Addrs: []string{"203.0.113.1/24"}})
	echoPC, err := srv.ListenPacket("udp4", "203.0.113.1:7")
	if err != nil {
		t.Fatal(err)
	}
	defer echoPC.Close()
	go udpEcho(echoPC)
	echo := netip.MustParseAddrPort("203.0.113.1:7")

	for i, typ := range NATTypes {
		t.Run(typ.String(), func(t *testing.T) {
			pub := netip.AddrFrom4([4]byte{203, 0, 113, byte(10 + i)})
			r := l.Router(t, "r"+fmt.Sprint(i), inet, RouterConfig{Type: typ,
				Public: netip.PrefixFrom(pub, 24), LAN: netip.MustParsePrefix(fmt.Sprintf("10.0.%d.1/24", i))})
			h := r.Host(t, "h"+fmt.Sprint(i), netip.AddrFrom4([4]byte{10, 0, byte(i), 2}))
			if ping, err := exec.LookPath("ping"); err == nil {
				if r := h.Run(t, 0, ping, "-c1", "-W5", "203.0.113.1"); r.Err != nil {
					t.Errorf("ping through %v: %v", typ, r)
				}
			}
			pc, err := h.ListenPacket("udp4", "0.0.0.0:0")
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			got := askEcho(t, pc, echo)
			switch {
			case typ == UDPBlocked && got != "":
				t.Errorf("UDP passed a UDPBlocked router: echo saw %s", got)
			case typ != UDPBlocked && !strings.HasPrefix(got, pub.String()+":"):
				t.Errorf("echo saw %q, want the router's public address %v", got, pub)
			}
			r.FlushMappings(t)
			if !strings.Contains(r.Rules(t), "table ip natlab") {
				t.Errorf("ruleset gone after FlushMappings:\n%s", r.Rules(t))
			}
		})
	}
}
