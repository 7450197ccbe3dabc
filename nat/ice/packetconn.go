package ice

import (
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	pion "github.com/pion/ice/v4"
	"github.com/pion/transport/v5/deadline"
)

// packet is one datagram queued by Mux.Deliver.
type packet struct {
	b    []byte
	from netip.AddrPort
}

// sharedConn is the net.PacketConn pion's UDP mux runs on. It owns no
// socket: reads return the STUN packets Mux.Deliver queued, writes go to
// Config.Send. Its methods are safe for concurrent use.
type sharedConn struct {
	local *net.UDPAddr
	send  func(b []byte, to netip.AddrPort) error
	// sent is told about every datagram written, so Deliver can
	// recognise the answers.
	sent func(b []byte, to netip.AddrPort)

	rxq     chan packet
	closing chan struct{} // closed by Close

	closeOnce    sync.Once
	readDeadline *deadline.Deadline
	writeDL      atomic.Int64 // write deadline in Unix nanoseconds; 0 is none
}

var (
	_ net.PacketConn            = (*sharedConn)(nil)
	_ pion.AddrPortReaderWriter = (*sharedConn)(nil)
)

func newSharedConn(local netip.AddrPort, queueLen int, send func([]byte, netip.AddrPort) error, sent func([]byte, netip.AddrPort)) *sharedConn {
	return &sharedConn{
		local:        net.UDPAddrFromAddrPort(local),
		send:         send,
		sent:         sent,
		rxq:          make(chan packet, queueLen),
		closing:      make(chan struct{}),
		readDeadline: deadline.New(),
	}
}

// enqueue queues a copy of b for ReadFrom. It never blocks: when the
// queue is full the packet is dropped (ICE retransmits) and enqueue
// returns false.
func (c *sharedConn) enqueue(b []byte, from netip.AddrPort) bool {
	p := packet{b: append([]byte(nil), b...), from: from}
	select {
	case <-c.closing:
		return false
	default:
	}
	select {
	case c.rxq <- p:
		return true
	default:
		return false
	}
}

// ReadFromAddrPort returns the next queued packet. It returns net.ErrClosed
// after Close and os.ErrDeadlineExceeded after the read deadline.
func (c *sharedConn) ReadFromAddrPort(b []byte) (int, netip.AddrPort, error) {
	select {
	case p := <-c.rxq:
		return copy(b, p.b), p.from, nil
	case <-c.closing:
		return 0, netip.AddrPort{}, net.ErrClosed
	case <-c.readDeadline.Done():
		return 0, netip.AddrPort{}, os.ErrDeadlineExceeded
	}
}

func (c *sharedConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, from, err := c.ReadFromAddrPort(b)
	if err != nil {
		return 0, nil, err
	}
	return n, net.UDPAddrFromAddrPort(from), nil
}

// WriteToAddrPort sends b to the shared socket through Config.Send.
func (c *sharedConn) WriteToAddrPort(b []byte, to netip.AddrPort) (int, error) {
	select {
	case <-c.closing:
		return 0, net.ErrClosed
	default:
	}
	if dl := c.writeDL.Load(); dl != 0 && time.Now().UnixNano() >= dl {
		return 0, os.ErrDeadlineExceeded
	}
	to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
	c.sent(b, to)
	if err := c.send(b, to); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (c *sharedConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, &net.OpError{Op: "write", Net: "udp", Addr: addr, Err: net.UnknownNetworkError(addr.Network())}
	}
	return c.WriteToAddrPort(b, ua.AddrPort())
}

// Close makes pending and future reads and writes fail with net.ErrClosed.
// It does not touch the socket, which the Mux does not own.
func (c *sharedConn) Close() error {
	c.closeOnce.Do(func() { close(c.closing) })
	return nil
}

func (c *sharedConn) LocalAddr() net.Addr { return c.local }

func (c *sharedConn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

func (c *sharedConn) SetReadDeadline(t time.Time) error {
	c.readDeadline.Set(t)
	return nil
}

func (c *sharedConn) SetWriteDeadline(t time.Time) error {
	if t.IsZero() {
		c.writeDL.Store(0)
	} else {
		c.writeDL.Store(t.UnixNano())
	}
	return nil
}
