// Package udpbatch wraps a UDP socket as a net.PacketConn whose writes are
// sent in sendmmsg batches and whose reads come from recvmmsg batches, for
// code that reads and writes one datagram at a time (pion/turn's server and
// client). It changes no semantics a UDP user relies on: datagrams leave a
// socket in the order they were written, reads truncate to the caller's
// buffer as recvfrom does.
//
// Writes. WriteTo copies the datagram into a bounded queue and returns; one
// writer goroutine per Conn sends what is queued, up to MaxBatch datagrams
// per sendmmsg. While the writer is in a system call the queue fills, so
// batches grow with the load and a lone datagram goes out alone. A full
// queue blocks WriteTo, as a full socket buffer blocks sendto. Send errors
// (a peer's ICMP unreachable, say) cannot be returned to the writer of the
// datagram; they are counted (Errors) and the datagram dropped, as a lossy
// link would.
//
// Reads. ReadFrom hands out the datagrams of the last recvmmsg, reading up to
// MaxBatch more when they are used up. Where the kernel has UDP GRO, the
// socket takes coalesced datagrams (groBatch per recvmmsg, up to 64 KiB each)
// and ReadFrom hands out the datagrams they were made of.
//
// Where the kernel has UDP GSO, a run of queued datagrams to one address,
// of one size (the last may be shorter), goes out as one UDP_SEGMENT send:
// the stack, and a NAT or router on the way, handle the run as one packet
// until it is segmented. If the kernel refuses (EIO: the route's device
// cannot checksum), the Conn stops using GSO and sends the run again
// without it.
package udpbatch

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

const (
	// MaxBatch is the most datagrams one sendmmsg or recvmmsg moves.
	MaxBatch = 64
	// QueueLen is how many datagrams may wait for the writer.
	QueueLen = 256
	// maxBufSize bounds the read buffers: the largest UDP payload.
	maxBufSize = 1<<16 - 1
	// maxGSOSegments bounds the datagrams of one UDP_SEGMENT send (the
	// kernel's UDP_MAX_SEGMENTS).
	maxGSOSegments = 64
	// MaxGSOPayload bounds the bytes of one UDP_SEGMENT send. Above the IP
	// payload limit sendmsg fails with EMSGSIZE; below it, the kernel
	// still cuts a send into its segments in software, before the device,
	// when the packet with all its headers (the link header too) reaches
	// the device's gso_max_size, 64 KiB unless raised (net/core/dev.c,
	// gso_features_check): a send of 46 WireGuard packets of 1424 bytes
	// leaves a veth as 46 packets, one of 45 as one, which the routers on
	// the way and the receiver's GRO handle as one. MaxGSOPayload leaves
	// room for IPv6, UDP and an Ethernet header with a VLAN tag, so it is
	// below both IP payload limits.
	MaxGSOPayload = 1<<16 - 1 - 40 - 8 - 18
)

// batcher is the sendmmsg/recvmmsg side of a socket: an ipv4 or ipv6
// PacketConn (their Message types are the same).
type batcher interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

var (
	_ batcher        = (*ipv4.PacketConn)(nil)
	_ batcher        = (*ipv6.PacketConn)(nil)
	_ net.PacketConn = (*Conn)(nil)
)

// Conn is a UDP socket with batched reads and writes. The embedded
// *net.UDPConn serves everything else (addresses, deadlines, buffer
// sizes); its own ReadFrom and WriteTo must not be used. Reads honour the
// socket's read deadline; the write deadline does not apply to queued
// datagrams.
type Conn struct {
	*net.UDPConn
	b batcher

	errs atomic.Uint64 // datagrams the writer could not send
	gso  atomic.Bool   // runs are sent with UDP_SEGMENT; cleared if the kernel refuses

	wmu      sync.Mutex // guards the write queue below
	notEmpty sync.Cond  // on wmu: the queue has datagrams, or closed
	notFull  sync.Cond  // on wmu: the queue has room, or closed
	slots    [][]byte   // ring of QueueLen buffers, grown to their largest datagram
	addrs    []net.Addr
	head, n  int  // oldest datagram, datagrams queued (including those being sent)
	closed   bool // Close was called: WriteTo fails, the writer sends what is queued and exits
	wmsgs    []ipv4.Message

	gro   bool       // the kernel coalesces received datagrams (UDP_GRO)
	rmu   sync.Mutex // serialises ReadFrom; guards the read batch below
	rmsgs []ipv4.Message
	rbufs [][]byte
	rpkts []readPkt // the datagrams of the last batch, coalesced ones split
	r     int       // next of rpkts to hand out

	closeOnce sync.Once
	done      chan struct{} // closed when the writer has exited
}

// New wraps udp. Close the Conn (not udp) to stop its writer.
func New(udp *net.UDPConn) *Conn {
	c := &Conn{
		UDPConn: udp,
		slots:   make([][]byte, QueueLen),
		addrs:   make([]net.Addr, QueueLen),
		wmsgs:   make([]ipv4.Message, MaxBatch),
		done:    make(chan struct{}),
	}
	if la, ok := udp.LocalAddr().(*net.UDPAddr); ok && la.IP.To4() == nil && len(la.IP) == net.IPv6len {
		c.b = ipv6.NewPacketConn(udp)
	} else {
		c.b = ipv4.NewPacketConn(udp)
	}
	c.notEmpty.L = &c.wmu
	c.notFull.L = &c.wmu
	for i := range c.wmsgs {
		c.wmsgs[i].Buffers = make(net.Buffers, 0, maxGSOSegments)
		c.wmsgs[i].OOB = make([]byte, 0, gsoControlSize)
	}
	c.gso.Store(canGSO(udp))
	c.gro = enableGRO(udp)
	go c.writeLoop()
	return c
}

// Errors returns how many queued datagrams failed to send.
func (c *Conn) Errors() uint64 { return c.errs.Load() }

// WriteTo queues a copy of b for addr. It blocks while the queue is full
// and fails with net.ErrClosed once the Conn is closed.
func (c *Conn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if addr == nil {
		return 0, &net.OpError{Op: "write", Net: "udp", Source: c.LocalAddr(), Err: errors.New("missing address")}
	}
	c.wmu.Lock()
	for c.n == len(c.slots) && !c.closed {
		c.notFull.Wait()
	}
	if c.closed {
		c.wmu.Unlock()
		return 0, &net.OpError{Op: "write", Net: "udp", Source: c.LocalAddr(), Addr: addr, Err: net.ErrClosed}
	}
	i := (c.head + c.n) % len(c.slots)
	c.slots[i] = append(c.slots[i][:0], b...)
	c.addrs[i] = addr
	c.n++
	if c.n == 1 {
		c.notEmpty.Signal()
	}
	c.wmu.Unlock()
	return len(b), nil
}

// WriteToUDPAddrPort is WriteTo for a netip.AddrPort.
func (c *Conn) WriteToUDPAddrPort(b []byte, ap netip.AddrPort) (int, error) {
	return c.WriteTo(b, net.UDPAddrFromAddrPort(ap))
}

// writeLoop sends the queued datagrams until the Conn closes. The slots
// being sent stay counted in n, so WriteTo does not reuse them meanwhile.
func (c *Conn) writeLoop() {
	defer close(c.done)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for {
		for c.n == 0 && !c.closed {
			c.notEmpty.Wait()
		}
		if c.n == 0 {
			return // closed, and all sent
		}
		k := min(c.n, MaxBatch)
		msgs := c.fillLocked(k, c.gso.Load())
		c.wmu.Unlock()
		done := c.send(msgs)
		c.wmu.Lock()
		for j := range msgs {
			m := &msgs[j]
			clear(m.Buffers)
			m.Buffers, m.Addr, m.OOB = m.Buffers[:0], nil, m.OOB[:0]
		}
		for j := range done {
			c.addrs[(c.head+j)%len(c.slots)] = nil
		}
		c.head = (c.head + done) % len(c.slots)
		full := c.n == len(c.slots)
		c.n -= done
		if full && done > 0 {
			c.notFull.Broadcast()
		}
	}
}

// fillLocked builds the messages for the k oldest queued datagrams: one
// each, or with gso one per run of datagrams to one address, of one size
// but for a shorter last one.
func (c *Conn) fillLocked(k int, gso bool) []ipv4.Message {
	msgs := c.wmsgs[:0]
	var size, total int
	end := false // the message being filled ended with a shorter datagram
	for j := range k {
		i := (c.head + j) % len(c.slots)
		b, addr := c.slots[i], c.addrs[i]
		if gso && len(msgs) > 0 {
			m := &msgs[len(msgs)-1]
			if !end && size > 0 && len(b) <= size && len(m.Buffers) < maxGSOSegments &&
				total+len(b) <= MaxGSOPayload && sameAddr(m.Addr, addr) {
				m.Buffers = append(m.Buffers, b)
				total += len(b)
				end = len(b) < size
				continue
			}
		}
		msgs = msgs[:len(msgs)+1]
		m := &msgs[len(msgs)-1]
		m.Buffers = append(m.Buffers[:0], b)
		m.Addr = addr
		size, total, end = len(b), len(b), false
	}
	for j := range msgs {
		if m := &msgs[j]; len(m.Buffers) > 1 {
			setGSO(&m.OOB, uint16(len(m.Buffers[0])))
		}
	}
	return msgs
}

// sameAddr reports whether a and b are the same UDP address.
func sameAddr(a, b net.Addr) bool {
	if a == b {
		return true
	}
	ua, ok1 := a.(*net.UDPAddr)
	ub, ok2 := b.(*net.UDPAddr)
	return ok1 && ok2 && ua.Port == ub.Port && ua.IP.Equal(ub.IP) && ua.Zone == ub.Zone
}

// send writes msgs with as many sendmmsg calls as it takes and returns how
// many datagrams it is done with. A message the kernel refuses is counted
// and skipped, except that a refused GSO send turns GSO off and returns
// early, so the rest go again without it.
func (c *Conn) send(msgs []ipv4.Message) (done int) {
	for len(msgs) > 0 {
		n, err := c.b.WriteBatch(msgs, 0)
		for _, m := range msgs[:max(n, 0)] {
			done += len(m.Buffers)
		}
		if n > 0 {
			msgs = msgs[n:]
			continue
		}
		if err != nil && len(msgs[0].Buffers) > 1 && gsoRefused(err) {
			c.gso.Store(false)
			return done
		}
		if err != nil && errors.Is(err, net.ErrClosed) {
			for _, m := range msgs {
				c.errs.Add(uint64(len(m.Buffers)))
				done += len(m.Buffers)
			}
			return done
		}
		// msgs[0] failed (or, not expected, nothing was sent): drop it.
		c.errs.Add(uint64(len(msgs[0].Buffers)))
		done += len(msgs[0].Buffers)
		msgs = msgs[1:]
	}
	return done
}

// ReadFrom returns the next datagram, reading a batch when the last one is
// used up. A datagram longer than b is truncated, as recvfrom truncates.
func (c *Conn) ReadFrom(b []byte) (int, net.Addr, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.r == len(c.rpkts) {
		if err := c.readBatchLocked(len(b)); err != nil {
			return 0, nil, err
		}
	}
	p := c.rpkts[c.r]
	c.rpkts[c.r] = readPkt{}
	c.r++
	return copy(b, p.b), p.addr, nil
}

// readPkt is one received datagram.
type readPkt struct {
	b    []byte
	addr net.Addr
}

// groBatch is how many (coalesced) datagrams one recvmmsg reads with GRO,
// each into a buffer of maxBufSize.
const groBatch = 8

// readBatchLocked reads at least one datagram into the read batch, its
// buffers at least size bytes (so no datagram is cut shorter than the
// caller's buffer would cut it).
func (c *Conn) readBatchLocked(size int) error {
	size = min(max(size, 1), maxBufSize)
	batch := MaxBatch
	if c.gro {
		size, batch = maxBufSize, groBatch
	}
	if c.rmsgs == nil || len(c.rbufs[0]) < size {
		c.rmsgs = make([]ipv4.Message, batch)
		c.rbufs = make([][]byte, batch)
		c.rpkts = make([]readPkt, 0, MaxBatch)
		mem := make([]byte, batch*size)
		for i := range c.rmsgs {
			c.rbufs[i] = mem[i*size : (i+1)*size : (i+1)*size]
			c.rmsgs[i].Buffers = [][]byte{c.rbufs[i]}
			if c.gro {
				c.rmsgs[i].OOB = make([]byte, groControlSize)
			}
		}
	}
	clear(c.rpkts)
	c.r, c.rpkts = 0, c.rpkts[:0]
	for len(c.rpkts) == 0 {
		for i := range c.rmsgs {
			m := &c.rmsgs[i]
			m.Addr, m.N, m.NN, m.Flags = nil, 0, 0, 0
			m.OOB = m.OOB[:cap(m.OOB)]
		}
		n, err := c.b.ReadBatch(c.rmsgs, 0)
		if err != nil {
			return err
		}
		for i, m := range c.rmsgs[:n] {
			b := c.rbufs[i][:m.N]
			seg := 0
			if c.gro {
				seg = groSize(m.OOB[:m.NN])
			}
			if seg <= 0 || seg >= len(b) {
				c.rpkts = append(c.rpkts, readPkt{b, m.Addr})
				continue
			}
			for len(b) > 0 {
				k := min(seg, len(b))
				c.rpkts = append(c.rpkts, readPkt{b[:k:k], m.Addr})
				b = b[k:]
			}
		}
	}
	return nil
}

// Close stops the writer, once it has sent what is queued (for at most
// closeFlush), and closes the socket. It is idempotent.
func (c *Conn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		c.wmu.Lock()
		c.closed = true
		c.notEmpty.Broadcast()
		c.notFull.Broadcast()
		c.wmu.Unlock()
		c.UDPConn.SetWriteDeadline(time.Now().Add(closeFlush))
		<-c.done
		err = c.UDPConn.Close()
	})
	return err
}

// closeFlush bounds how long Close waits for queued datagrams to go out
// (a last TURN Refresh, say).
const closeFlush = 100 * time.Millisecond
