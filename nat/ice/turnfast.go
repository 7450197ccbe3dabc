package ice

// The relayed data path, without pion. A session whose selected pair has a
// relay local candidate sends every WireGuard packet through pion's Conn,
// agent, candidate pair, TURN client (a permission and a channel lookup,
// a ChannelData encoding into a new buffer each) to the allocation's
// socket; and what the peer sends back reaches SessionConfig.OnPacket
// through four goroutines: the TURN client's reader, its relay conn's
// queue, the relay candidate's reader, the agent's buffer and the
// session's reader. On a relay that is most of the cost of a relayed
// packet after WireGuard itself.
//
// The TURN client's socket (peerFilterConn) sees every request pion makes
// and every answer, so it learns the allocation's relayed address (from
// the Allocate success response) and the channels pion binds (ChannelBind
// requests and their success responses; pion refreshes them on its own
// timer, and each refresh's answer renews them here). Once a channel to
// the selected pair's remote address is bound, Session.Write frames the
// packet as ChannelData itself and hands it to the socket, and the
// socket's reader hands ChannelData from the server on that channel
// straight to OnPacket. Everything else (STUN: connectivity and consent
// checks, refreshes; Data indications before the channel is bound;
// packets on other channels) goes to pion as before. A channel whose last
// bind or refresh answer is older than the channel lifetime (10 minutes,
// RFC 8656), or that got an error answer, is not used until it is bound
// again.

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v4"
)

const (
	// channelLifetime is how long a channel binding lasts on the server
	// after its bind or refresh (RFC 8656 section 12).
	channelLifetime = 10 * time.Minute
	// channelMargin keeps the fast path off a channel this long before it
	// would expire without a refresh.
	channelMargin = 30 * time.Second

	channelHeader              = 4
	minChannel, maxChannel     = 0x4000, 0x7FFF // RFC 5766; RFC 8656 narrowed it to 0x4FFF
	maxPendingBinds            = 64
	stunTypeChannelBindRequest = 0x0009
)

// channelState is what a peerFilterConn learned from pion's TURN
// exchanges. Its methods are safe for concurrent use.
type channelState struct {
	mu      sync.Mutex
	server  netip.AddrPort                               // where pion sends TURN requests
	relayed netip.AddrPort                               // the allocation's relayed address
	pending map[[stun.TransactionIDSize]byte]pendingBind // ChannelBind requests in flight
	byPeer  map[netip.AddrPort]*channel
	byNum   map[uint16]*channel

	// recv, when set, receives the data of ChannelData on the channel of
	// its peer (see setReceiver and deliver).
	recv atomic.Pointer[channelReceiver]

	fastOut, fastIn atomic.Uint64 // datagrams that took the fast path
}

type pendingBind struct {
	num  uint16
	peer netip.AddrPort
}

type channel struct {
	num     uint16
	peer    netip.AddrPort
	boundAt time.Time // of the last success answer; zero while unbound
}

type channelReceiver struct {
	peer netip.AddrPort
	fn   func([]byte)
}

// usable reports whether the channel may carry data now.
func (ch *channel) usable(now time.Time) bool {
	return !ch.boundAt.IsZero() && now.Sub(ch.boundAt) < channelLifetime-channelMargin
}

// sent looks at a datagram pion sends to addr: a ChannelBind request is
// remembered until its answer.
func (s *channelState) sent(b []byte, addr net.Addr) {
	if len(b) < 20 || binary.BigEndian.Uint16(b[0:2]) != stunTypeChannelBindRequest || !stun.IsMessage(b) {
		return
	}
	to, ok := addrPortOf(addr)
	if !ok {
		return
	}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if m.Decode() != nil {
		return
	}
	num, ok := channelNumberOf(m)
	if !ok {
		return
	}
	var pa stun.XORMappedAddress
	if err := pa.GetFromAs(m, stun.AttrXORPeerAddress); err != nil {
		return
	}
	ip, ok := netip.AddrFromSlice(pa.IP)
	if !ok {
		return
	}
	peer := netip.AddrPortFrom(ip.Unmap(), uint16(pa.Port))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.server = to
	if s.pending == nil {
		s.pending = make(map[[stun.TransactionIDSize]byte]pendingBind)
	}
	if len(s.pending) >= maxPendingBinds {
		clear(s.pending) // answers lost; pion asks again
	}
	s.pending[m.TransactionID] = pendingBind{num: num, peer: peer}
}

// received looks at a STUN datagram from the server: the relayed address
// of an Allocate success, the answer to a ChannelBind.
func (s *channelState) received(b []byte, from net.Addr) {
	if !stun.IsMessage(b) {
		return
	}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if m.Decode() != nil {
		return
	}
	switch {
	case m.Type == stun.NewType(stun.MethodAllocate, stun.ClassSuccessResponse):
		var ra stun.XORMappedAddress
		if err := ra.GetFromAs(m, stun.AttrXORRelayedAddress); err != nil {
			return
		}
		if ip, ok := netip.AddrFromSlice(ra.IP); ok {
			s.mu.Lock()
			s.relayed = netip.AddrPortFrom(ip.Unmap(), uint16(ra.Port))
			s.mu.Unlock()
		}
	case m.Type.Method == stun.MethodChannelBind:
		s.mu.Lock()
		defer s.mu.Unlock()
		pb, ok := s.pending[m.TransactionID]
		if !ok {
			return
		}
		delete(s.pending, m.TransactionID)
		if from, ok := addrPortOf(from); !ok || from != s.server {
			return
		}
		if m.Type.Class != stun.ClassSuccessResponse {
			// The server refused: leave the channel to pion.
			if ch := s.byNum[pb.num]; ch != nil && ch.peer == pb.peer {
				ch.boundAt = time.Time{}
			}
			return
		}
		if s.byNum == nil {
			s.byNum = make(map[uint16]*channel)
			s.byPeer = make(map[netip.AddrPort]*channel)
		}
		if old := s.byNum[pb.num]; old != nil && old.peer != pb.peer {
			delete(s.byPeer, old.peer)
		}
		if old := s.byPeer[pb.peer]; old != nil && old.num != pb.num {
			delete(s.byNum, old.num)
		}
		s.byNum[pb.num] = &channel{num: pb.num, peer: pb.peer, boundAt: time.Now()}
		s.byPeer[pb.peer] = s.byNum[pb.num]
	}
}

// relayedAddr returns the allocation's relayed address, if known.
func (s *channelState) relayedAddr() netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.relayed
}

// route returns the channel number and the server to frame data to peer
// with, if a usable channel is bound to it.
func (s *channelState) route(peer netip.AddrPort) (uint16, netip.AddrPort, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.byPeer[peer]
	if ch == nil || !ch.usable(time.Now()) {
		return 0, netip.AddrPort{}, false
	}
	return ch.num, s.server, true
}

// setReceiver makes ChannelData from peer go to fn (nil: to pion).
func (s *channelState) setReceiver(peer netip.AddrPort, fn func([]byte)) {
	if fn == nil {
		s.recv.Store(nil)
		return
	}
	s.recv.Store(&channelReceiver{peer: peer, fn: fn})
}

// deliver hands the data of b, a datagram from the server, to the
// receiver if b is ChannelData on a usable channel from the receiver's
// peer and its data is not STUN (which pion must see). It reports whether
// it did.
func (s *channelState) deliver(b []byte, from net.Addr) bool {
	r := s.recv.Load()
	if r == nil || len(b) < channelHeader {
		return false
	}
	num := binary.BigEndian.Uint16(b[0:2])
	if num < minChannel || num > maxChannel {
		return false
	}
	n := int(binary.BigEndian.Uint16(b[2:4]))
	if channelHeader+n > len(b) || n == 0 {
		return false
	}
	data := b[channelHeader : channelHeader+n]
	if stun.IsMessage(data) {
		return false
	}
	src, ok := addrPortOf(from)
	if !ok {
		return false
	}
	s.mu.Lock()
	ch := s.byNum[num]
	ok = ch != nil && ch.peer == r.peer && src == s.server && ch.usable(time.Now())
	s.mu.Unlock()
	if !ok {
		return false
	}
	s.fastIn.Add(1)
	r.fn(data)
	return true
}

// channelNumberOf returns the CHANNEL-NUMBER attribute of m.
func channelNumberOf(m *stun.Message) (uint16, bool) {
	v, err := m.Get(stun.AttrChannelNumber)
	if err != nil || len(v) < 2 {
		return 0, false
	}
	num := binary.BigEndian.Uint16(v[0:2])
	return num, num >= minChannel && num <= maxChannel
}

func addrPortOf(a net.Addr) (netip.AddrPort, bool) {
	ua, ok := a.(*net.UDPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap := ua.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), ap.IsValid()
}

// frameBufs are ChannelData frames being built by writeChannel.
var frameBufs = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// writeChannel sends b to peer as ChannelData on its channel, if one is
// usable, and reports whether it did. The socket copies the frame before
// WriteTo returns (udpbatch.Conn queues a copy).
func (c *peerFilterConn) writeChannel(peer netip.AddrPort, b []byte) (bool, error) {
	num, server, ok := c.ch.route(peer)
	if !ok {
		return false, nil
	}
	bp := frameBufs.Get().(*[]byte)
	frame := append((*bp)[:0], 0, 0, 0, 0)
	binary.BigEndian.PutUint16(frame[0:2], num)
	binary.BigEndian.PutUint16(frame[2:4], uint16(len(b)))
	frame = append(frame, b...)
	// Padding to 4 bytes, which RFC 8656 requires over TCP only, as pion
	// and coturn send it over UDP too. WireGuard's packets need none.
	for len(frame)%4 != 0 {
		frame = append(frame, 0)
	}
	_, err := c.PacketConn.WriteTo(frame, net.UDPAddrFromAddrPort(server))
	*bp = frame
	frameBufs.Put(bp)
	if err != nil {
		return true, err
	}
	c.ch.fastOut.Add(1)
	return true, nil
}
