package netstack

import (
	"errors"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"golang.zx2c4.com/wireguard/tun"
)

// pump copies packets from one tun.Device to another until the source is
// closed, like two wireguard-go devices on a perfect link.
func pump(wg *sync.WaitGroup, from, to tun.Device) { lossyPump(wg, from, to, nil) }

// lossyPump is pump with a switch: while blackhole (if not nil) is set,
// packets are dropped.
func lossyPump(wg *sync.WaitGroup, from, to tun.Device, blackhole *atomic.Bool) {
	defer wg.Done()
	n := from.BatchSize()
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, 65535)
	}
	sizes := make([]int, n)
	out := make([][]byte, 0, n)
	for {
		k, err := from.Read(bufs, sizes, 0)
		if err != nil {
			return
		}
		if blackhole != nil && blackhole.Load() {
			continue
		}
		out = out[:0]
		for i := 0; i < k; i++ {
			out = append(out, bufs[i][:sizes[i]])
		}
		if _, err := to.Write(out, 0); err != nil && !errors.Is(err, os.ErrClosed) {
			return
		}
	}
}

// wire connects two devices with a pump in each direction. The returned
// function closes both devices and waits for the pumps.
func wire(a, b tun.Device) (stop func()) {
	var wg sync.WaitGroup
	wg.Add(2)
	go pump(&wg, a, b)
	go pump(&wg, b, a)
	var once sync.Once
	return func() {
		once.Do(func() {
			a.Close()
			b.Close()
			wg.Wait()
		})
	}
}

var (
	addrA4 = netip.MustParseAddr("100.64.0.1")
	addrB4 = netip.MustParseAddr("100.64.0.2")
	addrA6 = netip.MustParseAddr("fd00:1::1")
	addrB6 = netip.MustParseAddr("fd00:1::2")
)

// newPair returns two Stacks wired directly together.
func newPair(tb testing.TB) (a, b *Stack) {
	tb.Helper()
	a, err := New(Config{Addrs: []netip.Addr{addrA4, addrA6}})
	if err != nil {
		tb.Fatal(err)
	}
	b, err = New(Config{Addrs: []netip.Addr{addrB4, addrB6}})
	if err != nil {
		a.Close()
		tb.Fatal(err)
	}
	stop := wire(a.Device(), b.Device())
	tb.Cleanup(stop)
	return a, b
}
