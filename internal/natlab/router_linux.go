//go:build linux

package natlab

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"
)

// NAT routers. A Router is a namespace with one leg ("wan") on a Switch,
// the public internet, and a bridge ("lan0") for a private LAN that hosts
// plug into. Its nftables ruleset (table ip natlab) makes it behave as one
// of the RFC 4787 NAT types below. Mappings are UDP; TCP is masqueraded
// the ordinary way (and blocked by nothing).
//
// How each type is made, and what this machine's kernel does with it:
//
//   - PortRestricted: `masquerade`. Linux keeps the host's source port when
//     it is free, and one conntrack entry per (host:port, remote:port)
//     shares that port, so mapping is endpoint-independent; only replies
//     to a flow conntrack knows pass, so filtering is address-and-port-
//     dependent.
//   - Symmetric: `masquerade random`: every new flow gets a random port, so
//     mapping is endpoint-dependent (filtering address-and-port-dependent).
//   - FullCone: PortRestricted plus a dynamic map, cone, from mapped port
//     to inner host:port. A filter chain at postrouting priority srcnat+10
//     (after masquerade has chosen the port) learns
//     `ct reply proto-dst : ct original ip saddr . ct original proto-src`
//     for every outbound UDP flow; prerouting DNATs any inbound UDP packet
//     whose destination port is in the map back to its host:port; forward
//     accepts packets so DNATed (`ct status dnat`). Endpoint-independent
//     mapping and filtering.
//   - AddressRestricted: FullCone's map, but forward accepts a DNATed
//     packet only if its source address is in a dynamic set, contacted, of
//     (inner host, remote address) pairs that the forward chain fills from
//     outbound packets. Endpoint-independent mapping, address-dependent
//     filtering. (Conntrack alone cannot do this: it matches whole
//     5-tuples. The set is keyed by host so that two hosts on one LAN do
//     not open doors for each other.)
//   - UDPBlocked: forward drops UDP both ways.
//
// On every type the router drops UDP addressed to itself from the WAN
// instead of answering with ICMP port unreachable, as home routers do, so
// a refused probe is silent.
//
// Learned entries (conntrack, cone, contacted) time out after
// MappingTimeout without traffic; FlushMappings forgets them at once, as
// a NAT reboot or a CGN's short UDP timeouts would.
//
// RouterConfig.PortMapping adds NAT-PMP port mapping by miniupnpd, with a
// table of its own beside this one (portmap_linux.go).

// NATType is the behaviour of a Router.
type NATType int

// NAT types.
const (
	FullCone          NATType = iota + 1 // endpoint-independent mapping and filtering
	AddressRestricted                    // endpoint-independent mapping, address-dependent filtering
	PortRestricted                       // endpoint-independent mapping, address-and-port-dependent filtering
	Symmetric                            // endpoint-dependent mapping
	UDPBlocked                           // no UDP in or out
)

// NATTypes lists every NATType, for table tests.
var NATTypes = []NATType{FullCone, AddressRestricted, PortRestricted, Symmetric, UDPBlocked}

func (n NATType) String() string {
	switch n {
	case FullCone:
		return "full-cone"
	case AddressRestricted:
		return "address-restricted"
	case PortRestricted:
		return "port-restricted"
	case Symmetric:
		return "symmetric"
	case UDPBlocked:
		return "udp-blocked"
	}
	return fmt.Sprintf("NATType(%d)", int(n))
}

// MappingTimeout is how long a router keeps a learned cone mapping or
// contacted address without traffic. (Conntrack's own UDP timeouts, 30 s
// unreplied and 120 s replied, bound the mappings of every type.)
const MappingTimeout = "120s"

// Interface names inside a router namespace and on hosts.
const (
	routerWAN = "wan"
	routerLAN = "lan0"
	hostDev   = "eth0"
)

// RouterConfig configures a Router.
type RouterConfig struct {
	// Type is the NAT behaviour. It must be set.
	Type NATType

	// Public is the router's address on the switch, with the switch
	// segment's prefix length (e.g. 203.0.113.10/24). It must be IPv4.
	Public netip.Prefix

	// LAN is the router's address on its LAN, with the LAN's prefix length
	// (e.g. 10.0.1.1/24). Hosts get addresses in that prefix. It must be
	// IPv4.
	LAN netip.Prefix

	// PortMapping makes the router offer NAT-PMP port mapping (RFC 6886)
	// on its LAN address, port NATPMPPort, as home routers do, by running
	// miniupnpd in its namespace (see portmap_linux.go). Public must then
	// be an address miniupnpd accepts as public: not private, shared
	// (100.64/10) or reserved, documentation prefixes such as
	// 203.0.113.0/24 included. The test is skipped if miniupnpd is not
	// installed (NeedMiniupnpd). False means no port mapping: requests to
	// port 5351 go unanswered.
	PortMapping bool
}

// Router is a NAT between a Switch and a private LAN.
type Router struct {
	NS     *Namespace
	Type   NATType
	Public netip.Addr   // address on the switch: what hosts behind it are mapped to
	LAN    netip.Prefix // the router's address on the LAN, with the LAN's prefix length

	// PortMapper is the miniupnpd process of a router with
	// RouterConfig.PortMapping, nil without.
	PortMapper *Process

	portMapping bool // RouterConfig.PortMapping

	mu    sync.Mutex            // guards hosts, ports
	hosts map[*Namespace]string // attached hosts and their bridge port
	ports int
}

// Router creates a NAT router named short: a namespace attached to sw by
// its "wan" interface, with a bridge for its LAN, IP forwarding and the
// nftables rules of cfg.Type, and with cfg.PortMapping a NAT-PMP server
// that is ready when Router returns. It skips t if nft (or, with
// PortMapping, miniupnpd) is not installed.
func (l *Lab) Router(t testing.TB, short string, sw *Switch, cfg RouterConfig) *Router {
	t.Helper()
	Need(t, "nft")
	if cfg.PortMapping {
		NeedMiniupnpd(t)
	}
	if cfg.Type < FullCone || cfg.Type > UDPBlocked {
		t.Fatalf("natlab: router %s: unknown NAT type %v", short, cfg.Type)
	}
	if !cfg.Public.Addr().Is4() || !cfg.LAN.Addr().Is4() {
		t.Fatalf("natlab: router %s: Public (%v) and LAN (%v) must be IPv4 prefixes", short, cfg.Public, cfg.LAN)
	}
	if cfg.PortMapping {
		for _, p := range reservedForMiniupnpd {
			if p.Contains(cfg.Public.Addr()) {
				t.Fatalf("natlab: router %s: PortMapping needs a public address miniupnpd accepts, and %v is in the reserved prefix %v; use one outside the private, shared and documentation prefixes (e.g. 11.0.0.0/24)", short, cfg.Public.Addr(), p)
			}
		}
	}
	r := &Router{NS: l.Namespace(t, short), Type: cfg.Type, Public: cfg.Public.Addr(), LAN: cfg.LAN,
		portMapping: cfg.PortMapping, hosts: map[*Namespace]string{}}
	sw.Attach(t, End{NS: r.NS, Dev: routerWAN, Addrs: []string{cfg.Public.String()}})
	r.NS.IP(t, "link", "add", routerLAN, "type", "bridge")
	r.NS.AddAddr(t, routerLAN, cfg.LAN.String())
	r.NS.IP(t, "link", "set", routerLAN, "up")
	r.NS.Sysctl(t, "net.ipv4.ip_forward", "1")
	r.nft(t, r.ruleset())
	if cfg.PortMapping {
		r.startPortMapping(t)
	}
	return r
}

func (r *Router) String() string { return fmt.Sprintf("%s (%v, %v)", r.NS, r.Type, r.Public) }

// ruleset is the router's nftables configuration.
func (r *Router) ruleset() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	cone := r.Type == FullCone || r.Type == AddressRestricted
	masq := "masquerade"
	if r.Type == Symmetric {
		masq = "masquerade random"
	}
	w("table ip natlab {")
	if cone {
		w("  map cone { type inet_service : ipv4_addr . inet_service; flags dynamic,timeout; timeout %s; }", MappingTimeout)
	}
	if r.Type == AddressRestricted {
		w("  set contacted { type ipv4_addr . ipv4_addr; flags dynamic,timeout; timeout %s; }", MappingTimeout)
	}
	w("  chain prerouting {")
	w("    type nat hook prerouting priority dstnat; policy accept;")
	if cone {
		w("    iifname %q meta l4proto udp dnat ip to udp dport map @cone", routerWAN)
	}
	w("  }")
	w("  chain postrouting {")
	w("    type nat hook postrouting priority srcnat; policy accept;")
	w("    oifname %q %s", routerWAN, masq)
	w("  }")
	if cone {
		// After masquerade chose the mapped port: learn it.
		w("  chain learn {")
		w("    type filter hook postrouting priority srcnat + 10; policy accept;")
		w("    oifname %q meta l4proto udp ct direction original update @cone { ct reply proto-dst : ct original ip saddr . ct original proto-src }", routerWAN)
		w("  }")
	}
	w("  chain input {")
	w("    type filter hook input priority filter; policy accept;")
	w("    iifname %q meta l4proto udp drop", routerWAN)
	w("  }")
	// Not "fwd": a keyword to nft.
	w("  chain forward {")
	w("    type filter hook forward priority filter; policy drop;")
	if r.Type == UDPBlocked {
		w("    meta l4proto udp drop")
	}
	if r.Type == AddressRestricted {
		w("    iifname %q oifname %q meta l4proto udp update @contacted { ip saddr . ip daddr }", routerLAN, routerWAN)
	}
	w("    iifname %q oifname %q accept", routerLAN, routerWAN)
	// Hosts on one LAN reach each other (bridged traffic passes this
	// chain where br_netfilter is loaded).
	w("    iifname %q oifname %q accept", routerLAN, routerLAN)
	w("    ct state established,related accept")
	switch r.Type {
	case FullCone:
		w("    iifname %q ct status dnat accept", routerWAN)
	case AddressRestricted:
		w("    iifname %q ct status dnat ip daddr . ip saddr @contacted accept", routerWAN)
	}
	if r.portMapping {
		// Accepted by a port mapping (portmap_linux.go).
		w("    iifname %q meta mark %#x accept", routerWAN, portMapMark)
	}
	w("  }")
	w("}")
	return b.String()
}

// nft loads a ruleset (or runs commands) in the router namespace.
func (r *Router) nft(t testing.TB, script string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	cmd := r.NS.Command(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if res := r.NS.RunCmd(cmd); res.Err != nil {
		t.Fatalf("natlab: %s: nft -f - failed: %v\nscript:\n%s", r.NS, res, script)
	}
}

// Rules returns the router's live ruleset (`nft list ruleset`), with the
// learned map and set entries, for logs.
func (r *Router) Rules(t testing.TB) string {
	t.Helper()
	return r.NS.MustRun(t, "nft", "list", "ruleset")
}

// Host creates a namespace named short on the router's LAN at addr, with a
// default route through the router.
func (r *Router) Host(t testing.TB, short string, addr netip.Addr) *Namespace {
	t.Helper()
	ns := r.NS.lab.Namespace(t, short)
	r.Attach(t, ns, addr)
	return ns
}

// Attach plugs ns into the router's LAN: an interface "eth0" at addr (in
// the LAN's prefix) and a default route through the router. ns must have
// no eth0 (Detach it from its previous LAN first, or use Move).
func (r *Router) Attach(t testing.TB, ns *Namespace, addr netip.Addr) {
	t.Helper()
	if !r.LAN.Contains(addr) || addr == r.LAN.Addr() {
		t.Fatalf("natlab: %s: host address %v is not a free address of the LAN %v", r.NS, addr, r.LAN.Masked())
	}
	r.mu.Lock()
	r.ports++
	port := fmt.Sprintf("h%d", r.ports)
	r.hosts[ns] = port
	r.mu.Unlock()
	r.NS.lab.Veth(t,
		End{NS: ns, Dev: hostDev, Addrs: []string{netip.PrefixFrom(addr, r.LAN.Bits()).String()}},
		End{NS: r.NS, Dev: port})
	r.NS.IP(t, "link", "set", port, "master", routerLAN)
	ns.IP(t, "route", "add", "default", "via", r.LAN.Addr().String())
}

// Detach unplugs ns from the router's LAN (deleting its eth0, and with it
// its address and default route). Sockets bound to the wildcard address
// survive and work again once ns is attached elsewhere.
func (r *Router) Detach(t testing.TB, ns *Namespace) {
	t.Helper()
	r.mu.Lock()
	_, ok := r.hosts[ns]
	delete(r.hosts, ns)
	r.mu.Unlock()
	if !ok {
		t.Fatalf("natlab: %s is not attached to %s", ns, r.NS)
	}
	ns.IP(t, "link", "del", hostDev)
}

// Move takes ns from r's LAN to to's, at addr: a laptop changing networks.
func (r *Router) Move(t testing.TB, ns *Namespace, to *Router, addr netip.Addr) {
	t.Helper()
	r.Detach(t, ns)
	to.Attach(t, ns, addr)
}

// FlushMappings makes the router forget every mapping: its connection
// tracking table and the learned cone and contacted entries. Packets of
// existing flows then create new mappings (with masquerade random, on new
// ports), and inbound packets of forgotten flows are dropped.
func (r *Router) FlushMappings(t testing.TB) {
	t.Helper()
	err := r.NS.Do(func() error { return netlink.ConntrackTableFlush(netlink.ConntrackTable) })
	if err != nil {
		t.Fatalf("natlab: %s: flushing conntrack: %v", r.NS, err)
	}
	var script bytes.Buffer
	if r.Type == FullCone || r.Type == AddressRestricted {
		script.WriteString("flush map ip natlab cone\n")
	}
	if r.Type == AddressRestricted {
		script.WriteString("flush set ip natlab contacted\n")
	}
	if script.Len() > 0 {
		r.nft(t, script.String())
	}
}

// SetType makes the router behave as typ from now on: a NAT whose
// configuration changes under its hosts (who see no change of their own
// network). Its ruleset is replaced at once; the mappings it has made
// (conntrack entries, learned cone entries) stay until they time out or
// are forgotten (FlushMappings, ForgetMappings), so flows under way
// keep their mapped ports.
func (r *Router) SetType(t testing.TB, typ NATType) {
	t.Helper()
	if typ < FullCone || typ > UDPBlocked {
		t.Fatalf("natlab: router %s: unknown NAT type %v", r.NS, typ)
	}
	r.Type = typ
	r.nft(t, "delete table ip natlab\n"+r.ruleset())
}

// ForgetMappings makes the router forget the mappings of its UDP flows
// whose original destination forget accepts (their conntrack entries):
// the next packet of such a flow gets a new mapping, made by the router's
// current type (Linux gives it the mapped port of another flow from the
// same host and port, if one is left). It returns how many were forgotten.
func (r *Router) ForgetMappings(t testing.TB, forget func(dst netip.AddrPort) bool) uint {
	t.Helper()
	var n uint
	err := r.NS.Do(func() (err error) {
		n, err = netlink.ConntrackDeleteFilters(netlink.ConntrackTable, netlink.FAMILY_V4, flowFilter(forget))
		return err
	})
	if err != nil {
		t.Fatalf("natlab: %s: forgetting mappings: %v", r.NS, err)
	}
	return n
}

// flowFilter matches UDP conntrack flows by their original destination.
type flowFilter func(dst netip.AddrPort) bool

func (f flowFilter) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	ip, ok := netip.AddrFromSlice(flow.Forward.DstIP)
	return ok && flow.Forward.Protocol == 17 && f(netip.AddrPortFrom(ip.Unmap(), flow.Forward.DstPort))
}
