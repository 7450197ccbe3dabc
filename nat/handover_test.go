package nat

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
)

// TestBindHandover opens and closes the Bind over and over while a peer
// streams WireGuard packets and control calls at the socket, so the socket
// changes hands between the background reader and the ReceiveFunc under
// load. No packet may be lost or counted twice: every WireGuard packet read
// is either returned by a ReceiveFunc or counted as dropped, and every
// control call is answered.
func TestBindHandover(t *testing.T) {
	a := listen(t)
	a.Handle(MsgPing, func(context.Context, Peer, []byte) ([]byte, error) { return []byte("pong"), nil })
	b := a.Bind()
	u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sent atomic.Int64
	wg.Add(2)
	go func() { // WireGuard packets, paced so the kernel never drops
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := u.WriteToUDPAddrPort(wgPacket(byte(i), 200), a.LocalAddr()); err == nil {
				sent.Add(1)
			}
			if i%32 == 31 {
				time.Sleep(200 * time.Microsecond)
			}
		}
	}()
	var calls, callErrs atomic.Int64
	c := listen(t)
	go func() { // control calls beside them
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			got, err := c.Call(ctxT(t, 5*time.Second), peerOf(a), MsgPing, nil)
			if err != nil || string(got) != "pong" {
				callErrs.Add(1)
			}
			calls.Add(1)
		}
	}()

	var received atomic.Int64
	for round := range 40 {
		fns, _, err := b.Open(0)
		if err != nil {
			t.Fatalf("round %d: Open: %v", round, err)
		}
		done := make(chan error, 1)
		go func() {
			bufs := make([][]byte, 128)
			for i := range bufs {
				bufs[i] = make([]byte, device.MaxMessageSize)
			}
			sizes, eps := make([]int, len(bufs)), make([]conn.Endpoint, len(bufs))
			for {
				n, err := fns[0](bufs, sizes, eps)
				if err != nil {
					done <- err
					return
				}
				for i := range n {
					if classify(bufs[i][:sizes[i]]) != kindWireGuard || sizes[i] != 200 || eps[i] == nil {
						done <- errors.New("ReceiveFunc returned a packet that is not one we sent")
						return
					}
				}
				received.Add(int64(n))
			}
		}()
		time.Sleep(time.Duration(round%4) * 5 * time.Millisecond) // open for 0-15ms
		b.Close()
		if err := <-done; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("round %d: ReceiveFunc = %v, want net.ErrClosed", round, err)
		}
		time.Sleep(time.Duration(round%3) * 2 * time.Millisecond) // closed for 0-4ms
	}
	close(stop)
	wg.Wait()

	waitFor(t, "every packet read", func() bool {
		s := a.Stats()
		return int64(s.PacketsIn-s.ControlIn) == sent.Load()
	})
	s := a.Stats()
	if int64(s.WireGuardIn) != received.Load() {
		t.Errorf("WireGuardIn = %d, ReceiveFuncs returned %d", s.WireGuardIn, received.Load())
	}
	if got := s.WireGuardIn + s.WireGuardDropped; int64(got) != sent.Load() {
		t.Errorf("WireGuardIn %d + WireGuardDropped %d = %d, want the %d sent", s.WireGuardIn, s.WireGuardDropped, got, sent.Load())
	}
	if received.Load() == 0 || s.WireGuardDropped == 0 {
		t.Errorf("received %d, dropped %d: want both readers to have read", received.Load(), s.WireGuardDropped)
	}
	if callErrs.Load() > 0 {
		t.Errorf("%d of %d control calls failed across the handovers", callErrs.Load(), calls.Load())
	}
	t.Logf("%d WireGuard packets sent, %d received, %d dropped while closed; %d control calls", sent.Load(), received.Load(), s.WireGuardDropped, calls.Load())
}

// TestBindReceiveBuffers checks the ways a ReceiveFunc reads, against
// coalesced and plain datagrams: straight into wireguard-go-sized buffers
// (enough of them to split any datagram in place, or too few, so that
// packets wait for the next call), and into a batch of its own when the
// buffers are too small to read into.
func TestBindReceiveBuffers(t *testing.T) {
	for _, tc := range []struct {
		name       string
		nbuf, size int
	}{
		{"direct", 128, device.MaxMessageSize},
		{"direct, fewer buffers than segments", 3, device.MaxMessageSize},
		{"direct, one buffer", 1, device.MaxMessageSize},
		{"small buffers", 32, 2000},
	} {
		t.Run(tc.name, func(t *testing.T) {
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
			var (
				mu  sync.Mutex
				got [][]byte
			)
			done := make(chan error, 1)
			go func() {
				bufs := make([][]byte, tc.nbuf)
				for i := range bufs {
					bufs[i] = make([]byte, tc.size)
				}
				sizes, eps := make([]int, tc.nbuf), make([]conn.Endpoint, tc.nbuf)
				for {
					n, err := fns[0](bufs, sizes, eps)
					if err != nil {
						done <- err
						return
					}
					mu.Lock()
					for i := range n {
						got = append(got, bytes.Clone(bufs[i][:sizes[i]]))
					}
					mu.Unlock()
				}
			}()
			var want, bufs [][]byte
			for i := range 300 {
				size := 1452
				if i%100 == 99 {
					size = 200
				}
				p := wgPacket(byte(i), size)
				want = append(want, p)
				bufs = append(bufs, spare(p, 1<<16)) // spare capacity: sent coalesced with GSO
			}
			for i := range 20 { // and some plain
				p := wgPacket(byte(i), 100+i)
				want = append(want, p)
				bufs = append(bufs, p)
			}
			for len(bufs) > 0 {
				k := min(len(bufs), 128)
				if err := ba.Send(bufs[:k], NewEndpoint(b.LocalAddr())); err != nil {
					t.Fatal(err)
				}
				bufs = bufs[k:]
			}
			waitFor(t, "every packet", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(got) == len(want)
			})
			bb.Close()
			if err := <-done; !errors.Is(err, net.ErrClosed) {
				t.Fatalf("ReceiveFunc after Close = %v", err)
			}
			for i := range want {
				if !bytes.Equal(got[i], want[i]) {
					t.Fatalf("packet %d = %d bytes, want %d bytes of packet %d", i, len(got[i]), len(want[i]), i)
				}
			}
			if s := b.Stats(); s.WireGuardIn != uint64(len(want)) || s.WireGuardDropped != 0 {
				t.Errorf("stats = %+v", s)
			}
		})
	}
}
