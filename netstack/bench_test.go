package netstack

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	wgnetstack "golang.zx2c4.com/wireguard/tun/netstack"
)

// benchChunk is the amount written per benchmark iteration.
const benchChunk = 128 << 10

// benchStream measures one TCP stream from dial to ln.
func benchStream(b *testing.B, ln net.Listener, dial func() (net.Conn, error)) {
	b.Helper()
	done := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- -1
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		done <- n
	}()
	c, err := dial()
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, benchChunk)
	b.SetBytes(benchChunk)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	c.(interface{ CloseWrite() error }).CloseWrite()
	if n := <-done; n != int64(b.N)*benchChunk {
		b.Fatalf("received %d bytes, want %d", n, int64(b.N)*benchChunk)
	}
	b.StopTimer()
}

// BenchmarkTCPThroughput is one TCP stream between two directly wired
// weft Stacks.
func BenchmarkTCPThroughput(b *testing.B) {
	a, s := newPair(b)
	ln, err := s.ListenTCP(netip.AddrPortFrom(addrB4, 5001))
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	benchStream(b, ln, func() (net.Conn, error) {
		return a.DialContext(context.Background(), "tcp", netip.AddrPortFrom(addrB4, 5001))
	})
}

// BenchmarkTCPThroughputUpstream is the same stream between two stock
// wireguard-go tun/netstack devices: the baseline for the tuning.
func BenchmarkTCPThroughputUpstream(b *testing.B) {
	ta, na, err := wgnetstack.CreateNetTUN([]netip.Addr{addrA4}, nil, DefaultMTU)
	if err != nil {
		b.Fatal(err)
	}
	tb, nb, err := wgnetstack.CreateNetTUN([]netip.Addr{addrB4}, nil, DefaultMTU)
	if err != nil {
		b.Fatal(err)
	}
	stop := wire(ta, tb)
	defer func() {
		// Let in-flight packets drain: upstream Close races with a
		// pending WriteNotify.
		time.Sleep(50 * time.Millisecond)
		stop()
	}()
	ln, err := nb.ListenTCPAddrPort(netip.AddrPortFrom(addrB4, 5001))
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	benchStream(b, ln, func() (net.Conn, error) {
		return na.DialContextTCPAddrPort(context.Background(), netip.AddrPortFrom(addrB4, 5001))
	})
}
