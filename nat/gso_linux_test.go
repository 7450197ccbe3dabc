package nat

import (
	"bytes"
	"context"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

func requireOffloads(t *testing.T, c *Conn) {
	t.Helper()
	if gso, gro := c.Offloads(); !gso || !gro {
		t.Skipf("kernel lacks UDP offloads (GSO %v, GRO %v)", gso, gro)
	}
}

// TestGROSplitsMixedBatch sends one GSO datagram whose segments are a
// WireGuard packet, a real control request, two more WireGuard packets (the
// last shorter) and junk. Loopback hands it to the GRO socket coalesced;
// every segment must go where it belongs.
func TestGROSplitsMixedBatch(t *testing.T) {
	a := listen(t)
	requireOffloads(t, a)
	handled := make(chan struct{}, 1)
	a.Handle(MsgPing, func(context.Context, Peer, []byte) ([]byte, error) {
		handled <- struct{}{}
		return []byte("pong"), nil
	})
	fns, _, err := a.Bind().Open(0)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Bind().Close()
	r := receive(fns[0], BatchSize)

	// A real sealed request to a, captured on its way out of c.
	u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	uap := unmapAddrPort(u.LocalAddr().(*net.UDPAddr).AddrPort())
	c := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Call(ctx, Peer{Addr: uap, Key: a.PublicKey()}, MsgPing, []byte("mixed"))
	req := make([]byte, MaxPacketSize)
	u.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := u.Read(req)
	if err != nil {
		t.Fatal(err)
	}
	req = req[:n]
	cancel()
	if classify(req) != kindControl {
		t.Fatalf("captured %x is not a control packet", req[:4])
	}

	size := len(req)
	wg := []([]byte){wgPacket(1, size), wgPacket(2, size), wgPacket(3, size-7)}
	junk := bytes.Repeat([]byte{0xFF}, size)
	var dgram []byte
	dgram = append(dgram, wg[0]...)
	dgram = append(dgram, req...)
	dgram = append(dgram, wg[1]...)
	dgram = append(dgram, junk...)
	dgram = append(dgram, wg[2]...)
	oob := make([]byte, 0, gsoControlSize)
	setGSOSize(&oob, uint16(size))
	if _, _, err := u.WriteMsgUDPAddrPort(dgram, oob, a.LocalAddr()); err != nil {
		t.Fatalf("GSO send: %v", err)
	}

	waitFor(t, "3 WireGuard packets", func() bool { return r.count() == 3 })
	select {
	case <-handled:
	case <-time.After(5 * time.Second):
		t.Fatal("the control request in the coalesced datagram was not handled")
	}
	// The response goes back to the request's source, u.
	resp := make([]byte, MaxPacketSize)
	u.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := u.Read(resp); err != nil || classify(resp[:n]) != kindControl {
		t.Fatalf("response: %d bytes, %v", n, err)
	}
	r.mu.Lock()
	for i, p := range r.pkts {
		if !bytes.Equal(p, wg[i]) {
			t.Errorf("WireGuard packet %d = %d bytes %x..., want %d bytes %x...", i, len(p), p[:8], len(wg[i]), wg[i][:8])
		}
	}
	r.mu.Unlock()
	s := a.Stats()
	if s.CoalescedIn != 1 || s.PacketsIn != 5 || s.ControlIn != 1 || s.UnknownDropped != 1 || s.WireGuardIn != 3 {
		t.Errorf("stats = %+v, want 1 coalesced read of 5 datagrams: 3 WireGuard, 1 control, 1 unknown", s)
	}
}

// TestGSOSendReceive sends runs of packets with spare capacity, as
// wireguard-go's are, from one Bind to another: they leave as GSO messages
// and arrive coalesced, and every packet comes out intact and in order.
func TestGSOSendReceive(t *testing.T) {
	a, b := listen(t), listen(t)
	requireOffloads(t, a)
	ba, bb := a.Bind(), b.Bind()
	if _, _, err := ba.Open(0); err != nil {
		t.Fatal(err)
	}
	defer ba.Close()
	fns, _, err := bb.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	defer bb.Close()
	r := receive(fns[0], BatchSize)
	var want, bufs [][]byte
	for i := range 300 { // several messages and more than one batch of segments
		size := 1452
		if i%100 == 99 {
			size = 200 // short tails end runs
		}
		p := wgPacket(byte(i), size)
		want = append(want, p)
		bufs = append(bufs, spare(p, 1<<16))
	}
	for len(bufs) > 0 { // as wireguard-go would, a batch at a time
		k := min(len(bufs), 128)
		if err := ba.Send(bufs[:k], NewEndpoint(b.LocalAddr())); err != nil {
			t.Fatal(err)
		}
		bufs = bufs[k:]
	}
	waitFor(t, "300 packets", func() bool { return r.count() == len(want) })
	r.mu.Lock()
	for i, p := range r.pkts {
		if !bytes.Equal(p, want[i]) {
			t.Fatalf("packet %d = %d bytes, want %d bytes of packet %d", i, len(p), len(want[i]), i)
		}
	}
	r.mu.Unlock()
	if s := b.Stats(); s.CoalescedIn == 0 || s.WireGuardIn != 300 {
		t.Errorf("receiver stats = %+v, want coalesced reads", s)
	}
	if s := a.Stats(); s.WireGuardOut != 300 {
		t.Errorf("WireGuardOut = %d", s.WireGuardOut)
	}
}

// eioWriter refuses every message that asks for GSO with EIO, as the kernel
// does when the route's device has no checksum offload.
type eioWriter struct {
	batchConn
	refused int
}

func (w *eioWriter) WriteBatch(ms []ipv6.Message, flags int) (int, error) {
	for _, m := range ms {
		if len(m.OOB) > 0 {
			w.refused++
			return 0, &net.OpError{Op: "write", Net: "udp", Err: os.NewSyscallError("sendmmsg", unix.EIO)}
		}
	}
	return w.batchConn.WriteBatch(ms, flags)
}

func TestGSOFallbackOnEIO(t *testing.T) {
	a, b := listen(t), listen(t)
	requireOffloads(t, a)
	w := &eioWriter{batchConn: a.wpc}
	a.wpc = w // before any Send
	ba, bb := a.Bind(), b.Bind()
	if _, _, err := ba.Open(0); err != nil {
		t.Fatal(err)
	}
	defer ba.Close()
	fns, _, err := bb.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	defer bb.Close()
	r := receive(fns[0], BatchSize)
	for round := range 2 {
		var bufs [][]byte
		for i := range 20 {
			bufs = append(bufs, spare(wgPacket(byte(i), 1000), 1<<16))
		}
		if err := ba.Send(bufs, NewEndpoint(b.LocalAddr())); err != nil {
			t.Fatalf("round %d: Send = %v, want the fallback to succeed", round, err)
		}
		waitFor(t, "packets after fallback", func() bool { return r.count() == 20*(round+1) })
	}
	if gso, _ := a.Offloads(); gso || w.refused != 1 {
		t.Errorf("GSO %v after %d refusals, want off after exactly 1", gso, w.refused)
	}
}
