package netstack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// DefaultMTU is the MTU used when Config.MTU is zero: the WireGuard default
// (1500 minus the 80 bytes of IPv6+UDP+WireGuard overhead).
const DefaultMTU = 1420

// TCP tuning. gVisor's defaults (1 MiB send, 1 MiB receive maximum, SACK
// off, no RACK) cap a single stream well below what the data plane carries.
//
// The maxima bound the window, not the memory: lowering both to 2 MiB or
// 1 MiB left a daemon's peak RSS under `make bench` unchanged (47-70 MB,
// within noise) because what costs memory is packets queued inside
// wireguard-go, one 64 KiB buffer each, and the batch sizes bound that
// better (see batchSize in link.go). Small maxima would only cap
// throughput on long paths (2 MiB is ~40 MB/s at 50 ms RTT), so they stay.
const (
	tcpSendBufMin = 4 << 10
	tcpSendBufDef = 1 << 20
	tcpSendBufMax = 6 << 20
	tcpRecvBufMin = 4 << 10
	tcpRecvBufDef = 1 << 20
	tcpRecvBufMax = 8 << 20

	// listenBacklog is the accept queue of ListenTCP (gonet uses 10).
	listenBacklog = 1024
)

const nicID tcpip.NICID = 1

// Config configures a Stack.
type Config struct {
	// Addrs are the stack's own overlay addresses (IPv4 and/or IPv6). At
	// least one is required; a default route is added for each family
	// present.
	Addrs []netip.Addr

	// MTU of the device. Zero means DefaultMTU (1420). Must be at least
	// 1280 when an IPv6 address is configured, else at least 576.
	MTU int

	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger
}

// Stack is a userspace TCP/IP stack whose link layer is a tun.Device. Hand
// Device() to wireguard-go and use DialContext/ListenTCP/ListenUDP to talk
// inside the overlay.
type Stack struct {
	log   *slog.Logger
	stack *stack.Stack
	ep    *linkEndpoint
	dev   *device
	mtu   int
	hasV4 bool
	hasV6 bool

	closeOnce sync.Once
}

// New builds and starts a Stack.
func New(cfg Config) (*Stack, error) {
	log := logger(cfg.Logger, "netstack")
	mtu := cfg.MTU
	if mtu == 0 {
		mtu = DefaultMTU
	}
	if len(cfg.Addrs) == 0 {
		return nil, fmt.Errorf("netstack new: no addresses: %w", ErrInvalidAddress)
	}
	s := &Stack{log: log, mtu: mtu}
	for _, a := range cfg.Addrs {
		a = a.Unmap()
		switch {
		case !a.IsValid() || a.IsUnspecified():
			return nil, fmt.Errorf("netstack new: address %v: %w", a, ErrInvalidAddress)
		case a.Is4():
			s.hasV4 = true
		default:
			s.hasV6 = true
		}
	}
	minMTU := 576
	if s.hasV6 {
		minMTU = header.IPv6MinimumMTU
	}
	if mtu < minMTU || mtu > 65535 {
		return nil, fmt.Errorf("netstack new: MTU %d out of range %d..65535", mtu, minMTU)
	}

	s.stack = stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
		HandleLocal:        true,
	})
	if err := s.tune(); err != nil {
		s.stack.Destroy()
		return nil, err
	}
	s.ep = newLinkEndpoint(mtu)
	if terr := s.stack.CreateNIC(nicID, s.ep); terr != nil {
		s.stack.Destroy()
		return nil, fmt.Errorf("netstack new: create NIC: %s", terr)
	}
	for _, a := range cfg.Addrs {
		a = a.Unmap()
		proto := ipv4.ProtocolNumber
		if a.Is6() {
			proto = ipv6.ProtocolNumber
		}
		pa := tcpip.ProtocolAddress{
			Protocol:          proto,
			AddressWithPrefix: tcpip.AddrFromSlice(a.AsSlice()).WithPrefix(),
		}
		if terr := s.stack.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); terr != nil {
			s.destroy()
			return nil, fmt.Errorf("netstack new: add address %v: %s", a, terr)
		}
	}
	if s.hasV4 {
		s.stack.AddRoute(tcpip.Route{Destination: header.IPv4EmptySubnet, NIC: nicID})
	}
	if s.hasV6 {
		s.stack.AddRoute(tcpip.Route{Destination: header.IPv6EmptySubnet, NIC: nicID})
	}
	s.dev = &device{s: s, ep: s.ep, events: make(chan tun.Event, 1), log: log}
	s.dev.events <- tun.EventUp
	log.Debug("stack up", "addrs", cfg.Addrs, "mtu", mtu)
	return s, nil
}

// tune applies the throughput settings described in the package doc.
func (s *Stack) tune() error {
	opts := []struct {
		name string
		opt  tcpip.SettableTransportProtocolOption
	}{
		{"SACK", ptr(tcpip.TCPSACKEnabled(true))},
		// No RACK (gVisor's default): after a burst loss, such as the
		// blackhole while a NAT re-creates a flushed mapping, gVisor's
		// RACK recovers one or two segments per 200 ms RTO for tens of
		// seconds (TestLossBurstRecovery). SACK recovery (RFC 6675)
		// recovers at once.
		{"loss recovery", ptr(tcpip.TCPRecovery(0))},
		{"send buffer", &tcpip.TCPSendBufferSizeRangeOption{Min: tcpSendBufMin, Default: tcpSendBufDef, Max: tcpSendBufMax}},
		{"receive buffer", &tcpip.TCPReceiveBufferSizeRangeOption{Min: tcpRecvBufMin, Default: tcpRecvBufDef, Max: tcpRecvBufMax}},
		{"receive buffer moderation", ptr(tcpip.TCPModerateReceiveBufferOption(true))},
		{"congestion control", ptr(tcpip.CongestionControlOption("cubic"))},
	}
	for _, o := range opts {
		if terr := s.stack.SetTransportProtocolOption(tcp.ProtocolNumber, o.opt); terr != nil {
			return fmt.Errorf("netstack new: set TCP %s: %s", o.name, terr)
		}
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// Device returns the tun.Device to hand to wireguard-go. Its Close closes the
// Stack.
func (s *Stack) Device() tun.Device { return s.dev }

// MTU returns the device MTU.
func (s *Stack) MTU() int { return s.mtu }

// Close shuts the stack down: pending and future Device Reads return
// os.ErrClosed, every open connection and listener is aborted, and all stack
// goroutines have exited when Close returns. Close is idempotent and always
// returns nil.
func (s *Stack) Close() error {
	s.closeOnce.Do(func() {
		s.destroy()
		s.log.Debug("stack closed")
	})
	return nil
}

func (s *Stack) destroy() {
	// Unblock writers first so that stack goroutines blocked on a full
	// queue can finish, then abort endpoints and wait for the workers.
	s.ep.close()
	s.stack.Destroy()
	s.ep.drain()
	if s.dev != nil {
		close(s.dev.events)
	}
}

// fullAddr converts ap to a gVisor address on the stack's NIC. The zero or
// unspecified address becomes the wildcard.
func fullAddr(ap netip.AddrPort) tcpip.FullAddress {
	fa := tcpip.FullAddress{Port: ap.Port()}
	if a := ap.Addr().Unmap(); a.IsValid() && !a.IsUnspecified() {
		fa.Addr = tcpip.AddrFromSlice(a.AsSlice())
		fa.NIC = nicID
	}
	return fa
}

// protoFor picks the network protocol for a remote or local address:
// IPv4 for IPv4 addresses, IPv6 otherwise. A wildcard (zero or
// unspecified) address prefers a dual-stack IPv6 endpoint.
func (s *Stack) protoFor(op string, a netip.Addr, want4, want6 bool) (tcpip.NetworkProtocolNumber, error) {
	a = a.Unmap()
	switch {
	case !a.IsValid() || a.IsUnspecified():
		if a.Is4() {
			want6 = false
		} else if a.Is6() {
			want4 = false
		}
		if want6 && s.hasV6 {
			return ipv6.ProtocolNumber, nil
		}
		if want4 && s.hasV4 {
			return ipv4.ProtocolNumber, nil
		}
	case a.Is4():
		if want4 && s.hasV4 {
			return ipv4.ProtocolNumber, nil
		}
	default:
		if want6 && s.hasV6 {
			return ipv6.ProtocolNumber, nil
		}
	}
	return 0, fmt.Errorf("netstack %s %v: %w", op, a, ErrAddressFamily)
}

func splitNetwork(network string) (proto string, want4, want6 bool, err error) {
	switch network {
	case "tcp", "udp":
		return network, true, true, nil
	case "tcp4", "udp4":
		return network[:3], true, false, nil
	case "tcp6", "udp6":
		return network[:3], false, true, nil
	}
	return "", false, false, fmt.Errorf("netstack dial %q: %w", network, ErrUnsupportedNetwork)
}

// DialContext connects to raddr inside the overlay. network is "tcp",
// "tcp4", "tcp6", "udp", "udp4" or "udp6". TCP dial errors wrap the
// matching syscall errno (ECONNREFUSED, EHOSTUNREACH, ENETUNREACH,
// ETIMEDOUT) so callers can classify them with errors.Is.
func (s *Stack) DialContext(ctx context.Context, network string, raddr netip.AddrPort) (net.Conn, error) {
	proto, want4, want6, err := splitNetwork(network)
	if err != nil {
		return nil, err
	}
	raddr = netip.AddrPortFrom(raddr.Addr().Unmap(), raddr.Port())
	if !raddr.Addr().IsValid() || raddr.Port() == 0 && proto == "tcp" {
		return nil, fmt.Errorf("netstack dial %s %v: %w", network, raddr, ErrInvalidAddress)
	}
	pn, err := s.protoFor("dial "+network, raddr.Addr(), want4, want6)
	if err != nil {
		return nil, err
	}
	if s.ep.closed() {
		return nil, &net.OpError{Op: "dial", Net: network, Addr: net.TCPAddrFromAddrPort(raddr), Err: net.ErrClosed}
	}
	fa := fullAddr(raddr)
	if proto == "udp" {
		c, err := gonet.DialUDP(s.stack, nil, &fa, pn)
		if err != nil {
			return nil, &net.OpError{Op: "dial", Net: network, Addr: net.UDPAddrFromAddrPort(raddr), Err: err}
		}
		return &udpConn{c}, nil
	}
	return s.dialTCP(ctx, network, fa, pn, raddr)
}

// dialTCP is gonet.DialTCPWithBind with errors that keep their errno.
func (s *Stack) dialTCP(ctx context.Context, network string, fa tcpip.FullAddress, pn tcpip.NetworkProtocolNumber, raddr netip.AddrPort) (net.Conn, error) {
	opErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: network, Addr: net.TCPAddrFromAddrPort(raddr), Err: err}
	}
	var wq waiter.Queue
	ep, terr := s.stack.NewEndpoint(tcp.ProtocolNumber, pn, &wq)
	if terr != nil {
		return nil, opErr(tcpipError(terr))
	}
	entry, notify := waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)

	if err := ctx.Err(); err != nil {
		ep.Close()
		return nil, opErr(err)
	}
	terr = ep.Connect(fa)
	if _, ok := terr.(*tcpip.ErrConnectStarted); ok {
		select {
		case <-ctx.Done():
			ep.Close()
			return nil, opErr(ctx.Err())
		case <-s.ep.done:
			ep.Close()
			return nil, opErr(net.ErrClosed)
		case <-notify:
		}
		terr = ep.LastError()
	}
	if terr != nil {
		ep.Close()
		return nil, opErr(tcpipError(terr))
	}
	return gonet.NewTCPConn(&wq, ep), nil
}

// tcpipError converts a gVisor error to a Go error, keeping the errno for
// the cases callers need to tell apart.
func tcpipError(terr tcpip.Error) error {
	var errno syscall.Errno
	switch terr.(type) {
	case *tcpip.ErrConnectionRefused:
		errno = syscall.ECONNREFUSED
	case *tcpip.ErrHostUnreachable, *tcpip.ErrHostDown:
		errno = syscall.EHOSTUNREACH
	case *tcpip.ErrNetworkUnreachable, *tcpip.ErrNoNet:
		errno = syscall.ENETUNREACH
	case *tcpip.ErrTimeout:
		errno = syscall.ETIMEDOUT
	case *tcpip.ErrConnectionReset:
		errno = syscall.ECONNRESET
	case *tcpip.ErrConnectionAborted, *tcpip.ErrAborted:
		errno = syscall.ECONNABORTED
	case *tcpip.ErrPortInUse:
		errno = syscall.EADDRINUSE
	default:
		return errors.New(terr.String())
	}
	return os.NewSyscallError(terr.String(), errno)
}

// ListenTCP listens for TCP connections on laddr. A zero or unspecified
// address listens on every local address (dual-stack when the stack has an
// IPv6 address); port 0 picks a free port.
func (s *Stack) ListenTCP(laddr netip.AddrPort) (net.Listener, error) {
	pn, err := s.protoFor("listen tcp", laddr.Addr(), true, true)
	if err != nil {
		return nil, err
	}
	opErr := func(op string, err error) error {
		return &net.OpError{Op: op, Net: "tcp", Addr: net.TCPAddrFromAddrPort(laddr), Err: err}
	}
	if s.ep.closed() {
		return nil, opErr("listen", net.ErrClosed)
	}
	var wq waiter.Queue
	ep, terr := s.stack.NewEndpoint(tcp.ProtocolNumber, pn, &wq)
	if terr != nil {
		return nil, opErr("listen", tcpipError(terr))
	}
	if terr := ep.Bind(fullAddr(laddr)); terr != nil {
		ep.Close()
		return nil, opErr("bind", tcpipError(terr))
	}
	if terr := ep.Listen(listenBacklog); terr != nil {
		ep.Close()
		return nil, opErr("listen", tcpipError(terr))
	}
	return gonet.NewTCPListener(s.stack, &wq, ep), nil
}

// ListenUDP opens a UDP socket on laddr (zero or unspecified address: every
// local address; port 0: a free port). WriteTo accepts *net.UDPAddr and
// any net.Addr whose String is "ip:port".
func (s *Stack) ListenUDP(laddr netip.AddrPort) (net.PacketConn, error) {
	pn, err := s.protoFor("listen udp", laddr.Addr(), true, true)
	if err != nil {
		return nil, err
	}
	if s.ep.closed() {
		return nil, &net.OpError{Op: "listen", Net: "udp", Addr: net.UDPAddrFromAddrPort(laddr), Err: net.ErrClosed}
	}
	fa := fullAddr(laddr)
	c, err := gonet.DialUDP(s.stack, &fa, nil, pn)
	if err != nil {
		return nil, &net.OpError{Op: "listen", Net: "udp", Addr: net.UDPAddrFromAddrPort(laddr), Err: err}
	}
	return &udpConn{c}, nil
}

// udpConn makes gonet's WriteTo accept any net.Addr (gonet panics on
// anything but *net.UDPAddr) and normalises IPv4-mapped addresses.
type udpConn struct {
	*gonet.UDPConn
}

func (c *udpConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	var ap netip.AddrPort
	switch a := addr.(type) {
	case *net.UDPAddr:
		ap = a.AddrPort()
	case nil:
		return 0, &net.OpError{Op: "write", Net: "udp", Err: ErrInvalidAddress}
	default:
		var err error
		if ap, err = netip.ParseAddrPort(addr.String()); err != nil {
			return 0, &net.OpError{Op: "write", Net: "udp", Addr: addr, Err: ErrInvalidAddress}
		}
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	return c.UDPConn.WriteTo(b, net.UDPAddrFromAddrPort(ap))
}
