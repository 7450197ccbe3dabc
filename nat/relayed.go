package nat

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/conn"
)

// RelayedEndpoint stands in, on the shared socket, for a peer reached over a
// path the shared socket cannot carry: a TURN allocation, whose packets
// must go through the ICE session (ice.Session.Write) and arrive through
// its OnPacket callback.
//
// It is a small UDP socket of its own, on the shared socket's address
// (loopback if that is a wildcard). Its address (AddrPort) is
// the WireGuard endpoint of the peer. The Bind recognises that address
// and hands what WireGuard sends there straight to the write function,
// without the socket (a loopback send and a read per packet less); what
// else arrives on the socket (control messages to the endpoint) its
// reader passes to write. Deliver hands what the peer sent through the
// relay to the Conn as from the endpoint, without the socket either:
// WireGuard packets to the Bind's relay queue (relayQueue), control
// messages to the control workers. A control call to the endpoint thus
// reaches the peer over the relay too. The Bind's fast path for other
// endpoints is untouched.
//
// Only WireGuard and weft control packets pass, in either direction, and
// the endpoint reads only datagrams from the shared socket's own address.
type RelayedEndpoint struct {
	c      *Conn
	udp    *net.UDPConn
	ap     netip.AddrPort // the endpoint's address, handed to WireGuard
	ep     *Endpoint      // ap, the endpoint of the packets Deliver queues
	shared netip.AddrPort // the shared socket: the only source the reader accepts
	write  atomic.Pointer[func([]byte) error]
	closed atomic.Bool // set by Close: Deliver drops

	sent, delivered, dropped atomic.Uint64

	closeOnce sync.Once
	wg        sync.WaitGroup
}

// NewRelayedEndpoint opens a relayed endpoint whose outgoing packets go to
// write (called from the endpoint's reader goroutine and from the Bind's
// Send, so possibly concurrently; it must not keep b). Close it when the
// path is gone.
func (c *Conn) NewRelayedEndpoint(write func(b []byte) error) (*RelayedEndpoint, error) {
	if write == nil {
		return nil, errors.New("nat relayed endpoint: write is nil")
	}
	if c.closed.Load() {
		return nil, ErrClosed
	}
	// The shared socket's own address when it has one, else loopback of
	// the socket's family.
	shared := c.local
	ip := shared.Addr()
	if ip.IsUnspecified() {
		// A socket on [::] (dual-stack or not) receives on ::1.
		ip = netip.AddrFrom4([4]byte{127, 0, 0, 1})
		if shared.Addr().Is6() {
			ip = netip.IPv6Loopback()
		}
		shared = netip.AddrPortFrom(ip, shared.Port())
	}
	network := "udp4"
	if ip.Is6() {
		network = "udp6"
	}
	udp, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
	if err != nil {
		return nil, fmt.Errorf("nat relayed endpoint: %w", err)
	}
	ap := unmapAddrPort(udp.LocalAddr().(*net.UDPAddr).AddrPort())
	r := &RelayedEndpoint{
		c:      c,
		udp:    udp,
		ap:     ap,
		ep:     NewEndpoint(ap),
		shared: shared,
	}
	r.write.Store(&write)
	r.wg.Add(1)
	go r.readLoop()
	c.relayed.Store(r.ap, r)
	c.nRelayed.Add(1)
	return r, nil
}

// relayedEndpoint returns the open RelayedEndpoint at ap, or nil.
func (c *Conn) relayedEndpoint(ap netip.AddrPort) *RelayedEndpoint {
	if c.nRelayed.Load() == 0 {
		return nil // the common case, without a map lookup
	}
	if v, ok := c.relayed.Load(ap); ok {
		return v.(*RelayedEndpoint)
	}
	return nil
}

// send writes what WireGuard sent to the endpoint (the Bind's Send), one
// packet at a time. Failures count as dropped, as a lossy link's would.
func (r *RelayedEndpoint) send(bufs [][]byte) {
	write := *r.write.Load()
	for _, b := range bufs {
		if len(b) > MaxPacketSize || classify(b) != kindWireGuard {
			r.dropped.Add(1)
			continue
		}
		if err := write(b); err != nil {
			r.dropped.Add(1)
			continue
		}
		r.sent.Add(1)
	}
}

// AddrPort is the endpoint's address: give it to WireGuard as the peer's
// endpoint.
func (r *RelayedEndpoint) AddrPort() netip.AddrPort { return r.ap }

// SetWrite replaces the write function, e.g. when a new ICE session takes
// over the path.
func (r *RelayedEndpoint) SetWrite(write func(b []byte) error) {
	if write != nil {
		r.write.Store(&write)
	}
}

// Deliver hands a datagram the peer sent over the relay to the Conn, as
// from the endpoint: a WireGuard packet to the open Bind, a control
// message to the control workers. It is meant to be the ICE session's
// OnPacket (b is not kept); other kinds than WireGuard and control are
// dropped, and so is all after Close or while the Bind's relay queue is
// full.
func (r *RelayedEndpoint) Deliver(b []byte) {
	if r.closed.Load() {
		r.dropped.Add(1)
		return
	}
	switch classify(b) {
	case kindWireGuard:
		if len(b) > MaxPacketSize || !r.c.bind.deliver(b, r.ep) {
			r.dropped.Add(1)
			return
		}
	case kindControl:
		r.c.enqueueControl(b, r.ap)
	default:
		r.dropped.Add(1)
		return
	}
	r.delivered.Add(1)
}

// Counts returns how many datagrams went out through the relay, came in
// from it, and were dropped.
func (r *RelayedEndpoint) Counts() (sent, delivered, dropped uint64) {
	return r.sent.Load(), r.delivered.Load(), r.dropped.Load()
}

// Close closes the endpoint's socket and waits for its reader. WireGuard
// sends to its address fail silently afterwards (ICMP unreachable on
// loopback), and Deliver drops. It is idempotent.
func (r *RelayedEndpoint) Close() error {
	r.closeOnce.Do(func() {
		r.closed.Store(true)
		if r.c.relayed.CompareAndDelete(r.ap, r) {
			r.c.nRelayed.Add(-1)
		}
		r.udp.Close()
		r.wg.Wait()
	})
	return nil
}

func (r *RelayedEndpoint) readLoop() {
	defer r.wg.Done()
	buf := make([]byte, MaxPacketSize+1)
	for {
		n, from, err := r.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		from = unmapAddrPort(from)
		if from.Port() != r.shared.Port() || !from.Addr().IsLoopback() && from.Addr() != r.shared.Addr() || n > MaxPacketSize {
			r.dropped.Add(1)
			continue
		}
		switch classify(buf[:n]) {
		case kindWireGuard, kindControl:
		default:
			r.dropped.Add(1)
			continue
		}
		if err := (*r.write.Load())(buf[:n]); err != nil {
			r.dropped.Add(1)
			continue
		}
		r.sent.Add(1)
	}
}

// relayQueueLen bounds the WireGuard packets delivered over relays that
// wait for the Bind's relay ReceiveFunc, as a socket buffer would.
const relayQueueLen = 512

// relayQueue holds the WireGuard packets RelayedEndpoint.Deliver hands to
// an open Bind until its relay ReceiveFunc (bindSession.receiveRelayed)
// hands them to WireGuard, in order. It is a ring of relayQueueLen
// buffers, allocated on first use and reused, each grown to the largest
// packet it held.
type relayQueue struct {
	ready chan struct{} // capacity 1; signalled when the queue turns non-empty

	mu    sync.Mutex  // guards the fields below
	slots [][]byte    // the ring; nil until the first push
	eps   []*Endpoint // the endpoint of each slot's packet
	head  int         // index of the oldest packet
	n     int         // packets queued
}

func newRelayQueue() *relayQueue {
	return &relayQueue{ready: make(chan struct{}, 1)}
}

// push copies b into the queue. It reports false if the queue is full.
func (q *relayQueue) push(b []byte, ep *Endpoint) bool {
	q.mu.Lock()
	if q.slots == nil {
		q.slots = make([][]byte, relayQueueLen)
		q.eps = make([]*Endpoint, relayQueueLen)
	}
	if q.n == len(q.slots) {
		q.mu.Unlock()
		return false
	}
	i := (q.head + q.n) % len(q.slots)
	q.slots[i] = append(q.slots[i][:0], b...)
	q.eps[i] = ep
	q.n++
	wake := q.n == 1
	q.mu.Unlock()
	if wake {
		select {
		case q.ready <- struct{}{}:
		default:
		}
	}
	return true
}

// pop copies up to len(bufs) queued packets into bufs, oldest first, and
// returns how many it copied. A packet larger than its buffer is dropped
// (and counted in dropped).
func (q *relayQueue) pop(bufs [][]byte, sizes []int, eps []conn.Endpoint) (n int, dropped uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for n < len(bufs) && q.n > 0 {
		pkt, ep := q.slots[q.head], q.eps[q.head]
		q.eps[q.head] = nil
		q.head = (q.head + 1) % len(q.slots)
		q.n--
		if len(pkt) > len(bufs[n]) {
			dropped++
			continue
		}
		sizes[n] = copy(bufs[n], pkt)
		eps[n] = ep
		n++
	}
	return n, dropped
}
