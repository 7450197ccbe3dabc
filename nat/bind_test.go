package nat

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// wgPacket returns a datagram that demuxes as a WireGuard transport packet.
func wgPacket(seq byte, size int) []byte {
	p := make([]byte, size)
	p[0] = 4
	for i := 4; i < size; i++ {
		p[i] = seq + byte(i)
	}
	return p
}

// receiver runs a Bind ReceiveFunc in the background and collects packets.
type receiver struct {
	mu   sync.Mutex
	pkts [][]byte
	eps  []conn.Endpoint
	err  chan error
}

func receive(fn conn.ReceiveFunc, batch int) *receiver {
	r := &receiver{err: make(chan error, 1)}
	go func() {
		bufs := make([][]byte, batch)
		for i := range bufs {
			bufs[i] = make([]byte, device.MaxMessageSize)
		}
		sizes, eps := make([]int, batch), make([]conn.Endpoint, batch)
		for {
			n, err := fn(bufs, sizes, eps)
			if err != nil {
				r.err <- err
				return
			}
			r.mu.Lock()
			for i := range n {
				r.pkts = append(r.pkts, bytes.Clone(bufs[i][:sizes[i]]))
				r.eps = append(r.eps, eps[i])
			}
			r.mu.Unlock()
		}
	}()
	return r
}

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pkts)
}

func TestBindReceivesWireGuardOnly(t *testing.T) {
	a := listen(t)
	a.Handle(MsgPing, func(context.Context, Peer, []byte) ([]byte, error) { return []byte("pong"), nil })
	b := a.Bind()
	fns, port, err := b.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	if port != a.LocalAddr().Port() || len(fns) != 2 {
		t.Fatalf("Open = %d fns, port %d; want 2, %d", len(fns), port, a.LocalAddr().Port())
	}
	if _, _, err := b.Open(0); !errors.Is(err, conn.ErrBindAlreadyOpen) {
		t.Fatalf("second Open = %v, want ErrBindAlreadyOpen", err)
	}
	r := receive(fns[0], 3) // smaller than BatchSize: batches get split

	u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	stun := make([]byte, 20)
	copy(stun[4:], []byte{0x21, 0x12, 0xA4, 0x42})
	var want [][]byte
	for i := range 10 {
		p := wgPacket(byte(i), 100+i)
		want = append(want, p)
		u.WriteToUDPAddrPort(p, a.LocalAddr())
		u.WriteToUDPAddrPort(stun, a.LocalAddr())                     // STUN: dropped for now
		u.WriteToUDPAddrPort([]byte{0x40, 0, 0, 0}, a.LocalAddr())    // TURN channel data
		u.WriteToUDPAddrPort([]byte{0xFF, 1, 2, 3, 4}, a.LocalAddr()) // junk
	}
	u.WriteToUDPAddrPort(make([]byte, MaxPacketSize+1), a.LocalAddr()) // oversized
	waitFor(t, "10 WireGuard packets", func() bool { return r.count() == 10 })
	waitFor(t, "junk counted", func() bool { return a.Stats().Oversized == 1 })
	r.mu.Lock()
	from := unmapAddrPort(u.LocalAddr().(*net.UDPAddr).AddrPort())
	for i, p := range r.pkts {
		if !bytes.Equal(p, want[i]) {
			t.Errorf("packet %d = %x, want %x", i, p[:8], want[i][:8])
		}
		if ep := r.eps[i].(*Endpoint); ep.AddrPort() != from || ep != r.eps[0] {
			t.Errorf("packet %d endpoint %v (%p), want interned %v", i, ep.AddrPort(), ep, from)
		}
	}
	r.mu.Unlock()
	// STUN is handled on a queue of its own: its counters may lag the
	// WireGuard ones.
	statsOK := func(s Stats) bool {
		return s.WireGuardIn == 10 && s.STUNDropped == 10 && s.TURNDropped == 10 && s.UnknownDropped == 10
	}
	for deadline := time.Now().Add(5 * time.Second); !statsOK(a.Stats()) && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if s := a.Stats(); !statsOK(s) {
		t.Errorf("stats = %+v", s)
	}
	// Control keeps working while the Bind is open.
	c := listen(t)
	if got, err := c.Call(ctxT(t, 5*time.Second), peerOf(a), MsgPing, nil); err != nil || string(got) != "pong" {
		t.Fatalf("call with Bind open = %q, %v", got, err)
	}

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-r.err; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ReceiveFunc after Close = %v, want net.ErrClosed", err)
	}
	if _, err := fns[0](make([][]byte, 1), make([]int, 1), make([]conn.Endpoint, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ReceiveFunc called after Close = %v, want net.ErrClosed", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Bind.Close = %v", err)
	}
}

func TestBindCloseReopen(t *testing.T) {
	a, c := listen(t), listen(t)
	a.Handle(MsgPing, func(context.Context, Peer, []byte) ([]byte, error) { return []byte("pong"), nil })
	b := a.Bind()
	u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()

	for round := range 3 {
		fns, _, err := b.Open(a.LocalAddr().Port()) // the socket's own port is fine
		if err != nil {
			t.Fatalf("round %d: Open: %v", round, err)
		}
		r := receive(fns[0], BatchSize)
		u.WriteToUDPAddrPort(wgPacket(1, 64), a.LocalAddr())
		waitFor(t, "packet through reopened Bind", func() bool { return r.count() == 1 })
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if err := <-r.err; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("round %d: ReceiveFunc = %v, want net.ErrClosed", round, err)
		}
		// Closed: WireGuard is dropped and counted, control still answered.
		dropped := a.Stats().WireGuardDropped
		u.WriteToUDPAddrPort(wgPacket(2, 64), a.LocalAddr())
		waitFor(t, "drop counted", func() bool { return a.Stats().WireGuardDropped == dropped+1 })
		if got, err := c.Call(ctxT(t, 5*time.Second), peerOf(a), MsgPing, nil); err != nil || string(got) != "pong" {
			t.Fatalf("round %d: call with Bind closed = %q, %v", round, got, err)
		}
		if err := b.Send([][]byte{wgPacket(0, 32)}, NewEndpoint(c.LocalAddr())); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Send on closed Bind = %v, want net.ErrClosed", err)
		}
	}
	if _, _, err := b.Open(a.LocalAddr().Port() + 1); !errors.Is(err, ErrPortMismatch) {
		t.Fatalf("Open(other port) = %v, want ErrPortMismatch", err)
	}
	// Closing the Conn closes an open Bind, and it can't be reopened.
	fns, _, err := b.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	r := receive(fns[0], 1)
	a.Close()
	if err := <-r.err; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ReceiveFunc after Conn.Close = %v", err)
	}
	if _, _, err := b.Open(0); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Open after Conn.Close = %v, want net.ErrClosed", err)
	}
}

func TestBindSendReceive(t *testing.T) {
	a, b := listen(t), listen(t)
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
	ep, err := ba.ParseEndpoint(b.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	if ep.DstToString() != b.LocalAddr().String() || ep.DstIP() != b.LocalAddr().Addr() {
		t.Fatalf("endpoint = %s", ep.DstToString())
	}
	var bufs [][]byte
	for i := range 150 { // more than one sendmmsg
		bufs = append(bufs, wgPacket(byte(i), 1200))
	}
	if err := ba.Send(bufs, ep); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "150 packets", func() bool { return r.count() == 150 })
	if s := a.Stats(); s.WireGuardOut != 150 {
		t.Errorf("WireGuardOut = %d", s.WireGuardOut)
	}
	if _, err := ba.ParseEndpoint("not an endpoint"); err == nil {
		t.Error("ParseEndpoint accepted garbage")
	}
	if err := ba.Send(bufs[:1], fakeEndpoint{}); !errors.Is(err, conn.ErrWrongEndpointType) {
		t.Errorf("Send(foreign endpoint) = %v", err)
	}
}

type fakeEndpoint struct{ conn.Endpoint }

// TestTwoDevicePing runs two wireguard-go devices over two nat Binds on
// loopback and pings both ways, while the sockets keep answering control
// calls.
func TestTwoDevicePing(t *testing.T) {
	var nc [2]*Conn
	var priv [2][32]byte
	for i := range nc {
		priv[i] = newKey(t)
		priv[i][0] &= 248 // clamp, as WireGuard keys are
		priv[i][31] = (priv[i][31] & 127) | 64
		p := priv[i]
		nc[i] = listen(t, func(c *Config) { c.PrivateKey = p })
		nc[i].Handle(MsgPing, func(context.Context, Peer, []byte) ([]byte, error) { return []byte("pong"), nil })
	}
	var tuns [2]*tuntest.ChannelTUN
	var devs [2]*device.Device
	ips := [2]netip.Addr{netip.MustParseAddr("1.0.0.1"), netip.MustParseAddr("1.0.0.2")}
	for i := range devs {
		tuns[i] = tuntest.NewChannelTUN()
		level := device.LogLevelError
		if testing.Verbose() {
			level = device.LogLevelVerbose
		}
		devs[i] = device.NewDevice(tuns[i].TUN(), nc[i].Bind(), device.NewLogger(level, fmt.Sprintf("dev%d: ", i)))
		t.Cleanup(devs[i].Close)
	}
	for i, d := range devs {
		peer := nc[i^1]
		pub := peer.PublicKey()
		cfg := fmt.Sprintf("private_key=%s\nlisten_port=0\nreplace_peers=true\npublic_key=%s\nprotocol_version=1\nreplace_allowed_ips=true\nallowed_ip=%s/32\nendpoint=%s\n",
			hex.EncodeToString(priv[i][:]), hex.EncodeToString(pub[:]), ips[i^1], peer.LocalAddr())
		if err := d.IpcSet(cfg); err != nil {
			t.Fatalf("IpcSet dev%d: %v", i, err)
		}
		if err := d.Up(); err != nil {
			t.Fatalf("Up dev%d: %v", i, err)
		}
	}
	ping := func(from, to int) {
		t.Helper()
		msg := tuntest.Ping(ips[to], ips[from])
		tuns[from].Outbound <- msg
		select {
		case got := <-tuns[to].Inbound:
			if !bytes.Equal(got, msg) {
				t.Fatalf("ping %d->%d arrived altered", from, to)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("ping %d->%d did not arrive", from, to)
		}
	}
	ping(0, 1)
	ping(1, 0)
	// The devices share their sockets with control traffic.
	if got, err := nc[0].Call(ctxT(t, 5*time.Second), peerOf(nc[1]), MsgPing, nil); err != nil || string(got) != "pong" {
		t.Fatalf("control call beside WireGuard = %q, %v", got, err)
	}
	// Down/Up closes and reopens the Bind; the tunnel comes back.
	if err := devs[0].Down(); err != nil {
		t.Fatal(err)
	}
	// wireguard-go refuses initiations that come less than 20ms apart
	// ("handshake flood"); the restarted device initiates at once.
	time.Sleep(100 * time.Millisecond)
	if err := devs[0].Up(); err != nil {
		t.Fatal(err)
	}
	ping(0, 1)
	ping(1, 0)
	if s := nc[1].Stats(); s.WireGuardIn == 0 || s.WireGuardOut == 0 {
		t.Errorf("stats show no WireGuard traffic: %+v", s)
	}
}
