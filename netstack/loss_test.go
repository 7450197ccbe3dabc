package netstack

import (
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestLossBurstRecovery drops everything for 600 ms in the middle of a
// paced transfer, as a path does while a NAT whose mappings were flushed
// waits for the next outbound packet: the stream must catch up within a
// few seconds. (With gVisor's RACK loss detection on, the sender
// retransmitted one or two segments per 200 ms RTO and took over 30 s.)
func TestLossBurstRecovery(t *testing.T) {
	a, err := New(Config{Addrs: []netip.Addr{addrA4}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(Config{Addrs: []netip.Addr{addrB4}})
	if err != nil {
		a.Close()
		t.Fatal(err)
	}
	var blackhole atomic.Bool
	var wg sync.WaitGroup
	wg.Add(2)
	go lossyPump(&wg, a.Device(), b.Device(), &blackhole)
	go lossyPump(&wg, b.Device(), a.Device(), &blackhole)
	defer func() {
		a.Close()
		b.Close()
		wg.Wait()
	}()
	ln, err := b.ListenTCP(netip.AddrPortFrom(addrB4, 9000))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const size, rate = 4 << 20, 2 << 20 // 2 s
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		got <- n
	}()
	c, err := a.DialContext(ctxT(t), "tcp4", netip.AddrPortFrom(addrB4, 9000))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	stop := time.AfterFunc(500*time.Millisecond, func() {
		blackhole.Store(true)
		time.Sleep(600 * time.Millisecond)
		blackhole.Store(false)
	})
	defer stop.Stop()
	c.SetWriteDeadline(start.Add(20 * time.Second))
	buf := make([]byte, rate/50)
	for sent := 0; sent < size; {
		if due := start.Add(time.Duration(float64(sent) / rate * float64(time.Second))); time.Until(due) > 0 {
			time.Sleep(time.Until(due))
		}
		k, err := c.Write(buf[:min(len(buf), size-sent)])
		if err != nil {
			t.Fatalf("write after %v: %v", time.Since(start), err)
		}
		sent += k
	}
	c.Close()
	select {
	case n := <-got:
		if n != size {
			t.Fatalf("received %d bytes; want %d", n, size)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("transfer not done %v after the start", time.Since(start))
	}
	// 2 s paced, plus the 600 ms blackhole, plus recovery.
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("a 2 s transfer with a 600 ms blackhole took %v; want under 5 s", d)
	} else {
		t.Logf("a 2 s transfer with a 600 ms blackhole took %v", d.Round(10*time.Millisecond))
	}
}
