package weft

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/ipc"

	"github.com/weft-net/weft/addr"
	"github.com/weft-net/weft/dns"
	"github.com/weft-net/weft/platform"
)

// dnsResolver answers the DNS server's questions from the node's records.
type dnsResolver struct{ n *Node }

var _ dns.Resolver = dnsResolver{}

// dnsConnectWait bounds how long a DNS answer waits for the connect
// exchange with the node it names, so that the asking program's first
// packet finds a configured peer.
const dnsConnectWait = 2 * time.Second

func (r dnsResolver) ResolveName(ctx context.Context, name string) (dns.Answer, error) {
	return r.resolve(ctx, name)
}

func (r dnsResolver) ResolveAddr(ctx context.Context, ip netip.Addr) (dns.Answer, error) {
	return r.resolve(ctx, ip.String())
}

func (r dnsResolver) resolve(ctx context.Context, host string) (dns.Answer, error) {
	n := r.n
	p, err := n.Resolve(ctx, host)
	if err != nil {
		if errors.Is(err, ErrNotFound) || errors.Is(err, addr.ErrInvalidName) || errors.Is(err, addr.ErrInvalidID) {
			return dns.Answer{}, fmt.Errorf("%w: %v", dns.ErrNotFound, err)
		}
		return dns.Answer{}, err
	}
	if n.cfg.TUN != "" && p.NodeID != n.cert.NodeID {
		cctx, cancel := context.WithTimeout(ctx, dnsConnectWait)
		if err := n.connectPeer(cctx, p.rec); err != nil {
			n.logger.Debug("connect for DNS answer", "name", p.Name, "err", err)
		}
		cancel()
	}
	ttl := p.Expires.Sub(n.now())
	if ttl < time.Second {
		ttl = time.Second
	}
	return dns.Answer{Name: p.Name, NodeID: p.NodeID, IPv4: p.IPv4, IPv6: p.IPv6, TTL: ttl}, nil
}

// startDNS starts the overlay DNS server where the configuration asks for
// one, and in TUN mode with AcceptDNS points the OS resolver at it.
func (n *Node) startDNS() error {
	listen := n.cfg.DNS
	if !listen.IsValid() {
		if n.cfg.TUN == "" {
			return nil
		}
		listen = netip.AddrPortFrom(n.cert.IPv4, 53)
	}
	var upstreams []netip.AddrPort
	if n.cfg.TUN != "" {
		// A crashed run may have left the OS resolver pointing at us.
		if err := platform.RecoverDNS(n.cfg.StateDir, n.cfg.Logger); err != nil {
			n.logger.Warn("could not restore the resolver configuration of a previous run", "err", err)
		}
	}
	if ups, err := platform.SystemUpstreams(); err == nil {
		upstreams = ups
	} else {
		n.logger.Warn("no upstream resolvers found: names outside the overlay will be refused", "err", err)
	}
	srv, err := dns.New(dns.Config{
		Domain: n.genesis.Domain,
		// Reverse names in the overlay are answered here; members (and
		// this host through its overlay address) may forward.
		Prefixes:  []netip.Prefix{n.genesis.IPv4Prefix, addr.ULAPrefix(n.netID)},
		Resolver:  dnsResolver{n},
		Upstreams: upstreams,
		Logger:    n.cfg.Logger,
		Now:       n.now,
	})
	if err != nil {
		return err
	}
	pc, err := net.ListenPacket("udp", listen.String())
	if err != nil {
		srv.Close()
		return fmt.Errorf("DNS server on %s: %w", listen, err)
	}
	ln, err := net.Listen("tcp", netip.AddrPortFrom(listen.Addr(), netip.MustParseAddrPort(pc.LocalAddr().String()).Port()).String())
	if err != nil {
		pc.Close()
		srv.Close()
		return fmt.Errorf("DNS server on %s/tcp: %w", listen, err)
	}
	n.dns = srv
	n.dnsAddr = netip.MustParseAddrPort(pc.LocalAddr().String())
	n.wg.Add(2)
	go func() { defer n.wg.Done(); srv.ServeUDP(pc) }()
	go func() { defer n.wg.Done(); srv.ServeTCP(ln) }()
	n.logger.Info("overlay DNS server up", "addr", n.dnsAddr, "domain", n.genesis.Domain, "upstreams", upstreams)

	if n.cfg.TUN != "" && n.cfg.AcceptDNS {
		osdns, err := platform.ConfigureDNS(platform.DNSConfig{
			Interface: n.cfg.TUN,
			Servers:   []netip.Addr{n.dnsAddr.Addr()},
			Domain:    n.genesis.Domain,
			StateDir:  n.cfg.StateDir,
			Logger:    n.cfg.Logger,
		})
		if err != nil {
			return fmt.Errorf("configure the OS resolver for %s (use --accept-dns=false to skip): %w", n.genesis.Domain, err)
		}
		n.osDNS = osdns
	}
	return nil
}

// startUAPI serves wireguard-go's UAPI socket (/var/run/wireguard/NAME.sock)
// so that `wg show NAME` works. It is best effort: without permission to
// create the socket the node runs on without it.
func (n *Node) startUAPI() {
	name := n.cfg.TUN
	if name == "" {
		name = "weft-" + n.cert.NodeID.String()[:10]
	}
	f, err := ipc.UAPIOpen(name)
	if err != nil {
		// In TUN mode users expect `wg show NAME`; say why it will not work
		// (often: another node already serves that name, e.g. in another
		// network namespace, since /var/run/wireguard is shared).
		log := n.logger.Debug
		if n.cfg.TUN != "" {
			log = n.logger.Warn
		}
		log("no UAPI socket: `wg show` will not see this node", "name", name, "err", err)
		return
	}
	ln, err := ipc.UAPIListen(name, f)
	if err != nil {
		f.Close()
		n.logger.Debug("no UAPI socket", "name", name, "err", err)
		return
	}
	n.uapi, n.uapiName = ln, name
	dev := n.tun.Device()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.wg.Add(1)
			go func() {
				defer n.wg.Done()
				dev.IpcHandle(c)
			}()
		}
	}()
}
