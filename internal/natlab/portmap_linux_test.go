//go:build linux

package natlab

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// natpmp sends a NAT-PMP request from pc to the gateway, retransmitting
// as RFC 6886 §3.1 says (250 ms, doubling), and returns the answer to it
// (opcode 128 + the request's), or fails t after about 4 s.
func natpmp(t *testing.T, pc net.PacketConn, gw netip.Addr, req []byte) []byte {
	t.Helper()
	to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(gw, NATPMPPort))
	buf := make([]byte, 1100)
	for wait := 250 * time.Millisecond; wait <= 2*time.Second; wait *= 2 {
		if _, err := pc.WriteTo(req, to); err != nil {
			t.Fatal(err)
		}
		pc.SetReadDeadline(time.Now().Add(wait))
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				break
			}
			if from.(*net.UDPAddr).AddrPort().Addr().Unmap() == gw && n >= 8 && buf[0] == 0 && buf[1] == 128+req[1] {
				return buf[:n:n]
			}
		}
	}
	t.Fatalf("no NAT-PMP answer from %v to % x", to, req)
	return nil
}

// mapUDP asks for (or, with lifetime 0, deletes) a UDP mapping and
// returns the answer's result code, external port and lifetime.
func mapUDP(t *testing.T, pc net.PacketConn, gw netip.Addr, internal, external uint16, lifetime uint32) (result, ext uint16, life uint32) {
	t.Helper()
	req := make([]byte, 12)
	req[1] = 1 // map UDP
	binary.BigEndian.PutUint16(req[4:], internal)
	binary.BigEndian.PutUint16(req[6:], external)
	binary.BigEndian.PutUint32(req[8:], lifetime)
	resp := natpmp(t, pc, gw, req)
	if len(resp) != 16 {
		t.Fatalf("map answer of %d bytes (% x), want 16", len(resp), resp)
	}
	if got := binary.BigEndian.Uint16(resp[8:]); got != internal {
		t.Errorf("map answer for internal port %d, want %d", got, internal)
	}
	return binary.BigEndian.Uint16(resp[2:]), binary.BigEndian.Uint16(resp[10:]), binary.BigEndian.Uint32(resp[12:])
}

// receive reads one datagram from pc within timeout; ok is false if none
// came.
func receive(pc net.PacketConn, timeout time.Duration) (msg string, from netip.AddrPort, ok bool) {
	buf := make([]byte, 1500)
	pc.SetReadDeadline(time.Now().Add(timeout))
	n, addr, err := pc.ReadFrom(buf)
	if err != nil {
		return "", netip.AddrPort{}, false
	}
	ap := addr.(*net.UDPAddr).AddrPort()
	return string(buf[:n]), netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

// TestPortMapping builds a router of every type with PortMapping and a
// host behind it; the host maps a UDP port with NAT-PMP, a peer on the
// switch sends to the mapped address and gets the host's answer, and the
// deleted mapping lets nothing more in.
func TestPortMapping(t *testing.T) {
	Root(t)
	Need(t, "nft")
	NeedMiniupnpd(t)
	l := New(t, Options{Prefix: "natlabpmp"})
	inet := l.Switch(t, "inet")
	peer := l.Namespace(t, "peer")
	// Not 203.0.113.0/24: miniupnpd maps nothing on a reserved address.
	inet.Attach(t, End{NS: peer, Dev: "eth0", Addrs: []string{"11.0.0.1/24"}})

	for i, typ := range NATTypes {
		t.Run(typ.String(), func(t *testing.T) {
			pub := netip.AddrFrom4([4]byte{11, 0, 0, byte(10 + i)})
			r := l.Router(t, "r"+fmt.Sprint(i), inet, RouterConfig{Type: typ, PortMapping: true,
				Public: netip.PrefixFrom(pub, 24), LAN: netip.MustParsePrefix(fmt.Sprintf("10.0.%d.1/24", i))})
			h := r.Host(t, "h"+fmt.Sprint(i), netip.AddrFrom4([4]byte{10, 0, byte(i), 2}))

			// The NAT-PMP server is the host's default gateway.
			gw := r.LAN.Addr()
			if route := h.MustRun(t, "ip", "-4", "route", "show", "default"); !strings.Contains(route, "via "+gw.String()+" ") {
				t.Fatalf("host's default route %q is not via %v", route, gw)
			}
			client, err := h.ListenPacket("udp4", "0.0.0.0:0")
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()

			resp := natpmp(t, client, gw, []byte{0, 0})
			if len(resp) != 12 {
				t.Fatalf("public address answer of %d bytes (% x), want 12", len(resp), resp)
			}
			if res := binary.BigEndian.Uint16(resp[2:]); res != 0 {
				t.Fatalf("public address request: result %d, want 0 (success)", res)
			}
			if got := netip.AddrFrom4([4]byte(resp[8:12])); got != pub {
				t.Fatalf("public address %v, want the router's %v", got, pub)
			}

			svc, err := h.ListenPacket("udp4", "0.0.0.0:0")
			if err != nil {
				t.Fatal(err)
			}
			defer svc.Close()
			internal := uint16(svc.LocalAddr().(*net.UDPAddr).Port)
			res, ext, life := mapUDP(t, client, gw, internal, 20000+uint16(i), 3600)
			if res != 0 || ext == 0 || life == 0 {
				t.Fatalf("map UDP %d: result %d, external port %d, lifetime %d; want success", internal, res, ext, life)
			}
			mapped := netip.AddrPortFrom(pub, ext)
			t.Logf("mapped %v to %s:%d", mapped, h, internal)

			// A peer on the switch sends to the mapped address; the host
			// answers.
			from, err := peer.ListenPacket("udp4", "11.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer from.Close()
			if _, err := from.WriteTo([]byte("ping"), net.UDPAddrFromAddrPort(mapped)); err != nil {
				t.Fatal(err)
			}
			msg, src, ok := receive(svc, 2*time.Second)
			if typ == UDPBlocked {
				if ok {
					t.Errorf("UDP passed a UDPBlocked router's mapping: host got %q from %v", msg, src)
				}
				return
			}
			peerAddr := netip.MustParseAddrPort(from.LocalAddr().String())
			if !ok || msg != "ping" || src != peerAddr {
				t.Fatalf("host got %q from %v (ok %v), want \"ping\" from %v\nrouter rules:\n%s", msg, src, ok, peerAddr, r.Rules(t))
			}
			if _, err := svc.WriteTo([]byte("pong"), net.UDPAddrFromAddrPort(src)); err != nil {
				t.Fatal(err)
			}
			if msg, src, ok := receive(from, 2*time.Second); !ok || msg != "pong" || src != mapped {
				t.Fatalf("peer got %q from %v (ok %v), want \"pong\" from %v", msg, src, ok, mapped)
			}

			// Deleted, the mapping lets no new flow in. (The flow above
			// keeps its conntrack entry until it times out.)
			if res, _, _ := mapUDP(t, client, gw, internal, 0, 0); res != 0 {
				t.Fatalf("delete mapping: result %d, want 0", res)
			}
			if rules := r.Rules(t); strings.Contains(rules, fmt.Sprintf("dport %d ", ext)) {
				t.Errorf("rules for port %d left after the mapping was deleted:\n%s", ext, rules)
			}
			late, err := peer.ListenPacket("udp4", "11.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer late.Close()
			late.WriteTo([]byte("late"), net.UDPAddrFromAddrPort(mapped))
			if msg, src, ok := receive(svc, time.Second); ok {
				t.Errorf("host got %q from %v after the mapping was deleted", msg, src)
			}
		})
	}
}
