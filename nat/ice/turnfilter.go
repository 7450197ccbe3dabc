package ice

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/transport/v5"
	"github.com/pion/transport/v5/stdnet"

	"github.com/weft-net/weft/nat/internal/udpbatch"
)

// A TURN server on a public address cannot reach a peer's private,
// shared (CGNAT), link-local or loopback address, and asking it to can
// cost the whole allocation: coturn closes a relay socket, and with it
// the allocation, when one sendto from it fails (ns_ioalib_engine_impl.c,
// send_data_from_ioa_socket_nbh sets tobeclosed on any udp_send error).
// A server with no route to 10.0.0.0/8, say, gets ENETUNREACH for the
// first check pion sends from the relay candidate to the peer's host
// candidate, and tears the allocation down under both sides about a
// second after it was made: the relayed pair then never works ("no
// candidate pair worked"), and the next request pion makes on that
// socket lands in a fresh coturn session without an allocation, which
// answers 438 (Wrong nonce) and then 400, on which pion/turn closes the
// allocation itself (udp_conn.go, closeAfterChannelBindBadRequest).
//
// pion/ice pairs a relay candidate with every remote candidate and has no
// hook to skip pairs, so the TURN client's socket is wrapped instead
// (turnNet): a CreatePermission request for such a peer, to a TURN server
// on a global address, is not sent, and pion gets a 403 (Forbidden) error
// response for it at once, as from a server with --denied-peer-ip. The
// pair fails, the allocation lives. pion only sends data (Send, ChannelBind)
// to a peer after its CreatePermission succeeded, so that is the one
// request to stop. TURN over TCP is not wrapped.

// relayablePeer reports whether a TURN server at server may be asked to
// relay to peer: always, unless server is a global unicast address and
// peer is not one (private, shared address space, link-local, loopback,
// multicast or unspecified).
func relayablePeer(server, peer netip.Addr) bool {
	server, peer = server.Unmap(), peer.Unmap()
	if !isGlobal(server) {
		return true
	}
	return isGlobal(peer)
}

// sharedAddressSpace is 100.64.0.0/10 (RFC 6598, carrier-grade NAT).
var sharedAddressSpace = netip.MustParsePrefix("100.64.0.0/10")

func isGlobal(a netip.Addr) bool {
	return a.IsGlobalUnicast() && !a.IsPrivate() && !sharedAddressSpace.Contains(a)
}

// turnNet is pion's default transport.Net, with the sockets pion/ice opens
// with ListenPacket (those of TURN allocations over UDP; host and srflx
// candidates use the Mux's UDP muxes) wrapped in a peerFilterConn, over a
// udpbatch.Conn.
type turnNet struct {
	*stdnet.Net

	mu    sync.Mutex
	conns []*peerFilterConn // the sockets it opened, for the fast path (turnfast.go)
}

var _ transport.Net = (*turnNet)(nil)

func newTURNNet() (*turnNet, error) {
	n, err := stdnet.NewNet()
	if err != nil {
		return nil, err
	}
	return &turnNet{Net: n}, nil
}

func (n *turnNet) ListenPacket(network, address string) (net.PacketConn, error) {
	pc, err := n.Net.ListenPacket(network, address)
	if err != nil {
		return nil, err
	}
	if udp, ok := pc.(*net.UDPConn); ok {
		// pion/turn's client writes (ChannelData) and reads one datagram
		// at a time: batch them.
		pc = udpbatch.New(udp)
	}
	fc := newPeerFilterConn(pc)
	n.mu.Lock()
	n.conns = append(n.conns, fc)
	n.mu.Unlock()
	return fc, nil
}

// connFor returns the socket of the allocation whose relayed address is
// relayed, or nil.
func (n *turnNet) connFor(relayed netip.AddrPort) *peerFilterConn {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, c := range n.conns {
		if c.ch.relayedAddr() == relayed {
			return c
		}
	}
	return nil
}

// setReceivers makes the socket of relayed hand ChannelData from peer to
// fn, and every other socket hand all to pion (fn nil: all of them).
func (n *turnNet) setReceivers(relayed, peer netip.AddrPort, fn func([]byte)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, c := range n.conns {
		if fn != nil && c.ch.relayedAddr() == relayed {
			c.ch.setReceiver(peer, fn)
		} else {
			c.ch.setReceiver(netip.AddrPort{}, nil)
		}
	}
}

// peerFilterConn is a TURN client's socket that answers, itself, the
// CreatePermission requests relayablePeer refuses (see above).
type peerFilterConn struct {
	net.PacketConn

	ch channelState // for the fast path (turnfast.go)

	mu      sync.Mutex
	pending []filteredAnswer // answers ReadFrom returns before reading the socket
	wake    atomic.Bool      // a past read deadline was set to wake ReadFrom
}

type filteredAnswer struct {
	b    []byte
	from net.Addr
}

func newPeerFilterConn(pc net.PacketConn) *peerFilterConn {
	return &peerFilterConn{PacketConn: pc}
}

func (c *peerFilterConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if answer := c.refuse(b, addr); answer != nil {
		c.mu.Lock()
		c.pending = append(c.pending, filteredAnswer{b: answer, from: addr})
		c.mu.Unlock()
		// Wake a ReadFrom blocked on the socket. pion/turn's client sets
		// no read deadlines of its own on this socket.
		c.wake.Store(true)
		c.PacketConn.SetReadDeadline(time.Now())
		return len(b), nil
	}
	c.ch.sent(b, addr)
	return c.PacketConn.WriteTo(b, addr)
}

func (c *peerFilterConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		c.mu.Lock()
		if len(c.pending) > 0 {
			a := c.pending[0]
			c.pending = c.pending[1:]
			c.mu.Unlock()
			return copy(b, a.b), a.from, nil
		}
		c.mu.Unlock()
		n, from, err := c.PacketConn.ReadFrom(b)
		if err != nil && errors.Is(err, os.ErrDeadlineExceeded) && c.wake.Swap(false) {
			c.PacketConn.SetReadDeadline(time.Time{})
			continue
		}
		if err == nil && n > 0 {
			if c.ch.deliver(b[:n], from) {
				continue
			}
			c.ch.received(b[:n], from)
		}
		return n, from, err
	}
}

// refuse returns the error response to send back for b, sent to addr, if
// b is a CreatePermission request naming a peer relayablePeer refuses;
// otherwise nil.
func (c *peerFilterConn) refuse(b []byte, addr net.Addr) []byte {
	if !stun.IsMessage(b) {
		return nil
	}
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return nil
	}
	server, ok := netip.AddrFromSlice(ua.IP)
	if !ok || !isGlobal(server.Unmap()) {
		return nil
	}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := m.Decode(); err != nil || m.Type != stun.NewType(stun.MethodCreatePermission, stun.ClassRequest) {
		return nil
	}
	refused := false
	for _, a := range m.Attributes {
		if a.Type != stun.AttrXORPeerAddress {
			continue
		}
		var pa stun.XORMappedAddress
		one := &stun.Message{TransactionID: m.TransactionID, Attributes: stun.Attributes{a}}
		if err := pa.GetFromAs(one, stun.AttrXORPeerAddress); err != nil {
			return nil
		}
		peer, ok := netip.AddrFromSlice(pa.IP)
		if !ok || !relayablePeer(server, peer) {
			refused = true
		}
	}
	if !refused {
		return nil
	}
	resp, err := stun.Build(
		stun.NewTransactionIDSetter(m.TransactionID),
		stun.NewType(stun.MethodCreatePermission, stun.ClassErrorResponse),
		stun.ErrorCodeAttribute{Code: stun.CodeForbidden, Reason: []byte("Forbidden: weft does not ask a TURN server on a public address to relay to a private one")},
		stun.Fingerprint,
	)
	if err != nil {
		return nil
	}
	return resp.Raw
}
