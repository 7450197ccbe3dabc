package udpbatch

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func listen(t *testing.T) *net.UDPConn {
	t.Helper()
	u, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	u.SetReadBuffer(4 << 20)
	return u
}

// TestOrderAndTruncation: datagrams written in a burst (more than a queue
// and a batch) arrive whole and in order through a batched reader, which
// truncates to the caller's buffer as recvfrom does.
func TestOrderAndTruncation(t *testing.T) {
	a, b := New(listen(t)), New(listen(t))
	defer a.Close()
	defer b.Close()
	const count = 3 * QueueLen
	// Runs of equal sizes (GSO runs where the kernel has it), shorter
	// ends of runs, and sizes that grow.
	size := func(i int) int {
		if i < QueueLen {
			return 1200 - 100*(i%7/6)
		}
		return 100 + i%300
	}
	go func() {
		for i := range count {
			p := bytes.Repeat([]byte{byte(i)}, size(i))
			if _, err := a.WriteTo(p, b.LocalAddr()); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	buf := make([]byte, 1500)
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i := range count {
		n, from, err := b.ReadFrom(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if want := bytes.Repeat([]byte{byte(i)}, size(i)); !bytes.Equal(buf[:n], want) {
			t.Fatalf("datagram %d: got %d bytes of %d, want %d of %d", i, n, buf[0], len(want), want[0])
		}
		if from.String() != a.LocalAddr().String() {
			t.Fatalf("from %s, want %s", from, a.LocalAddr())
		}
	}
	a.WriteTo(make([]byte, 1000), b.LocalAddr())
	small := make([]byte, 10)
	if n, _, err := b.ReadFrom(small); err != nil || n != 10 {
		t.Fatalf("short read = %d, %v; want 10 bytes", n, err)
	}
	if a.Errors() != 0 {
		t.Errorf("Errors = %d", a.Errors())
	}
}

// TestClose: Close sends what is queued, stops the writer (goleak), is
// idempotent, and later writes and reads fail with net.ErrClosed.
func TestClose(t *testing.T) {
	rx := listen(t)
	defer rx.Close()
	c := New(listen(t))
	for i := range 10 {
		c.WriteTo([]byte{byte(i)}, rx.LocalAddr())
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	rx.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 10)
	for i := range 10 {
		if n, _, err := rx.ReadFrom(buf); err != nil || n != 1 || buf[0] != byte(i) {
			t.Fatalf("datagram %d after Close: %d %x %v", i, n, buf[:n], err)
		}
	}
	if _, err := c.WriteTo([]byte{1}, rx.LocalAddr()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("WriteTo after Close = %v, want net.ErrClosed", err)
	}
	if _, _, err := c.ReadFrom(buf); !errors.Is(err, net.ErrClosed) {
		t.Errorf("ReadFrom after Close = %v, want net.ErrClosed", err)
	}
}

// TestGSORunBelowDeviceLimit: a run of equal datagrams is cut so that
// each UDP_SEGMENT send stays below a device's gso_max_size (64 KiB) with
// its headers: 46 WireGuard packets of 1424 bytes would not.
func TestGSORunBelowDeviceLimit(t *testing.T) {
	c := New(listen(t))
	defer c.Close()
	to := c.LocalAddr()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	const n = 50
	for i := range n {
		j := (c.head + i) % len(c.slots)
		c.slots[j] = make([]byte, 1424)
		c.addrs[j] = to
	}
	msgs := c.fillLocked(n, true)
	var segs []int
	for _, m := range msgs {
		segs = append(segs, len(m.Buffers))
		if total := len(m.Buffers) * 1424; total+40+8+18 >= 1<<16 {
			t.Errorf("a send of %d bytes: with IPv6, UDP and Ethernet headers it reaches 64 KiB", total)
		}
	}
	if len(segs) != 2 || segs[0] != 45 || segs[1] != 5 {
		t.Errorf("segments per send = %v, want [45 5]", segs)
	}
	for i := range msgs {
		msgs[i].Buffers, msgs[i].OOB = msgs[i].Buffers[:0], msgs[i].OOB[:0]
	}
	for i := range n {
		c.addrs[(c.head+i)%len(c.slots)] = nil
	}
}
