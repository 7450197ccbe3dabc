package nat

// Reading the socket. Exactly one goroutine reads it at a time: the holder
// of the read baton, Conn.rx, which carries the reader's state from one
// holder to the next. While the Bind is closed the holder is the background
// reader (readLoop), which reads into pooled rxBatches. While the Bind is
// open it is whoever calls the Bind's ReceiveFunc (wireguard-go's receive
// routine): like wireguard-go's own StdNetBind, it reads straight into
// wireguard-go's buffers and splits GRO-coalesced datagrams in place, and
// it demultiplexes inline, copying the rare packets that are not WireGuard
// out to the control workers. A WireGuard packet is then copied once, by
// the kernel, and crosses no goroutine inside this package.
//
// Handover. A reader blocked in recvmmsg is woken by a read deadline in the
// past (kick). Bind.Open and Bind.Close first publish the change of reader
// (bind.session, bindSession.done) and then kick; a holder whose read times
// out clears the deadline (unkick) and only then looks at that state again,
// so a kick is never lost: at worst a later reader sees one spurious
// timeout and reads again. Only the baton holder reads or unkicks. A packet
// read by the reader that was on its way out still goes where it belongs:
// control packets are demultiplexed by whoever reads them; a batch the
// background reader read as the Bind opened is handed to the new session
// (bindSession.ch) before the session reads the socket itself; WireGuard
// packets a ReceiveFunc read while Bind.Close ran are dropped and counted,
// as the background reader would have done.

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/net/ipv6"
	"golang.zx2c4.com/wireguard/conn"
)

// rxState is what reading needs beyond one read. It travels with the read
// baton, so its holder owns it.
type rxState struct {
	eps    map[netip.AddrPort]*Endpoint // received endpoints, interned
	lastAP netip.AddrPort               // source of the last WireGuard packet
	lastEP *Endpoint                    // its endpoint
	errs   int                          // consecutive read errors
	msgs   []ipv6.Message               // message vector of direct reads
}

func newRxState() *rxState {
	return &rxState{eps: make(map[netip.AddrPort]*Endpoint)}
}

// endpoint returns the interned endpoint for a source address, so a steady
// flow reuses one pointer.
func (st *rxState) endpoint(ap netip.AddrPort) *Endpoint {
	if ap == st.lastAP && st.lastEP != nil {
		return st.lastEP
	}
	ep := st.eps[ap]
	if ep == nil {
		if len(st.eps) >= maxInternedEPs {
			clear(st.eps)
		}
		ep = NewEndpoint(ap)
		st.eps[ap] = ep
	}
	st.lastAP, st.lastEP = ap, ep
	return ep
}

// messages returns n message headers ready for a read, each with room for
// a UDP_GRO cmsg if gro. The caller sets Buffers[0].
func (st *rxState) messages(n int, gro bool) []ipv6.Message {
	if len(st.msgs) < n {
		msgs := make([]ipv6.Message, n)
		var oob []byte
		if gro {
			oob = make([]byte, n*gsoControlSize)
		}
		for i := range msgs {
			msgs[i].Buffers = make(net.Buffers, 1)
			if gro {
				msgs[i].OOB = oob[i*gsoControlSize : i*gsoControlSize : (i+1)*gsoControlSize]
			}
		}
		st.msgs = msgs
	}
	msgs := st.msgs[:n]
	for i := range msgs {
		m := &msgs[i]
		m.OOB = m.OOB[:cap(m.OOB)]
		m.Addr = nil
		m.N, m.NN, m.Flags = 0, 0, 0
	}
	return msgs
}

// takeRx waits for the read baton, or returns nil once done is closed.
func (c *Conn) takeRx(done <-chan struct{}) *rxState {
	select {
	case st := <-c.rx:
		return st
	default:
	}
	select {
	case st := <-c.rx:
		return st
	case <-done:
		return nil
	}
}

// aLongTimeAgo is a read deadline that has passed.
var aLongTimeAgo = time.Unix(1, 0)

// kick wakes the baton holder if it is blocked reading: its read fails
// with os.ErrDeadlineExceeded. Publish the reason before kicking.
func (c *Conn) kick() { c.udp.SetReadDeadline(aLongTimeAgo) }

// unkick clears a kick. Only the baton holder calls it, after its read
// timed out and before it looks at the state that says who reads.
func (c *Conn) unkick() { c.udp.SetReadDeadline(time.Time{}) }

func isKick(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// socketClosed reports whether a read error means the socket is gone.
func (c *Conn) socketClosed(err error) bool {
	return c.closed.Load() || errors.Is(err, net.ErrClosed)
}

// readFailed deals with a read error: a kick is cleared; any other error
// but the socket's closing is counted. It reports whether the reader
// should pause before reading again, so persistent errors don't make it
// spin. The caller holds the baton.
func (c *Conn) readFailed(st *rxState, err error) (pause bool) {
	switch {
	case isKick(err):
		c.unkick()
		return false
	case c.socketClosed(err):
		return false
	}
	c.stats.readErrors.Add(1)
	c.log.Debug("socket read", "err", err)
	st.errs++
	return st.errs > 10
}

// readErrorPause is how long a reader waits after more than ten read
// errors in a row.
const readErrorPause = 50 * time.Millisecond

// readLoop is the background reader: it reads the socket while the Bind
// is closed, and waits while it is open. It runs until the Conn closes.
func (c *Conn) readLoop() {
	defer c.wg.Done()
	var b *rxBatch
	defer func() {
		if b != nil {
			c.putRx(b)
		}
	}()
	for {
		if s := c.bind.session.Load(); s != nil {
			// The open Bind's ReceiveFunc reads the socket.
			if b != nil {
				c.putRx(b)
				b = nil
			}
			select {
			case <-s.done:
			case <-c.closing:
				return
			}
			continue
		}
		st := c.takeRx(c.closing)
		if st == nil {
			return
		}
		if c.bind.session.Load() != nil { // opened while we waited
			c.rx <- st
			continue
		}
		if b == nil {
			b = c.getRx()
		}
		err := c.readBatch(st, b)
		pause := false
		if err != nil {
			pause = c.readFailed(st, err)
		} else if b.n > 0 && c.handOff(b) {
			b = nil
		}
		c.rx <- st
		if err != nil && c.socketClosed(err) {
			return
		}
		if pause {
			select {
			case <-time.After(readErrorPause):
			case <-c.closing:
				return
			}
		}
	}
}

// handOff gives the WireGuard packets of a batch the background reader
// read to the Bind, if it opened during the read; otherwise they are
// dropped and counted. The caller holds the baton, so the session finds
// the batch before it reads the socket itself. It reports whether the
// session took b.
func (c *Conn) handOff(b *rxBatch) bool {
	if s := c.bind.session.Load(); s != nil {
		select {
		case s.ch <- b:
			return true
		default:
			// Not reached: the background reader reads at most once
			// while a session is open.
		}
	}
	c.stats.wgDropped.Add(uint64(b.n))
	return false
}

// rxBatch is one recvmmsg worth of datagrams read into buffers of our own.
// After readBatch, the first n entries of pkts and eps are its WireGuard
// packets: slices of bufs, several per buffer when a datagram arrived
// GRO-coalesced.
type rxBatch struct {
	msgs []ipv6.Message
	bufs [][]byte // one per message; see newRxBatch for the size
	oob  [][]byte // one per message, for the UDP_GRO cmsg (nil without GRO)
	pkts [][]byte
	eps  []*Endpoint
	n    int
}

// newRxBatch allocates a batch. Without GRO it reads BatchSize datagrams
// into MaxPacketSize+1 buffers, so truncation shows as an oversized
// datagram. With GRO it reads groReadMsgs datagrams into 64 KiB buffers,
// enough for any UDP datagram, coalesced or not.
func newRxBatch(gro bool) *rxBatch {
	nmsg, size, npkt := BatchSize, MaxPacketSize+1, BatchSize
	if gro {
		nmsg, size, npkt = groReadMsgs, groBufSize, groReadMsgs*udpSegmentMaxDatagrams
	}
	b := &rxBatch{
		msgs: make([]ipv6.Message, nmsg),
		bufs: make([][]byte, nmsg),
		pkts: make([][]byte, npkt),
		eps:  make([]*Endpoint, npkt),
	}
	mem := make([]byte, nmsg*size)
	for i := range b.bufs {
		b.bufs[i] = mem[i*size : (i+1)*size : (i+1)*size]
		b.msgs[i].Buffers = make(net.Buffers, 1)
	}
	if gro {
		b.oob = make([][]byte, nmsg)
		oob := make([]byte, nmsg*gsoControlSize)
		for i := range b.oob {
			b.oob[i] = oob[i*gsoControlSize : (i+1)*gsoControlSize : (i+1)*gsoControlSize]
		}
	}
	return b
}

func (b *rxBatch) prepare() {
	for i := range b.msgs {
		m := &b.msgs[i]
		m.Buffers[0] = b.bufs[i][:cap(b.bufs[i])]
		if b.oob != nil {
			m.OOB = b.oob[i][:cap(b.oob[i])]
		}
		m.Addr = nil
		m.N, m.NN, m.Flags = 0, 0, 0
	}
	clear(b.pkts[:b.n])
	clear(b.eps[:b.n])
	b.n = 0
}

func (c *Conn) getRx() *rxBatch  { return c.rxPool.Get().(*rxBatch) }
func (c *Conn) putRx(b *rxBatch) { c.rxPool.Put(b) }

// readBatch reads one recvmmsg worth of datagrams into b and sorts them.
// The caller holds the baton.
func (c *Conn) readBatch(st *rxState, b *rxBatch) error {
	b.prepare()
	n, err := c.pc.ReadBatch(b.msgs, 0)
	if err != nil {
		return err
	}
	st.errs = 0
	var bytesIn, pktsIn uint64
	w := 0
	for i := range n {
		m := &b.msgs[i]
		bytesIn += uint64(m.N)
		ap, ok := msgAddrPort(m)
		if !ok {
			pktsIn++
			c.stats.unknownDropped.Add(1)
			continue
		}
		data, seg := b.bufs[i][:m.N], c.segmentSize(m)
		for off := 0; ; off += seg {
			pkt := data[off:min(off+seg, len(data))]
			pktsIn++
			if c.isWireGuard(pkt, ap) {
				if w < len(b.pkts) {
					b.pkts[w], b.eps[w] = pkt, st.endpoint(ap)
					w++
				} else {
					// More segments than GRO makes: only a local
					// sender's GSO (up to 128 on newer kernels) can.
					c.stats.wgDropped.Add(1)
				}
			}
			if off+seg >= len(data) {
				break
			}
		}
	}
	b.n = w
	c.stats.packetsIn.Add(pktsIn)
	c.stats.bytesIn.Add(bytesIn)
	return nil
}

// directMsgs is the number of datagrams a direct read of nbufs buffers
// asks for. With GRO a datagram may split into up to
// udpSegmentMaxDatagrams packets, so, as wireguard-go does, one is read
// per that many buffers (and at least one).
func (c *Conn) directMsgs(nbufs int) int {
	if c.gro {
		return max(1, nbufs/udpSegmentMaxDatagrams)
	}
	return nbufs
}

// canReadDirect reports whether a ReceiveFunc can read datagrams straight
// into bufs: the buffers read into must hold any datagram (with GRO, a
// coalesced one), or a truncated read could not be told from a whole one.
// wireguard-go's buffers always can.
func (c *Conn) canReadDirect(bufs [][]byte) bool {
	if len(bufs) == 0 {
		return false
	}
	need := MaxPacketSize + 1
	if c.gro {
		need = directBufSize
	}
	for _, b := range bufs[len(bufs)-c.directMsgs(len(bufs)):] {
		if len(b) < need {
			return false
		}
	}
	return true
}

// readDirect reads datagrams straight into the last directMsgs(len(bufs))
// of bufs and sorts them, moving each WireGuard packet (each segment of a
// coalesced datagram) down to the next free buffer from the front, as
// wireguard-go's splitCoalescedMessages does. It returns the number of
// packets in bufs. WireGuard packets that do not fit (a datagram of more
// segments than there are free buffers) are copied to sp. The caller holds
// the baton and has checked canReadDirect(bufs); sp is empty.
func (c *Conn) readDirect(st *rxState, bufs [][]byte, sizes []int, eps []conn.Endpoint, sp *spill) (int, error) {
	readAt := len(bufs) - c.directMsgs(len(bufs))
	msgs := st.messages(len(bufs)-readAt, c.gro)
	for i := range msgs {
		msgs[i].Buffers[0] = bufs[readAt+i]
	}
	n, err := c.pc.ReadBatch(msgs, 0)
	if err != nil {
		clearBuffers(msgs)
		return 0, err
	}
	st.errs = 0
	var bytesIn, pktsIn uint64
	w := 0
	for i := range n {
		m := &msgs[i]
		bytesIn += uint64(m.N)
		ap, ok := msgAddrPort(m)
		if !ok {
			pktsIn++
			c.stats.unknownDropped.Add(1)
			continue
		}
		data, seg := bufs[readAt+i][:m.N], c.segmentSize(m)
		for off := 0; ; off += seg {
			pkt := data[off:min(off+seg, len(data))]
			pktsIn++
			if c.isWireGuard(pkt, ap) {
				ep := st.endpoint(ap)
				// bufs[w] is free: below readAt nothing was read into
				// it, above it held a datagram already sorted, and at
				// readAt+i it holds this one, whose bytes before pkt
				// are sorted (and copy moves overlapping bytes safely).
				// Once a packet has gone to sp, the rest follow it, to
				// keep them in order.
				if len(sp.pkts) == 0 && w <= readAt+i && len(pkt) <= len(bufs[w]) {
					sizes[w] = copy(bufs[w], pkt)
					eps[w] = ep
					w++
				} else if !sp.add(pkt, ep) {
					c.stats.wgDropped.Add(1)
				}
			}
			if off+seg >= len(data) {
				break
			}
		}
	}
	clearBuffers(msgs)
	c.stats.packetsIn.Add(pktsIn)
	c.stats.bytesIn.Add(bytesIn)
	return w, nil
}

// clearBuffers drops the references to the caller's buffers.
func clearBuffers(msgs []ipv6.Message) {
	for i := range msgs {
		msgs[i].Buffers[0] = nil
		msgs[i].Addr = nil
	}
}

// spill holds, copied, the WireGuard packets a direct read could not fit
// into the caller's buffers, until the next ReceiveFunc call hands them
// out. Only a ReceiveFunc given fewer than udpSegmentMaxDatagrams buffers
// (or a datagram of more segments than GRO makes) needs it.
type spill struct {
	buf  []byte   // groBufSize, allocated on first use
	pkts [][]byte // slices of buf
	eps  []*Endpoint
}

// add copies pkt into the spill. It reports false if there is no room.
func (sp *spill) add(pkt []byte, ep *Endpoint) bool {
	if sp.buf == nil {
		sp.buf = make([]byte, 0, groBufSize)
	}
	off := len(sp.buf)
	if cap(sp.buf)-off < len(pkt) {
		return false
	}
	sp.buf = append(sp.buf, pkt...)
	sp.pkts = append(sp.pkts, sp.buf[off:len(sp.buf):len(sp.buf)])
	sp.eps = append(sp.eps, ep)
	return true
}

func (sp *spill) reset() {
	sp.buf = sp.buf[:0]
	clear(sp.pkts)
	sp.pkts = sp.pkts[:0]
	clear(sp.eps)
	sp.eps = sp.eps[:0]
}

// msgAddrPort returns the source address of a received message.
func msgAddrPort(m *ipv6.Message) (netip.AddrPort, bool) {
	ua, ok := m.Addr.(*net.UDPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ip, _ := netip.AddrFromSlice(ua.IP)
	ip = ip.Unmap()
	if ua.Zone != "" {
		ip = ip.WithZone(ua.Zone)
	}
	return netip.AddrPortFrom(ip, uint16(ua.Port)), true
}

// segmentSize returns the size of the datagrams in a received message: m.N,
// unless GRO coalesced several. A GRO-coalesced datagram is a run of
// segments of that size (the last may be shorter), each one datagram as
// sent. The kernel only coalesces datagrams of one flow, but nothing stops
// a peer from sending control packets of the same size as its WireGuard
// packets, so each segment is sorted on its own.
func (c *Conn) segmentSize(m *ipv6.Message) int {
	if c.gro {
		gsoSize, err := getGSOSize(m.OOB[:m.NN])
		if err != nil {
			c.stats.readErrors.Add(1)
			c.log.Debug("socket read control message", "err", err)
		}
		if gsoSize > 0 && gsoSize < m.N {
			c.stats.coalescedIn.Add(1)
			return gsoSize
		}
	}
	return m.N
}

// isWireGuard sorts one received datagram and reports whether it is a
// WireGuard packet. Anything else is dealt with here: control packets are
// copied out to the control workers, the rest counted and dropped.
func (c *Conn) isWireGuard(pkt []byte, from netip.AddrPort) bool {
	if len(pkt) > MaxPacketSize {
		c.stats.oversized.Add(1)
		return false
	}
	switch classify(pkt) {
	case kindWireGuard:
		return true
	case kindControl:
		c.enqueueControl(pkt, from)
	case kindSTUN:
		c.enqueueSTUN(pkt, from)
	case kindTURNChannel:
		c.stats.turnDropped.Add(1)
	default:
		c.stats.unknownDropped.Add(1)
	}
	return false
}
