package weft

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/tun"
)

// demandTUN wraps the data plane's tun.Device and watches the packets the
// node sends: a packet to an overlay address that no configured peer owns
// starts a lookup of that address and the connect exchange, so peers are
// added on demand when traffic needs them — also for traffic that did not
// go through Dial or the DNS server (ping 100.x.y.z, a UDP WriteTo). The
// packet itself goes on to wireguard-go, which drops it while the peer is
// unknown; the application retransmits.
type demandTUN struct {
	tun.Device
	n *Node

	v4 netip.Prefix // the network's IPv4 prefix
	v6 netip.Prefix // the network's ULA /48

	// known maps the overlay addresses of configured peers to their
	// activity record (our own addresses map to nil); it is replaced as a
	// whole when peers change and read on every packet.
	known atomic.Pointer[map[netip.Addr]*activity]

	mu      sync.Mutex // guards pending
	pending map[netip.Addr]time.Time
}

// demandRetry is how soon a failed on-demand lookup of one address may be
// tried again.
const demandRetry = 5 * time.Second

func newDemandTUN(dev tun.Device, n *Node) *demandTUN {
	d := &demandTUN{Device: dev, n: n, v4: n.genesis.IPv4Prefix, v6: netip.PrefixFrom(n.cert.IPv6(), addrULABits).Masked(),
		pending: make(map[netip.Addr]time.Time)}
	d.setKnown(nil)
	return d
}

// activity is when application traffic last went to or came from a peer,
// in Unix seconds. WireGuard keepalives and handshakes never reach the TUN
// device, so they do not count: a peer with nothing but keepalives is idle.
type activity struct{ last atomic.Int64 }

func (a *activity) touch(now int64) {
	if a != nil && a.last.Load() != now {
		a.last.Store(now)
	}
}

// setKnown replaces the map of addresses that need no lookup.
func (d *demandTUN) setKnown(peers map[netip.Addr]*activity) {
	m := make(map[netip.Addr]*activity, len(peers)+2)
	for a, act := range peers {
		m[a] = act
	}
	m[d.n.cert.IPv4] = nil
	m[d.n.cert.IPv6()] = nil
	d.known.Store(&m)
}

// Write delivers decrypted packets to the stack, noting the sending peer's
// activity.
func (d *demandTUN) Write(bufs [][]byte, offset int) (int, error) {
	kept := d.n.filter.filterInbound(bufs, offset)
	defer d.n.filter.release(kept, bufs)
	known := *d.known.Load()
	now := time.Now().Unix()
	for _, b := range kept {
		if src, ok := packetSrc(b[offset:]); ok {
			known[src].touch(now)
		}
	}
	if len(kept) == 0 {
		return len(bufs), nil
	}
	if _, err := d.Device.Write(kept, offset); err != nil {
		return 0, err
	}
	return len(bufs), nil
}

func (d *demandTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := d.Device.Read(bufs, sizes, offset)
	if n > 0 {
		known := *d.known.Load()
		now := time.Now().Unix()
		for i := 0; i < n; i++ {
			d.n.filter.noteOutbound(bufs[i][offset:offset+sizes[i]], now)
			dst, ok := packetDst(bufs[i][offset : offset+sizes[i]])
			if !ok {
				continue
			}
			if act, ok := known[dst]; ok {
				act.touch(now)
				continue
			}
			if d.v4.Contains(dst) || d.v6.Contains(dst) {
				d.demand(dst)
			}
		}
	}
	return n, err
}

// demand starts a lookup and connect for dst unless one ran recently.
func (d *demandTUN) demand(dst netip.Addr) {
	now := time.Now()
	d.mu.Lock()
	if t, ok := d.pending[dst]; ok && now.Sub(t) < demandRetry {
		d.mu.Unlock()
		return
	}
	if len(d.pending) > 4096 {
		clear(d.pending)
	}
	d.pending[dst] = now
	d.mu.Unlock()
	n := d.n
	n.goBackground(func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		p, err := n.Resolve(ctx, dst.String())
		if err == nil && p.NodeID != n.cert.NodeID {
			err = n.connectPeer(ctx, p.rec)
		}
		if err != nil {
			n.logger.Debug("on-demand connect failed", "dst", dst, "err", err)
		}
	})
}

// packetSrc returns the source address of an IPv4 or IPv6 packet.
func packetSrc(p []byte) (netip.Addr, bool) { return packetAddr(p, 12, 8) }

// packetDst returns the destination address of an IPv4 or IPv6 packet.
func packetDst(p []byte) (netip.Addr, bool) { return packetAddr(p, 16, 24) }

// packetAddr reads the address at offset v4 of an IPv4 header or v6 of an
// IPv6 header.
func packetAddr(p []byte, v4, v6 int) (netip.Addr, bool) {
	if len(p) < 1 {
		return netip.Addr{}, false
	}
	switch p[0] >> 4 {
	case 4:
		if len(p) < 20 {
			return netip.Addr{}, false
		}
		return netip.AddrFrom4([4]byte(p[v4 : v4+4])), true
	case 6:
		if len(p) < 40 {
			return netip.Addr{}, false
		}
		return netip.AddrFrom16([16]byte(p[v6 : v6+16])), true
	}
	return netip.Addr{}, false
}
