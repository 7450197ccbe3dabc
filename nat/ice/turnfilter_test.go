package ice

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

func TestRelayablePeer(t *testing.T) {
	for _, c := range []struct {
		server, peer string
		want         bool
	}{
		{"198.51.100.7", "203.0.113.9", true},
		{"198.51.100.7", "198.51.100.7", true}, // the server's own relays
		{"198.51.100.7", "10.0.1.2", false},
		{"198.51.100.7", "192.168.1.2", false},
		{"198.51.100.7", "100.64.3.4", false},
		{"198.51.100.7", "169.254.1.1", false},
		{"198.51.100.7", "127.0.0.1", false},
		{"2001:db8::1", "fd00::2", false},
		{"2001:db8::1", "2001:db8::2", true},
		{"10.0.0.5", "10.0.1.2", true}, // a TURN server on the LAN
		{"127.0.0.1", "127.0.0.1", true},
	} {
		if got := relayablePeer(netip.MustParseAddr(c.server), netip.MustParseAddr(c.peer)); got != c.want {
			t.Errorf("relayablePeer(%s, %s) = %v; want %v", c.server, c.peer, got, c.want)
		}
	}
}

// TestPeerFilterConn checks that a CreatePermission request for a private
// peer, to a public TURN server, is answered with 403 by the socket (even
// while a read is blocked) and not sent, and that others are sent.
func TestPeerFilterConn(t *testing.T) {
	sink, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := newPeerFilterConn(pc)
	defer c.Close()

	permission := func(peer string) *stun.Message {
		t.Helper()
		m, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodCreatePermission, stun.ClassRequest),
			&xorPeer{netip.MustParseAddrPort(peer)}, stun.Fingerprint)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	public := &net.UDPAddr{IP: net.ParseIP("198.51.100.7"), Port: 3478}

	type read struct {
		b    []byte
		from net.Addr
		err  error
	}
	reads := make(chan read, 1)
	go func() {
		b := make([]byte, 1500)
		n, from, err := c.ReadFrom(b)
		reads <- read{b[:n], from, err}
	}()
	time.Sleep(50 * time.Millisecond) // let the read block
	req := permission("10.0.1.2:41641")
	if n, err := c.WriteTo(req.Raw, public); err != nil || n != len(req.Raw) {
		t.Fatalf("WriteTo: %d, %v", n, err)
	}
	select {
	case r := <-reads:
		if r.err != nil {
			t.Fatal(r.err)
		}
		m := &stun.Message{Raw: r.b}
		if err := m.Decode(); err != nil {
			t.Fatal(err)
		}
		var code stun.ErrorCodeAttribute
		if err := code.GetFrom(m); err != nil || code.Code != stun.CodeForbidden || m.TransactionID != req.TransactionID ||
			m.Type != stun.NewType(stun.MethodCreatePermission, stun.ClassErrorResponse) || r.from.String() != public.String() {
			t.Fatalf("answer %v (code %v, %v) from %v; want a 403 CreatePermission error response to %x from %v", m, code, err, r.from, req.TransactionID, public)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the blocked ReadFrom did not return the 403")
	}

	// The socket still reads, with no deadline left behind.
	ok := permission("203.0.113.9:41641")
	to := sink.LocalAddr()
	if _, err := c.WriteTo(ok.Raw, to); err != nil { // a loopback server: not filtered
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	sink.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err := sink.ReadFrom(buf)
	if err != nil || string(buf[:n]) != string(ok.Raw) {
		t.Fatalf("the server got %d bytes, %v; want the request", n, err)
	}
	time.Sleep(10 * time.Millisecond)
	if _, err := sink.WriteTo([]byte("hello"), from); err != nil {
		t.Fatal(err)
	}
	go func() {
		b := make([]byte, 1500)
		n, from, err := c.ReadFrom(b)
		reads <- read{b[:n], from, err}
	}()
	select {
	case r := <-reads:
		if r.err != nil || string(r.b) != "hello" {
			t.Fatalf("ReadFrom: %q, %v; want hello", r.b, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadFrom got nothing")
	}
	if c.refuse(permission("203.0.113.9:41641").Raw, public) != nil {
		t.Error("CreatePermission for a public peer refused")
	}
	if c.refuse([]byte("not stun"), public) != nil {
		t.Error("non-STUN datagram refused")
	}
}

// xorPeer adds an XOR-PEER-ADDRESS attribute.
type xorPeer struct{ ap netip.AddrPort }

func (x *xorPeer) AddTo(m *stun.Message) error {
	a := stun.XORMappedAddress{IP: x.ap.Addr().AsSlice(), Port: int(x.ap.Port())}
	return a.AddToAs(m, stun.AttrXORPeerAddress)
}
