package ice

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

var (
	fastServer = netip.MustParseAddrPort("192.0.2.1:3478")
	fastPeer   = netip.MustParseAddrPort("198.51.100.7:40000")
)

// channelBind returns a ChannelBind request for num and peer, and its
// answer of class class.
func channelBind(t testing.TB, num uint16, peer netip.AddrPort, class stun.MessageClass) (req, resp []byte) {
	t.Helper()
	chn := make([]byte, 4)
	binary.BigEndian.PutUint16(chn, num)
	m, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodChannelBind, stun.ClassRequest),
		stun.RawAttribute{Type: stun.AttrChannelNumber, Value: chn},
		xorPeerAddress{IP: peer.Addr().AsSlice(), Port: int(peer.Port())}, stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	r, err := stun.Build(stun.NewTransactionIDSetter(m.TransactionID), stun.NewType(stun.MethodChannelBind, class))
	if err != nil {
		t.Fatal(err)
	}
	return m.Raw, r.Raw
}

// xorPeerAddress adds an XOR-PEER-ADDRESS attribute.
type xorPeerAddress stun.XORMappedAddress

func (a xorPeerAddress) AddTo(m *stun.Message) error {
	x := stun.XORMappedAddress(a)
	return x.AddToAs(m, stun.AttrXORPeerAddress)
}

func chanData(num uint16, data []byte) []byte {
	b := make([]byte, 4, 4+len(data))
	binary.BigEndian.PutUint16(b[0:2], num)
	binary.BigEndian.PutUint16(b[2:4], uint16(len(data)))
	return append(b, data...)
}

// TestChannelState: a channel is usable from its bind's success answer,
// not after an error answer or an answer from elsewhere; deliver takes
// ChannelData on it from the server only, never STUN inside it.
func TestChannelState(t *testing.T) {
	var s channelState
	server := net.UDPAddrFromAddrPort(fastServer)
	req, ok := channelBind(t, 0x4001, fastPeer, stun.ClassSuccessResponse)
	s.sent(req, server)
	if _, _, usable := s.route(fastPeer); usable {
		t.Fatal("channel usable before its answer")
	}
	s.received(ok, net.UDPAddrFromAddrPort(netip.MustParseAddrPort("192.0.2.99:3478")))
	if _, _, usable := s.route(fastPeer); usable {
		t.Fatal("channel usable after an answer from another address")
	}
	s.sent(req, server)
	s.received(ok, server)
	num, to, usable := s.route(fastPeer)
	if !usable || num != 0x4001 || to != fastServer {
		t.Fatalf("route = %#x %v %v; want 0x4001 to %v", num, to, usable, fastServer)
	}

	var got [][]byte
	s.setReceiver(fastPeer, func(b []byte) { got = append(got, bytes.Clone(b)) })
	wg := []byte{4, 0, 0, 0, 1, 2, 3, 4}
	if !s.deliver(chanData(0x4001, wg), server) {
		t.Fatal("ChannelData on the bound channel not delivered")
	}
	stunInside, _ := channelBind(t, 0x4002, fastPeer, stun.ClassSuccessResponse)
	for name, c := range map[string]struct {
		b    []byte
		from *net.UDPAddr
	}{
		"other channel": {chanData(0x4002, wg), server},
		"other source":  {chanData(0x4001, wg), net.UDPAddrFromAddrPort(fastPeer)},
		"STUN inside":   {chanData(0x4001, stunInside), server},
		"short":         {chanData(0x4001, wg)[:6], server},
		"empty":         {chanData(0x4001, nil), server},
		"not a channel": {append([]byte{0x80}, wg...), server},
		"header only":   {[]byte{0x40, 0x01}, server},
	} {
		if s.deliver(c.b, c.from) {
			t.Errorf("%s: delivered", name)
		}
	}
	if len(got) != 1 || !bytes.Equal(got[0], wg) {
		t.Fatalf("receiver got %x, want one %x", got, wg)
	}

	// A refresh refused by the server takes the channel off the fast path.
	req2, refused := channelBind(t, 0x4001, fastPeer, stun.ClassErrorResponse)
	s.sent(req2, server)
	s.received(refused, server)
	if _, _, usable := s.route(fastPeer); usable {
		t.Fatal("channel still usable after an error answer")
	}
	// An old bind is not used once it may have expired on the server.
	s.sent(req, server)
	s.received(ok, server)
	s.mu.Lock()
	s.byPeer[fastPeer].boundAt = time.Now().Add(-channelLifetime)
	s.mu.Unlock()
	if _, _, usable := s.route(fastPeer); usable {
		t.Fatal("channel usable past its lifetime")
	}
}

// FuzzChannelState: whatever pion sends or the server answers, the
// channel tracking neither panics nor delivers what is not ChannelData of
// a bound channel.
func FuzzChannelState(f *testing.F) {
	req, ok := channelBind(f, 0x4001, fastPeer, stun.ClassSuccessResponse)
	f.Add(req, ok, chanData(0x4001, []byte{4, 0, 0, 0}))
	f.Add([]byte{}, []byte{0x40}, []byte{0x40, 0x01, 0xff, 0xff})
	server := net.UDPAddrFromAddrPort(fastServer)
	f.Fuzz(func(t *testing.T, sent, received, data []byte) {
		var s channelState
		s.sent(sent, server)
		s.received(received, server)
		s.route(fastPeer)
		s.relayedAddr()
		s.setReceiver(fastPeer, func(b []byte) {
			if stun.IsMessage(b) || len(b) == 0 {
				t.Errorf("delivered %x", b)
			}
		})
		s.deliver(data, server)
		s.deliver(received, server)
	})
}
