package nat

import (
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
)

// BenchmarkBindThroughput pushes batches of WireGuard-sized datagrams from
// one Bind to another over loopback, through both Conns' sockets, readers and
// batch hand-off. It reports the received rate (Mbit/s) and the share lost
// in the kernel (loss%): UDP on loopback drops when the receiver falls
// behind. One op is one Send of BatchSize packets.
func BenchmarkBindThroughput(b *testing.B) {
	const size = 1420 + 32 // a full transport packet at WireGuard's default MTU
	tx, rx := listen(b), listen(b)
	txb, rxb := tx.Bind(), rx.Bind()
	if _, _, err := txb.Open(0); err != nil {
		b.Fatal(err)
	}
	defer txb.Close()
	fns, _, err := rxb.Open(0)
	if err != nil {
		b.Fatal(err)
	}
	var received atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		bufs := make([][]byte, BatchSize)
		for i := range bufs {
			bufs[i] = make([]byte, device.MaxMessageSize)
		}
		sizes, eps := make([]int, BatchSize), make([]conn.Endpoint, BatchSize)
		for {
			n, err := fns[0](bufs, sizes, eps)
			if err != nil {
				return
			}
			received.Add(int64(n))
		}
	}()
	ep := NewEndpoint(rx.LocalAddr())
	bufs := make([][]byte, BatchSize)
	for i := range bufs {
		bufs[i] = wgPacket(byte(i), size)
	}

	b.SetBytes(BatchSize * size)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if err := txb.Send(bufs, ep); err != nil {
			b.Fatal(err)
		}
	}
	// Let the receiver drain what the kernel kept.
	sent := int64(b.N) * BatchSize
	for last := int64(-1); ; {
		time.Sleep(10 * time.Millisecond)
		n := received.Load()
		if n == sent || n == last {
			break
		}
		last = n
	}
	elapsed := time.Since(start)
	b.StopTimer()
	got := received.Load()
	b.ReportMetric(float64(got)*size*8/elapsed.Seconds()/1e6, "Mbit/s")
	b.ReportMetric(100*float64(sent-got)/float64(sent), "loss%")
	rxb.Close()
	<-done
}
