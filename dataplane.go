package weft

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/weft-net/weft/netstack"
	"github.com/weft-net/weft/platform"
)

// dataPlane is where the node's own sockets live: the gVisor stack in
// userspace mode, the kernel (through a TUN interface) in TUN mode. Both
// hand the tunnel a tun.Device.
type dataPlane interface {
	Device() tun.Device
	DialContext(ctx context.Context, network string, raddr netip.AddrPort) (net.Conn, error)
	ListenTCP(laddr netip.AddrPort) (net.Listener, error)
	ListenUDP(laddr netip.AddrPort) (net.PacketConn, error)
	Close() error
}

var (
	_ dataPlane = (*netstack.Stack)(nil)
	_ dataPlane = (*kernelPlane)(nil)
)

// newDataPlane creates the userspace stack, or the kernel TUN interface
// when cfg.TUN names one.
func (n *Node) newDataPlane() (dataPlane, error) {
	v4, v6 := n.cert.IPv4, n.cert.IPv6()
	if n.cfg.TUN == "" {
		s, err := netstack.New(netstack.Config{Addrs: []netip.Addr{v4, v6}, MTU: n.cfg.MTU, Logger: n.cfg.Logger})
		if err != nil {
			return nil, fmt.Errorf("create userspace network stack: %w", err)
		}
		return s, nil
	}
	t, err := platform.CreateTUN(platform.TUNConfig{
		Name: n.cfg.TUN,
		MTU:  n.cfg.MTU,
		Addrs: []netip.Prefix{
			netip.PrefixFrom(v4, n.genesis.IPv4Prefix.Bits()),
			netip.PrefixFrom(v6, addrULABits),
		},
		Logger: n.cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("create TUN interface %s: %w", n.cfg.TUN, err)
	}
	return &kernelPlane{t: t, v4: v4, v6: v6}, nil
}

// addrULABits is the length of the network's ULA prefix (RFC 4193 /48).
const addrULABits = 48

// kernelPlane is TUN mode: the overlay addresses sit on a kernel interface,
// and the node's own sockets are ordinary kernel sockets bound to them.
type kernelPlane struct {
	t      *platform.TUN
	v4, v6 netip.Addr
}

func (k *kernelPlane) Device() tun.Device { return k.t.Device() }

func (k *kernelPlane) Close() error { return k.t.Close() }

func (k *kernelPlane) DialContext(ctx context.Context, network string, raddr netip.AddrPort) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, raddr.String())
}

// ListenTCP listens on laddr; an unspecified address means both overlay
// addresses (never the host's other interfaces).
func (k *kernelPlane) ListenTCP(laddr netip.AddrPort) (net.Listener, error) {
	if laddr.Addr().IsValid() && !laddr.Addr().IsUnspecified() {
		return net.Listen("tcp", laddr.String())
	}
	l4, err := net.Listen("tcp4", netip.AddrPortFrom(k.v4, laddr.Port()).String())
	if err != nil {
		return nil, err
	}
	l6, err := net.Listen("tcp6", netip.AddrPortFrom(k.v6, netip.MustParseAddrPort(l4.Addr().String()).Port()).String())
	if err != nil {
		l4.Close()
		return nil, err
	}
	return newMultiListener(l4, l6), nil
}

// ListenUDP listens on laddr; an unspecified address means the overlay
// IPv4 address (give the IPv6 address explicitly to receive over IPv6).
func (k *kernelPlane) ListenUDP(laddr netip.AddrPort) (net.PacketConn, error) {
	if !laddr.Addr().IsValid() || laddr.Addr().IsUnspecified() {
		laddr = netip.AddrPortFrom(k.v4, laddr.Port())
	}
	return net.ListenPacket("udp", laddr.String())
}

// multiListener accepts from several listeners at once.
type multiListener struct {
	ls    []net.Listener
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
}

func newMultiListener(ls ...net.Listener) *multiListener {
	m := &multiListener{ls: ls, conns: make(chan net.Conn), done: make(chan struct{})}
	for _, l := range ls {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				select {
				case m.conns <- c:
				case <-m.done:
					c.Close()
					return
				}
			}
		}()
	}
	return m
}

func (m *multiListener) Accept() (net.Conn, error) {
	select {
	case c := <-m.conns:
		return c, nil
	case <-m.done:
		return nil, net.ErrClosed
	}
}

func (m *multiListener) Close() error {
	m.once.Do(func() {
		close(m.done)
		for _, l := range m.ls {
			l.Close()
		}
	})
	m.wg.Wait()
	return nil
}

func (m *multiListener) Addr() net.Addr { return m.ls[0].Addr() }
