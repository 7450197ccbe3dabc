//go:build linux

package natlab

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Port mapping. A Router with RouterConfig.PortMapping runs miniupnpd
// (Debian package miniupnpd-nftables) in its namespace with NAT-PMP
// (RFC 6886, and PCP, which the same daemon answers on the same port) on
// its LAN address, port 5351, UPnP IGD off, secure mode on (a host maps
// ports to itself only) and one permission rule: LAN hosts may map
// external ports 1024-65535 to their own ports 1024-65535.
//
// miniupnpd-nftables 2.3.1 writes its rules into an inet table (its family
// is fixed); it cannot share the router's `ip natlab` table, so the router
// gets a second one, `inet miniupnpd`:
//
//   - chain prerouting, a nat chain at priority dstnat - 10, before the
//     cone map of the router's own prerouting chain, jumps to
//     prerouting_miniupnpd, where miniupnpd puts one
//     `iif "wan" ... th dport EXT dnat ip to HOST:PORT` rule per mapping;
//   - chain forward, a filter chain at priority filter - 10 (policy
//     accept), marks each packet from the WAN with portMapMark, jumps to
//     chain miniupnpd, where miniupnpd puts one `accept` rule per mapping,
//     and clears the mark if none matched. The router's own forward chain
//     (policy drop, after this one) accepts marked packets: the verdict of
//     one table's chain cannot accept a packet for another's, so the mark
//     carries it.
//
// Answers to the mapped port go back through conntrack, which undoes the
// DNAT (their source becomes the public address and the external port),
// so a mapping works on every NAT type, Symmetric's `masquerade random`
// included; UDPBlocked still drops UDP (a TCP mapping works there).
// Mappings live in miniupnpd and its nft rules: FlushMappings and SetType
// keep them.
//
// miniupnpd refuses to map anything when the address of its WAN interface
// is private or reserved: 10/8, 100.64/10, 172.16/12, 192.168/16, the
// documentation prefixes 192.0.2/24, 198.51.100/24 and 203.0.113/24, and
// others (reservedForMiniupnpd). A router with PortMapping therefore needs
// a Public address outside them (the test uses 11.0.0.0/24); the lab is
// closed, so a routable address reaches nothing outside it.

// NATPMPPort is the UDP port a Router with PortMapping answers NAT-PMP
// (and PCP) requests on, at its LAN address.
const NATPMPPort = 5351

// portMapMark marks packets from the WAN that miniupnpd's forward chain
// accepted, for the router's own forward chain.
const portMapMark = 0x504d // "PM"

// miniupnpdTable is the nftables table (family inet) miniupnpd writes to.
const miniupnpdTable = "miniupnpd"

// reservedForMiniupnpd lists the prefixes whose addresses miniupnpd
// 2.3.1 will not map ports on (addr_is_reserved in its getifaddr.c).
var reservedForMiniupnpd = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("192.31.196.0/24"),
	netip.MustParsePrefix("192.52.193.0/24"),
	netip.MustParsePrefix("192.88.99.0/24"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("192.175.48.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("240.0.0.0/4"),
}

// miniupnpdPath returns where miniupnpd is installed, or "" if it is not.
// It lives in /usr/sbin, which is not on every PATH.
func miniupnpdPath() string {
	if p, err := exec.LookPath("miniupnpd"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/miniupnpd"); err == nil {
		return "/usr/sbin/miniupnpd"
	}
	return ""
}

// NeedMiniupnpd skips t unless miniupnpd (with its nftables backend) is
// installed, so a test can skip before it builds a lab for it.
func NeedMiniupnpd(t testing.TB) {
	t.Helper()
	if miniupnpdPath() == "" {
		t.Skip("natlab: miniupnpd not installed (`make setup` installs it; Debian package miniupnpd-nftables); skipped")
	}
}

// portMapRuleset is the table miniupnpd fills, with the base chains that
// send packets through its chains.
func portMapRuleset() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("table inet %s {", miniupnpdTable)
	w("  chain miniupnpd {")
	w("  }")
	w("  chain prerouting_miniupnpd {")
	w("  }")
	w("  chain postrouting_miniupnpd {")
	w("  }")
	w("  chain prerouting {")
	w("    type nat hook prerouting priority dstnat - 10; policy accept;")
	w("    iifname %q jump prerouting_miniupnpd", routerWAN)
	w("  }")
	w("  chain forward {")
	w("    type filter hook forward priority filter - 10; policy accept;")
	w("    iifname %q meta mark set %#x jump miniupnpd", routerWAN, portMapMark)
	w("    iifname %q meta mark set 0", routerWAN)
	w("  }")
	w("}")
	return b.String()
}

// startPortMapping creates miniupnpd's table and runs it.
func (r *Router) startPortMapping(t testing.TB) {
	t.Helper()
	r.nft(t, portMapRuleset())
	dir := t.TempDir()
	conf := strings.Join([]string{
		"ext_ifname=" + routerWAN,
		"listening_ip=" + routerLAN,
		"ipv6_disable=yes",
		"enable_natpmp=yes",
		"enable_upnp=no",
		"secure_mode=yes",
		"lease_file=" + filepath.Join(dir, "leases"),
		"upnp_table_name=" + miniupnpdTable,
		"upnp_nat_table_name=" + miniupnpdTable,
		"upnp_forward_chain=miniupnpd",
		"upnp_nat_chain=prerouting_miniupnpd",
		"upnp_nat_postrouting_chain=postrouting_miniupnpd",
		"allow 1024-65535 " + r.LAN.Masked().String() + " 1024-65535",
		"deny 0-65535 0.0.0.0/0 0-65535",
	}, "\n") + "\n"
	confPath := filepath.Join(dir, "miniupnpd.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatalf("natlab: %s: %v", r.NS, err)
	}
	// -d: in the foreground, logging (at debug level) to stderr.
	r.PortMapper = r.NS.Start(t, r.NS.Short()+"-miniupnpd", miniupnpdPath(),
		"-d", "-f", confPath, "-P", filepath.Join(dir, "miniupnpd.pid"))
	r.PortMapper.WaitOutput(t, fmt.Sprintf("Listening for NAT-PMP/PCP traffic on port %d", NATPMPPort), 10*time.Second)
}
