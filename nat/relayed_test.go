package nat

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// relayedPair joins two Conns by a relayed endpoint on each side whose
// write function delivers into the other: a TURN relay in a loop, as an
// ICE session over one would give.
func relayedPair(t *testing.T) (a, b *Conn, ra, rb *RelayedEndpoint) {
	t.Helper()
	a, b = listen(t), listen(t)
	var err error
	ra, err = a.NewRelayedEndpoint(func([]byte) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ra.Close() })
	rb, err = b.NewRelayedEndpoint(func(p []byte) error { ra.Deliver(p); return nil })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rb.Close() })
	ra.SetWrite(func(p []byte) error { rb.Deliver(p); return nil })
	return a, b, ra, rb
}

// TestRelayedEndpointRoundTrip: a control call to the relayed endpoint
// reaches the peer through the "relay" and its answer comes back the same
// way, both directions; the counts say so.
func TestRelayedEndpointRoundTrip(t *testing.T) {
	a, b, ra, rb := relayedPair(t)
	echo := func(_ context.Context, _ Peer, body []byte) ([]byte, error) {
		return append([]byte("echo:"), body...), nil
	}
	a.Handle(MsgPing, echo)
	b.Handle(MsgPing, echo)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name string
		from *Conn
		to   Peer
	}{
		{"a to b", a, Peer{Addr: ra.AddrPort(), Key: b.PublicKey()}},
		{"b to a", b, Peer{Addr: rb.AddrPort(), Key: a.PublicKey()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := tc.from.Call(ctx, tc.to, MsgPing, []byte(tc.name))
			if err != nil {
				t.Fatal(err)
			}
			if want := "echo:" + tc.name; string(out) != want {
				t.Fatalf("got %q, want %q", out, want)
			}
		})
	}
	for name, r := range map[string]*RelayedEndpoint{"a": ra, "b": rb} {
		sent, delivered, dropped := r.Counts()
		if sent != 2 || delivered != 2 || dropped != 0 {
			t.Errorf("%s counts: sent %d delivered %d dropped %d, want 2 2 0", name, sent, delivered, dropped)
		}
	}
}

// TestRelayedEndpointFilters: Deliver passes only WireGuard and control
// packets, and the endpoint forwards only what the shared socket sent it.
func TestRelayedEndpointFilters(t *testing.T) {
	c := listen(t)
	got := make(chan []byte, 4)
	r, err := c.NewRelayedEndpoint(func(b []byte) error { got <- bytes.Clone(b); return nil })
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	stun := []byte{0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	for _, b := range [][]byte{nil, {9}, stun, bytes.Repeat([]byte{0xff}, 64)} {
		r.Deliver(b)
	}
	if _, delivered, dropped := r.Counts(); delivered != 0 || dropped != 4 {
		t.Errorf("Deliver of foreign packets: delivered %d dropped %d, want 0 4", delivered, dropped)
	}

	// A stranger's WireGuard-looking packet to the endpoint goes nowhere.
	s, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	wg := wgPacket(1, 64)
	if _, err := s.WriteToUDPAddrPort(wg, r.AddrPort()); err != nil {
		t.Fatal(err)
	}
	// The shared socket's WireGuard packet to it is written.
	if _, _, err := c.Bind().Open(0); err != nil {
		t.Fatal(err)
	}
	if err := c.Bind().Send([][]byte{wg}, NewEndpoint(r.AddrPort())); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		if !bytes.Equal(b, wg) {
			t.Fatalf("write got %x, want %x", b, wg)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the shared socket's packet was not written through")
	}
	select {
	case b := <-got:
		t.Fatalf("a second packet was written: %x (the stranger's?)", b)
	case <-time.After(100 * time.Millisecond):
	}
}

// TestRelayedEndpointBindBypass: the Bind hands WireGuard's packets for
// a relayed endpoint to its write during Send, without the loopback
// socket, and not after the endpoint closed.
func TestRelayedEndpointBindBypass(t *testing.T) {
	c := listen(t)
	var mu sync.Mutex
	var got [][]byte
	r, err := c.NewRelayedEndpoint(func(b []byte) error {
		mu.Lock()
		got = append(got, bytes.Clone(b))
		mu.Unlock()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Bind().Open(0); err != nil {
		t.Fatal(err)
	}
	defer c.Bind().Close()
	pkts := [][]byte{wgPacket(4, 128), wgPacket(4, 128), wgPacket(4, 100), {9, 9, 9, 9}}
	ep := NewEndpoint(r.AddrPort())
	if err := c.Bind().Send(pkts, ep); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	n := len(got)
	mu.Unlock()
	if n != 3 {
		t.Fatalf("write had %d packets when Send returned, want 3 (written during Send)", n)
	}
	for i := range 3 {
		if !bytes.Equal(got[i], pkts[i]) {
			t.Errorf("packet %d: write got %x, want %x", i, got[i], pkts[i])
		}
	}
	if sent, _, dropped := r.Counts(); sent != 3 || dropped != 1 {
		t.Errorf("Counts: sent %d dropped %d, want 3 1", sent, dropped)
	}
	r.Close()
	if c.relayedEndpoint(r.AddrPort()) != nil {
		t.Error("a closed endpoint is still known to the Bind")
	}
	c.Bind().Send([][]byte{wgPacket(4, 64)}, ep) // to a closed loopback port: lost
	mu.Lock()
	n = len(got)
	mu.Unlock()
	if n != 3 {
		t.Errorf("write called after Close: %d packets", n)
	}
}

// TestRelayedEndpointClose: Close is idempotent, a closed Conn makes no
// endpoints, and nil write functions are refused.
func TestRelayedEndpointClose(t *testing.T) {
	c := listen(t)
	if _, err := c.NewRelayedEndpoint(nil); err == nil {
		t.Error("NewRelayedEndpoint(nil): no error")
	}
	r, err := c.NewRelayedEndpoint(func([]byte) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	r.Close()
	r.Deliver(wgPacket(1, 64)) // after Close: dropped, no panic
	if _, _, dropped := r.Counts(); dropped != 1 {
		t.Errorf("Deliver after Close: dropped %d, want 1", dropped)
	}
	c.Close()
	if _, err := c.NewRelayedEndpoint(func([]byte) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Errorf("NewRelayedEndpoint on a closed Conn: %v, want ErrClosed", err)
	}
}

// FuzzRelayedDeliver: whatever the relay hands over, Deliver never
// panics and passes only WireGuard and control packets.
func FuzzRelayedDeliver(f *testing.F) {
	f.Add(wgPacket(1, 64))
	f.Add([]byte{0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42})
	f.Add([]byte{})
	c := listen(f)
	r, err := c.NewRelayedEndpoint(func([]byte) error { return nil })
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { r.Close() })
	f.Fuzz(func(t *testing.T, b []byte) {
		_, d0, _ := r.Counts()
		r.Deliver(b)
		_, d1, _ := r.Counts()
		switch classify(b) {
		case kindWireGuard, kindControl:
		default:
			if d1 != d0 {
				t.Fatalf("Deliver passed a %v packet", classify(b))
			}
		}
	})
}

// TestRelayedEndpointDeliverToBind: WireGuard packets delivered over the
// relay come out of the Bind's relay ReceiveFunc in order, from the
// endpoint, without the loopback socket; a full queue drops and a closed
// Bind or endpoint takes nothing.
func TestRelayedEndpointDeliverToBind(t *testing.T) {
	c := listen(t)
	r, err := c.NewRelayedEndpoint(func([]byte) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.Deliver(wgPacket(1, 64)) // Bind closed: dropped by the Bind, as off the socket
	if got := c.Stats().WireGuardDropped; got != 1 {
		t.Errorf("WireGuardDropped with the Bind closed = %d, want 1", got)
	}
	fns, _, err := c.Bind().Open(0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Bind().Close()
	var want [][]byte
	for i := range relayQueueLen + 3 {
		p := wgPacket(byte(i), 60+i%50)
		if i < relayQueueLen {
			want = append(want, p)
		}
		r.Deliver(p)
	}
	if _, _, dropped := r.Counts(); dropped != 3 {
		t.Errorf("Deliver to a full queue: dropped %d, want 3", dropped)
	}
	rx := receive(fns[1], 7)
	deadline := time.Now().Add(3 * time.Second)
	for rx.count() < len(want) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	rx.mu.Lock()
	got, eps := rx.pkts, rx.eps
	rx.mu.Unlock()
	if len(got) != len(want) {
		t.Fatalf("received %d packets, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("packet %d out of order or changed", i)
		}
		if eps[i].(*Endpoint).AddrPort() != r.AddrPort() {
			t.Fatalf("packet %d from %s, want the endpoint %s", i, eps[i].(*Endpoint).AddrPort(), r.AddrPort())
		}
	}
	r.Close()
	r.Deliver(wgPacket(2, 64))
	if _, delivered, _ := r.Counts(); delivered != uint64(relayQueueLen+1) {
		t.Errorf("delivered %d, want %d", delivered, relayQueueLen+1)
	}
}
