package netstack

// The link endpoint and tun.Device below are adapted from wireguard-go's
// tun/netstack/tun.go (golang.zx2c4.com/wireguard/tun/netstack),
// Copyright (C) 2017-2025 WireGuard LLC, MIT licence. Differences: the
// outbound queue blocks the stack instead of dropping when full, Read returns
// a batch of packets copied straight from the packet buffers, and Close
// waits for the stack's goroutines.

import (
	"log/slog"
	"os"
	"sync"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

const (
	// outboundQueueLen is how many packets the stack may queue for the
	// device reader before its writers block.
	outboundQueueLen = 1024

	// batchSize is the most packets one Device.Read returns (and the batch
	// wireguard-go sizes its buffers for). wireguard-go's TUN reader holds
	// one 64 KiB message buffer per batch slot at all times, and each
	// slot filled is another 64 KiB buffer queued for encryption, so the
	// batch is paid for in memory: 128 slots pinned 8 MiB per device. With
	// 32 (and nat.BatchSize 64 -> 32) the heap of two in-process nodes
	// carrying one stream fell from ~90 MB to ~53 MB, and `make bench`
	// showed no throughput loss: a TUN read rarely finds more than a few
	// dozen packets queued anyway.
	batchSize = 32
)

// linkEndpoint is the gVisor side of the device: the stack writes outbound
// packets into out, and Device.Write injects inbound packets through the
// dispatcher.
type linkEndpoint struct {
	mtu uint32
	out chan *stack.PacketBuffer
	// done is closed by close; it unblocks writers and readers.
	done      chan struct{}
	closeOnce sync.Once

	mu sync.RWMutex
	// dispatcher is the stack's NIC; guarded by mu.
	dispatcher stack.NetworkDispatcher
}

var _ stack.LinkEndpoint = (*linkEndpoint)(nil)

func newLinkEndpoint(mtu int) *linkEndpoint {
	return &linkEndpoint{
		mtu:  uint32(mtu),
		out:  make(chan *stack.PacketBuffer, outboundQueueLen),
		done: make(chan struct{}),
	}
}

// close unblocks every writer and reader and releases queued packets.
func (e *linkEndpoint) close() {
	e.closeOnce.Do(func() {
		close(e.done)
	})
	e.drain()
}

func (e *linkEndpoint) drain() {
	for {
		select {
		case pkt := <-e.out:
			pkt.DecRef()
		default:
			return
		}
	}
}

func (e *linkEndpoint) closed() bool {
	select {
	case <-e.done:
		return true
	default:
		return false
	}
}

// WritePackets queues outbound packets for Device.Read. When the queue is
// full it blocks until the reader catches up (backpressure into the TCP
// sender) rather than dropping, which would cost a retransmission.
func (e *linkEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	n := 0
	for _, pkt := range pkts.AsSlice() {
		select {
		case <-e.done:
			if n == 0 {
				return 0, &tcpip.ErrClosedForSend{}
			}
			return n, nil
		default:
		}
		pkt.IncRef()
		select {
		case e.out <- pkt:
			n++
		case <-e.done:
			pkt.DecRef()
			if n == 0 {
				return 0, &tcpip.ErrClosedForSend{}
			}
			return n, nil
		}
	}
	return n, nil
}

// inject delivers one inbound IP packet to the stack.
func (e *linkEndpoint) inject(packet []byte) bool {
	var proto tcpip.NetworkProtocolNumber
	switch header.IPVersion(packet) {
	case header.IPv4Version:
		proto = header.IPv4ProtocolNumber
	case header.IPv6Version:
		proto = header.IPv6ProtocolNumber
	default:
		return false
	}
	e.mu.RLock()
	d := e.dispatcher
	e.mu.RUnlock()
	if d == nil {
		return false
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(packet)})
	d.DeliverNetworkPacket(proto, pkt)
	pkt.DecRef()
	return true
}

func (e *linkEndpoint) MTU() uint32                                  { return e.mtu }
func (e *linkEndpoint) SetMTU(uint32)                                {}
func (e *linkEndpoint) MaxHeaderLength() uint16                      { return 0 }
func (e *linkEndpoint) LinkAddress() tcpip.LinkAddress               { return "" }
func (e *linkEndpoint) SetLinkAddress(tcpip.LinkAddress)             {}
func (e *linkEndpoint) Capabilities() stack.LinkEndpointCapabilities { return 0 }
func (e *linkEndpoint) Wait()                                        {}
func (e *linkEndpoint) ARPHardwareType() header.ARPHardwareType      { return header.ARPHardwareNone }
func (e *linkEndpoint) AddHeader(*stack.PacketBuffer)                {}
func (e *linkEndpoint) ParseHeader(*stack.PacketBuffer) bool         { return true }
func (e *linkEndpoint) SetOnCloseAction(func())                      {}
func (e *linkEndpoint) Close()                                       { e.close() }

// Attach implements stack.LinkEndpoint.
func (e *linkEndpoint) Attach(d stack.NetworkDispatcher) {
	e.mu.Lock()
	e.dispatcher = d
	e.mu.Unlock()
}

// IsAttached implements stack.LinkEndpoint.
func (e *linkEndpoint) IsAttached() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.dispatcher != nil
}

// device is the tun.Device handed to wireguard-go.
type device struct {
	s      *Stack
	ep     *linkEndpoint
	events chan tun.Event
	log    *slog.Logger
}

var _ tun.Device = (*device)(nil)

func (d *device) File() *os.File           { return nil }
func (d *device) Name() (string, error)    { return "weft-netstack", nil }
func (d *device) MTU() (int, error)        { return int(d.ep.mtu), nil }
func (d *device) Events() <-chan tun.Event { return d.events }
func (d *device) BatchSize() int           { return batchSize }

// Close closes the whole Stack: wireguard-go closes its tun.Device when the
// wireguard device is closed.
func (d *device) Close() error { return d.s.Close() }

// Read blocks for one outbound packet, then returns as many more as are
// already queued, up to len(bufs).
func (d *device) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(bufs) == 0 {
		return 0, nil
	}
	var pkt *stack.PacketBuffer
	select {
	case pkt = <-d.ep.out:
	case <-d.ep.done:
		return 0, os.ErrClosed
	}
	n := 0
	for {
		if size, ok := copyPacket(bufs[n][offset:], pkt); ok {
			sizes[n] = size
			n++
		} else {
			d.log.Debug("dropped oversized outbound packet", "size", pkt.Size(), "buffer", len(bufs[n])-offset)
		}
		pkt.DecRef()
		if n == len(bufs) {
			return n, nil
		}
		select {
		case pkt = <-d.ep.out:
		default:
			if n == 0 {
				// Everything so far was dropped: wait again.
				return d.Read(bufs, sizes, offset)
			}
			return n, nil
		}
	}
}

func copyPacket(dst []byte, pkt *stack.PacketBuffer) (int, bool) {
	if pkt.Size() > len(dst) {
		return 0, false
	}
	n := 0
	for _, s := range pkt.AsSlices() {
		n += copy(dst[n:], s)
	}
	return n, true
}

// Write injects inbound IP packets into the stack. Packets that are neither
// IPv4 nor IPv6 are dropped.
func (d *device) Write(bufs [][]byte, offset int) (int, error) {
	if d.ep.closed() {
		return 0, os.ErrClosed
	}
	for _, b := range bufs {
		if len(b) <= offset {
			continue
		}
		if !d.ep.inject(b[offset:]) {
			d.log.Debug("dropped inbound packet that is not IPv4 or IPv6", "size", len(b)-offset)
		}
	}
	return len(bufs), nil
}
