package nat

import (
	"bytes"
	"net"
	"testing"

	"golang.org/x/net/ipv6"

	"github.com/weft-net/weft/nat/internal/udpbatch"
)

// spare returns p in a buffer with room to grow to n bytes, as
// wireguard-go's packet buffers have.
func spare(p []byte, n int) []byte {
	b := make([]byte, len(p), n)
	copy(b, p)
	return b
}

// maxIPv4PayloadLen is the IPv4 payload limit of one UDP send (room for
// the IP and UDP headers).
const maxIPv4PayloadLen = 1<<16 - 1 - 20 - 8

func TestCoalesceMessages(t *testing.T) {
	ua := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
	const big = 1 << 16
	many := func(n, size, capacity int) [][]byte {
		var bufs [][]byte
		for i := range n {
			bufs = append(bufs, spare(wgPacket(byte(i), size), capacity))
		}
		return bufs
	}
	type msg struct {
		segs int // datagrams in the message
		gso  int // UDP_SEGMENT size, 0 for none
	}
	tests := []struct {
		name       string
		bufs       [][]byte
		maxPayload int
		want       []msg
	}{
		{"one", many(1, 1452, big), maxIPv4PayloadLen, []msg{{1, 0}}},
		{"equal run", many(10, 1452, big), maxIPv4PayloadLen, []msg{{10, 1452}}},
		{"no spare capacity", many(3, 1452, 1452), maxIPv4PayloadLen, []msg{{1, 0}, {1, 0}, {1, 0}}},
		{"short tail ends the run", append(many(3, 1452, big), spare(wgPacket(9, 100), big), spare(wgPacket(9, 1452), big)),
			maxIPv4PayloadLen, []msg{{4, 1452}, {1, 0}}},
		{"longer packet starts a new run", append(many(2, 500, big), many(2, 1452, big)...),
			maxIPv4PayloadLen, []msg{{2, 500}, {2, 1452}}},
		{"segment limit", many(udpSegmentMaxDatagrams+1, 100, big), maxIPv4PayloadLen,
			[]msg{{udpSegmentMaxDatagrams, 100}, {1, 0}}},
		{"payload limit", many(5, 1000, big), 2500, []msg{{2, 1000}, {2, 1000}, {1, 0}}},
		// 46 packets of 1424 bytes would reach a veth's gso_max_size with
		// their headers and be cut up in software.
		{"below gso_max_size", many(50, 1424, 64<<10), udpbatch.MaxGSOPayload, []msg{{45, 1424}, {5, 1424}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var all []byte
			for _, b := range tt.bufs {
				all = append(all, b...)
			}
			msgs := make([]ipv6.Message, len(tt.bufs))
			gsos := make([]int, len(tt.bufs))
			for i := range msgs {
				msgs[i].Buffers = make(net.Buffers, 1)
			}
			n := coalesceMessages(ua, tt.bufs, msgs, tt.maxPayload, func(oob *[]byte, size uint16) {
				for i := range msgs {
					if &msgs[i].OOB == oob {
						gsos[i] = int(size)
					}
				}
			})
			if n != len(tt.want) {
				t.Fatalf("%d messages, want %d", n, len(tt.want))
			}
			var got []byte
			for i, w := range tt.want {
				m := msgs[i]
				if m.Addr != ua {
					t.Errorf("message %d addr %v", i, m.Addr)
				}
				if gsos[i] != w.gso {
					t.Errorf("message %d GSO size %d, want %d", i, gsos[i], w.gso)
				}
				seg := w.gso
				if seg == 0 {
					seg = len(m.Buffers[0])
				}
				if segs := (len(m.Buffers[0]) + seg - 1) / seg; segs != w.segs {
					t.Errorf("message %d has %d datagrams (%d bytes), want %d", i, segs, len(m.Buffers[0]), w.segs)
				}
				got = append(got, m.Buffers[0]...)
			}
			if !bytes.Equal(got, all) {
				t.Error("messages do not carry the packets in order")
			}
		})
	}
}
