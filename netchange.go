package weft

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/weft-net/weft/trust"
)

// A node that changes networks (a laptop moving to another LAN, a new
// DHCP lease, a VPN coming up) keeps its socket when it listens on the
// wildcard address, but its advertised endpoints, its NAT mapping and the
// holes punched for its ICE paths are gone. Waiting for ICE consent to
// fail would leave the tunnels dead for half a minute; instead the node
// watches its addresses and default routes (netlink on Linux, polling
// elsewhere) and, when they change, advertises its new endpoints, re-
// registers with its rendezvous nodes, runs a netcheck and connects to
// every peer again. The peer's WireGuard roams to the new address once
// the new path carries a handshake, so TCP connections through the
// tunnel survive.
const (
	// netChangeSettle is how long the interfaces must stay quiet after a
	// change before the node acts (an interface comes up in steps:
	// link, address, routes).
	netChangeSettle = 300 * time.Millisecond
	// netChangePoll is the polling interval where no change notifications
	// exist.
	netChangePoll = 5 * time.Second
)

// watchNetwork reconnects the peers whenever the machine's network
// configuration changes (see netChangeSettle). Started by startNAT.
func (n *Node) watchNetwork() {
	defer n.wg.Done()
	events := make(chan struct{}, 1)
	if err := watchNetChanges(n.ctx, events); err != nil {
		n.logger.Debug("no network change notifications; polling", "err", err, "every", netChangePoll)
		go func() {
			t := time.NewTicker(netChangePoll)
			defer t.Stop()
			for {
				select {
				case <-n.ctx.Done():
					return
				case <-t.C:
					select {
					case events <- struct{}{}:
					default:
					}
				}
			}
		}()
	}
	last := n.netFingerprint()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-events:
		}
		// Wait until the changes stop.
		settle := time.NewTimer(netChangeSettle)
	quiet:
		for {
			select {
			case <-n.ctx.Done():
				settle.Stop()
				return
			case <-events:
				settle.Reset(netChangeSettle)
			case <-settle.C:
				break quiet
			}
		}
		fp := n.netFingerprint()
		if fp == last {
			continue
		}
		n.logger.Info("network changed", "was", last, "now", fp)
		last = fp
		n.networkChanged()
	}
}

// netFingerprint describes what of the machine's network configuration
// matters to the node's reachability: its unicast addresses (not the
// overlay's own) and its default routes.
func (n *Node) netFingerprint() string {
	own := n.certificate()
	var parts []string
	// Interfaces that cannot be listed leave only the routes.
	interfaceAddrs(func(ifc net.Interface, ip netip.Addr) {
		if ifc.Flags&net.FlagLoopback != 0 || ip.IsLoopback() || ip == own.IPv4 || ip == own.IPv6() {
			return
		}
		parts = append(parts, ifc.Name+"="+ip.String())
	})
	parts = append(parts, defaultRoutes()...)
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

// networkChanged brings the node's reachability up to date after a
// network change: endpoints and record, rendezvous registrations, the
// netcheck, and a new connect to every peer (whichever side initiated
// the current path: the peer cannot know this node moved).
func (n *Node) networkChanged() {
	if n.nat == nil {
		return
	}
	local := n.conn.LocalAddr()
	n.mu.Lock()
	if len(n.cfg.Endpoints) == 0 && local.Addr().IsUnspecified() {
		n.endpoints = advertiseEndpoints(local)
	}
	eps := n.endpoints
	n.mu.Unlock()
	if err := n.resignRecord(); err != nil {
		n.logger.Warn("network changed: could not sign a new record", "err", err)
	} else {
		n.goBackground(func(ctx context.Context) {
			ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if !n.publishOwn(ctx) {
				n.republishSoon()
			}
		})
	}
	if n.nat.mux != nil && local.Addr().IsUnspecified() {
		var hosts []netip.AddrPort
		for _, e := range eps {
			if e.Port() == local.Port() && !e.Addr().IsLoopback() && (local.Addr().Is6() || e.Addr().Is4()) {
				hosts = append(hosts, e)
			}
		}
		if err := n.nat.mux.SetLocalAddrs(hosts); err != nil {
			n.logger.Debug("network changed: ICE host addresses", "err", err)
		}
	}
	n.registerRendezvous(n.ctx)
	if n.nat.portmap != nil {
		n.nat.portmap.Refresh()
	}
	select {
	case n.nat.netChanged <- struct{}{}:
	default:
	}
	if n.nat.mux == nil {
		return
	}
	n.mu.Lock()
	recs := make([]*trust.NodeRecord, 0, len(n.peers))
	for _, p := range n.peers {
		recs = append(recs, p.rec)
	}
	n.mu.Unlock()
	n.logger.Info("network changed: reconnecting peers", "endpoints", eps, "peers", len(recs))
	for _, rec := range recs {
		n.goBackground(func(ctx context.Context) {
			if r := n.knownRecord(rec.Cert.NodeID); r != nil && r.Seq > rec.Seq {
				rec = r
			}
			if err := n.connect(ctx, rec); err != nil {
				n.logger.Info("reconnect after a network change failed", "name", rec.Cert.Name, "err", err)
			}
		})
	}
}
