package udpbatch

import (
	"bytes"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
)

// TestGROSplit: one UDP_SEGMENT send of several datagrams (and a shorter
// last one) reaches a GRO reader as the datagrams it was made of.
func TestGROSplit(t *testing.T) {
	src, dst := listen(t), New(listen(t))
	defer src.Close()
	defer dst.Close()
	if !canGSO(src) || !dst.gro {
		t.Skip("no UDP GSO/GRO")
	}
	var segs [][]byte
	for i := range 5 {
		n := 1000
		if i == 4 {
			n = 300
		}
		segs = append(segs, bytes.Repeat([]byte{byte(i + 1)}, n))
	}
	m := ipv4.Message{Buffers: segs, Addr: dst.LocalAddr(), OOB: make([]byte, 0, gsoControlSize)}
	setGSO(&m.OOB, 1000)
	if _, err := ipv4.NewPacketConn(src).WriteBatch([]ipv4.Message{m}, 0); err != nil {
		t.Fatal(err)
	}
	dst.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2000)
	for i, want := range segs {
		n, _, err := dst.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf[:n], want) {
			t.Fatalf("datagram %d: %d bytes of %d, want %d of %d", i, n, buf[0], len(want), want[0])
		}
	}
}
