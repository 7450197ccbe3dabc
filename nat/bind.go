package nat

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv6"
	"golang.zx2c4.com/wireguard/conn"

	"github.com/weft-net/weft/nat/internal/udpbatch"
)

var (
	_ conn.Bind     = (*bind)(nil)
	_ conn.Endpoint = (*Endpoint)(nil)
)

// Endpoint is a WireGuard endpoint on the shared socket: a remote UDP
// address. It is immutable, so one value may be shared by any number of
// peers and packets. There is no sticky source address.
type Endpoint struct {
	ap  netip.AddrPort
	ua  *net.UDPAddr // what sendmmsg wants, built once
	dst []byte       // DstToBytes, built once
}

// NewEndpoint returns the endpoint for ap (IPv4-mapped IPv6 addresses are
// unmapped). Use it to hand a path chosen by NAT traversal to WireGuard.
func NewEndpoint(ap netip.AddrPort) *Endpoint {
	ap = unmapAddrPort(ap)
	dst, _ := ap.MarshalBinary()
	return &Endpoint{ap: ap, ua: net.UDPAddrFromAddrPort(ap), dst: dst}
}

// AddrPort returns the remote address.
func (e *Endpoint) AddrPort() netip.AddrPort { return e.ap }

// ClearSrc does nothing: the shared socket has no sticky source.
func (e *Endpoint) ClearSrc() {}

// SrcToString returns "": the kernel picks the source address.
func (e *Endpoint) SrcToString() string { return "" }

// DstToString returns the remote address as ip:port.
func (e *Endpoint) DstToString() string { return e.ap.String() }

// DstToBytes returns the remote address in netip.AddrPort's binary form (for
// WireGuard's cookie MACs). Callers must not modify it.
func (e *Endpoint) DstToBytes() []byte { return e.dst }

// DstIP returns the remote IP address.
func (e *Endpoint) DstIP() netip.Addr { return e.ap.Addr() }

// SrcIP returns the zero Addr: there is no sticky source.
func (e *Endpoint) SrcIP() netip.Addr { return netip.Addr{} }

// Bind returns the WireGuard conn.Bind over the shared socket. Every call
// returns the same Bind; see the package documentation for its behaviour.
func (c *Conn) Bind() conn.Bind { return &c.bind }

// bind implements conn.Bind on top of a Conn. Open starts a session; Close
// ends it without touching the socket.
type bind struct {
	c *Conn

	mu      sync.Mutex                  // serialises Open and Close
	session atomic.Pointer[bindSession] // nil while closed; read by the reader without mu
}

// bindSession is one Open..Close period of the Bind.
type bindSession struct {
	c      *Conn
	ch     chan *rxBatch // a batch the background reader read as the Bind opened
	done   chan struct{} // closed by Close
	relayq *relayQueue   // WireGuard packets delivered over relays (relayed.go)

	rmu     sync.Mutex  // held by the ReceiveFunc caller; guards the fields below
	pending [][]byte    // WireGuard packets read but not yet handed out
	pendEPs []*Endpoint // their endpoints
	pendRx  *rxBatch    // the batch backing pending, if any; pooled once it is drained
	spill   spill       // backs pending after a direct read that overflowed
}

// Open starts delivering WireGuard packets, through two ReceiveFuncs: the
// first reads the socket, the second hands out what came in over relays
// (RelayedEndpoint.Deliver). port must be 0 or the socket's
// port; the socket's port is returned. It fails with net.ErrClosed once the
// Conn is closed and with conn.ErrBindAlreadyOpen if already open.
func (b *bind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.c.closed.Load() {
		return nil, 0, net.ErrClosed
	}
	if b.session.Load() != nil {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	local := b.c.local.Port()
	if port != 0 && port != local {
		return nil, 0, fmt.Errorf("nat bind open port %d (socket is on %d; use 0): %w", port, local, ErrPortMismatch)
	}
	s := &bindSession{
		c:      b.c,
		ch:     make(chan *rxBatch, 1),
		done:   make(chan struct{}),
		relayq: newRelayQueue(),
	}
	b.session.Store(s)
	b.c.kick() // the background reader hands the socket over
	return []conn.ReceiveFunc{s.receive, s.receiveRelayed}, local, nil
}

// Close stops delivery: the ReceiveFuncs returned by Open return
// net.ErrClosed, and WireGuard packets are dropped until the next Open. The
// socket stays open. Close is idempotent.
func (b *bind) Close() error {
	b.mu.Lock()
	s := b.session.Swap(nil)
	b.mu.Unlock()
	if s == nil {
		return nil
	}
	close(s.done)
	b.c.kick() // a ReceiveFunc blocked reading returns; the background reader takes over
	select {
	case x := <-s.ch:
		b.c.stats.wgDropped.Add(uint64(x.n))
		b.c.putRx(x)
	default:
	}
	return nil
}

// SetMark sets SO_MARK (where supported) on the shared socket, so it applies
// to control traffic too.
func (b *bind) SetMark(mark uint32) error {
	if err := setMark(b.c.udp, mark); err != nil {
		return fmt.Errorf("nat bind set mark %d: %w", mark, err)
	}
	return nil
}

// ParseEndpoint parses "ip:port" (IPv6 in brackets).
func (b *bind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, fmt.Errorf("nat parse endpoint %s: %w", strconv.Quote(s), err)
	}
	return NewEndpoint(ap), nil
}

// BatchSize returns BatchSize.
func (b *bind) BatchSize() int { return BatchSize }

// Send writes bufs to ep with sendmmsg. ep must come from this package
// (ParseEndpoint, NewEndpoint or a received packet). With UDP GSO, runs of
// equal-sized buffers go out as one message: like wireguard-go's
// StdNetBind, Send appends the later buffers of a run into the spare
// capacity of its first, so callers must not keep data beyond len(bufs[i]).
// If the kernel refuses GSO (EIO: the route's device cannot checksum), Send
// turns it off for the socket and resends without it. Packets for a
// RelayedEndpoint's address skip the socket: they go to its write.
func (b *bind) Send(bufs [][]byte, ep conn.Endpoint) error {
	e, ok := ep.(*Endpoint)
	if !ok {
		return conn.ErrWrongEndpointType
	}
	if b.session.Load() == nil {
		return net.ErrClosed
	}
	if r := b.c.relayedEndpoint(e.ap); r != nil {
		r.send(bufs)
		b.c.stats.wgOut.Add(uint64(len(bufs)))
		return nil
	}
	if err := b.c.sendBatch(bufs, e); err != nil {
		b.c.stats.wgSendErrors.Add(1)
		return fmt.Errorf("nat bind send to %s: %w", e.ap, err)
	}
	b.c.stats.wgOut.Add(uint64(len(bufs)))
	return nil
}

// deliver queues a WireGuard packet that came in over a relay for the
// open Bind's relay ReceiveFunc. With the Bind closed it is dropped and
// counted, as the background reader would; it reports false only if the
// queue is full.
func (b *bind) deliver(pkt []byte, ep *Endpoint) bool {
	s := b.session.Load()
	if s == nil {
		b.c.stats.wgDropped.Add(1)
		return true
	}
	return s.relayq.push(pkt, ep)
}

// receiveRelayed is the Bind's second ReceiveFunc: it hands out the
// WireGuard packets delivered over relays, waiting for some if there are
// none.
func (s *bindSession) receiveRelayed(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	for {
		select {
		case <-s.done:
			return 0, net.ErrClosed
		default:
		}
		n, dropped := s.relayq.pop(bufs, sizes, eps)
		if dropped > 0 {
			s.c.stats.wgDropped.Add(dropped)
		}
		if n > 0 {
			s.c.stats.wgIn.Add(uint64(n))
			return n, nil
		}
		select {
		case <-s.relayq.ready:
		case <-s.done:
			return 0, net.ErrClosed
		}
	}
}

// receive is the Bind's first ReceiveFunc. While the Bind is open it is
// the socket's reader: see receive.go.
func (s *bindSession) receive(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	c := s.c
	for {
		select {
		case <-s.done:
			s.releasePendingLocked()
			return 0, net.ErrClosed
		default:
		}
		if len(s.pending) > 0 {
			return s.handOutLocked(bufs, sizes, eps), nil
		}
		st := c.takeRx(s.done)
		if st == nil {
			continue // closed
		}
		select {
		case b := <-s.ch:
			c.rx <- st
			s.pending, s.pendEPs, s.pendRx = b.pkts[:b.n], b.eps[:b.n], b
			continue
		default:
		}
		var n int
		var err error
		if c.canReadDirect(bufs) {
			n, err = c.readDirect(st, bufs, sizes, eps, &s.spill)
			if len(s.spill.pkts) > 0 {
				s.pending, s.pendEPs = s.spill.pkts, s.spill.eps
			}
		} else {
			// Buffers too small to read into: read into a batch of our
			// own and copy out.
			b := c.getRx()
			if err = c.readBatch(st, b); err == nil && b.n > 0 {
				s.pending, s.pendEPs, s.pendRx = b.pkts[:b.n], b.eps[:b.n], b
			} else {
				c.putRx(b)
			}
		}
		pause := false
		if err != nil {
			pause = c.readFailed(st, err)
		}
		c.rx <- st
		if err != nil {
			if c.socketClosed(err) {
				return 0, net.ErrClosed
			}
			if pause {
				select {
				case <-time.After(readErrorPause):
				case <-s.done:
				}
			}
			continue // after a kick: Close, or a stale one
		}
		select {
		case <-s.done:
			// Close ran during the read: drop, as the background reader
			// would have.
			c.stats.wgDropped.Add(uint64(n))
			s.releasePendingLocked()
			return 0, net.ErrClosed
		default:
		}
		if n > 0 {
			c.stats.wgIn.Add(uint64(n))
			return n, nil
		}
	}
}

// handOutLocked copies pending packets into bufs.
func (s *bindSession) handOutLocked(bufs [][]byte, sizes []int, eps []conn.Endpoint) int {
	n := 0
	for n < len(bufs) && n < len(s.pending) {
		sizes[n] = copy(bufs[n], s.pending[n])
		eps[n] = s.pendEPs[n]
		n++
	}
	s.pending, s.pendEPs = s.pending[n:], s.pendEPs[n:]
	s.c.stats.wgIn.Add(uint64(n))
	if len(s.pending) == 0 {
		s.releasePendingLocked()
	}
	return n
}

// releasePendingLocked drops the pending packets (counting them) and frees
// what backs them.
func (s *bindSession) releasePendingLocked() {
	s.c.stats.wgDropped.Add(uint64(len(s.pending)))
	s.pending, s.pendEPs = nil, nil
	if s.pendRx != nil {
		s.c.putRx(s.pendRx)
		s.pendRx = nil
	}
	s.spill.reset()
}

// txBatch is a pooled sendmmsg message vector.
type txBatch struct {
	msgs []ipv6.Message
}

func newTxBatch() *txBatch {
	t := &txBatch{msgs: make([]ipv6.Message, sendBatchMsgs)}
	oob := make([]byte, sendBatchMsgs*gsoControlSize)
	for i := range t.msgs {
		t.msgs[i].Buffers = make(net.Buffers, 1)
		t.msgs[i].OOB = oob[i*gsoControlSize : i*gsoControlSize : (i+1)*gsoControlSize]
	}
	return t
}

// reset drops the references to the caller's buffers.
func (t *txBatch) reset() {
	for i := range t.msgs {
		m := &t.msgs[i]
		m.Buffers[0] = nil
		m.OOB = m.OOB[:0]
		m.Addr = nil
		m.N, m.NN = 0, 0
	}
}

// sendBatch writes every buffer in bufs to ep, up to sendBatchMsgs
// messages per system call, coalescing runs of packets into UDP GSO
// messages while the socket has GSO.
func (c *Conn) sendBatch(bufs [][]byte, ep *Endpoint) error {
	t := c.txPool.Get().(*txBatch)
	defer func() {
		t.reset()
		c.txPool.Put(t)
	}()
	for len(bufs) > 0 {
		k := min(len(bufs), len(t.msgs))
		var n int
		gso := c.gso.Load()
		if gso {
			n = coalesceMessages(ep.ua, bufs[:k], t.msgs, udpbatch.MaxGSOPayload, setGSOSize)
		} else {
			n = plainMessages(ep.ua, bufs[:k], t.msgs)
		}
		err := c.writeBatch(t.msgs[:n])
		if err != nil && gso && shouldDisableGSO(err) {
			// As wireguard-go does: the packets of this round may have
			// been partly sent, and are sent again in full; WireGuard's
			// replay window drops duplicates.
			if c.gso.CompareAndSwap(true, false) {
				c.log.Warn("UDP segmentation offload refused by the kernel; sending without it", "err", err)
			}
			t.reset()
			n = plainMessages(ep.ua, bufs[:k], t.msgs)
			err = c.writeBatch(t.msgs[:n])
		}
		if err != nil {
			return err
		}
		t.reset()
		bufs = bufs[k:]
	}
	return nil
}

// writeBatch writes msgs with as many sendmmsg calls as it takes.
func (c *Conn) writeBatch(msgs []ipv6.Message) error {
	for start := 0; start < len(msgs); {
		n, err := c.wpc.WriteBatch(msgs[start:], 0)
		if err != nil {
			return err
		}
		if n <= 0 {
			return fmt.Errorf("sendmmsg wrote no messages")
		}
		start += n
	}
	return nil
}

// plainMessages fills one message per buffer and returns the count.
func plainMessages(ua *net.UDPAddr, bufs [][]byte, msgs []ipv6.Message) int {
	for i, buf := range bufs {
		msgs[i].Buffers[0] = buf
		msgs[i].Addr = ua
	}
	return len(bufs)
}

// coalesceMessages packs bufs into msgs for UDP GSO and returns the number
// of messages used (at most len(bufs)). A run of buffers of one size, which
// may end with one shorter buffer, becomes one message whose segment size
// is that of its first buffer; the later buffers are appended into the
// first's spare capacity, so a run is also cut where that runs out, at
// udpSegmentMaxDatagrams and at maxPayload bytes. setGSO adds the
// UDP_SEGMENT cmsg (a parameter so tests can check it).
//
// Adapted from coalesceMessages in wireguard-go's conn/bind_std.go (MIT,
// Copyright (C) 2017-2025 WireGuard LLC), without sticky source addresses.
func coalesceMessages(ua *net.UDPAddr, bufs [][]byte, msgs []ipv6.Message, maxPayload int, setGSO func(*[]byte, uint16)) int {
	var (
		base     = -1 // index of the message being filled
		gsoSize  int  // segment size of msgs[base]
		dgramCnt int  // datagrams in msgs[base]
		endBatch bool // msgs[base] ended with a short datagram
	)
	for i, buf := range bufs {
		if i > 0 {
			msgLen := len(buf)
			baseLen := len(msgs[base].Buffers[0])
			freeCap := cap(msgs[base].Buffers[0]) - baseLen
			if msgLen+baseLen <= maxPayload &&
				msgLen <= gsoSize &&
				msgLen <= freeCap &&
				dgramCnt < udpSegmentMaxDatagrams &&
				!endBatch {
				msgs[base].Buffers[0] = append(msgs[base].Buffers[0], buf...)
				dgramCnt++
				// A segment shorter than gsoSize is legal only at the
				// end of a message.
				endBatch = msgLen < gsoSize
				continue
			}
		}
		if dgramCnt > 1 {
			setGSO(&msgs[base].OOB, uint16(gsoSize))
		}
		endBatch = false
		base++
		gsoSize = len(buf)
		msgs[base].Buffers[0] = buf
		msgs[base].Addr = ua
		dgramCnt = 1
	}
	if dgramCnt > 1 {
		setGSO(&msgs[base].OOB, uint16(gsoSize))
	}
	return base + 1
}
