//go:build linux

package platform

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/godbus/dbus/v5"
)

// systemd-resolved's D-Bus names (org.freedesktop.resolve1(5)).
const (
	resolvedName    = "org.freedesktop.resolve1"
	resolvedPath    = dbus.ObjectPath("/org/freedesktop/resolve1")
	resolvedManager = "org.freedesktop.resolve1.Manager"
	resolvedLink    = "org.freedesktop.resolve1.Link"
)

// dialSystemBus connects to the system bus; tests point it at a private bus.
var dialSystemBus = func() (*dbus.Conn, error) { return dbus.ConnectSystemBus() }

// resolvedTimeout bounds each exchange with systemd-resolved.
const resolvedTimeout = 5 * time.Second

// errNoResolved means systemd-resolved is not on the system bus.
var errNoResolved = errors.New("systemd-resolved is not running")

// resolved is a connection to systemd-resolved. Close it.
type resolved struct {
	conn *dbus.Conn
	obj  dbus.BusObject
}

// connectResolved connects to systemd-resolved, or returns an error
// (errNoResolved when the bus works but resolved is not on it).
func connectResolved() (*resolved, error) {
	conn, err := dialSystemBus()
	if err != nil {
		return nil, fmt.Errorf("connect to the system bus: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), resolvedTimeout)
	defer cancel()
	var has bool
	if err := conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.NameHasOwner", 0, resolvedName).Store(&has); err != nil {
		conn.Close()
		return nil, fmt.Errorf("ask the system bus for %s: %w", resolvedName, err)
	}
	if !has {
		conn.Close()
		return nil, errNoResolved
	}
	return &resolved{conn: conn, obj: conn.Object(resolvedName, resolvedPath)}, nil
}

func (r *resolved) Close() error { return r.conn.Close() }

func (r *resolved) call(method string, args ...any) *dbus.Call {
	ctx, cancel := context.WithTimeout(context.Background(), resolvedTimeout)
	defer cancel()
	return r.obj.CallWithContext(ctx, resolvedManager+"."+method, 0, args...)
}

// resolvedAddr is resolved's (iay): address family and bytes.
type resolvedAddr struct {
	Family  int32
	Address []byte
}

// resolvedDomain is resolved's (sb): a domain and whether it is for routing
// only (not a search domain).
type resolvedDomain struct {
	Domain      string
	RoutingOnly bool
}

// configureLink gives the link weft's servers and domain.
func (r *resolved) configureLink(ifindex int, servers []netip.Addr, domain string, search bool) error {
	addrs := make([]resolvedAddr, 0, len(servers))
	for _, s := range servers {
		s = s.Unmap()
		fam := int32(2) // AF_INET
		if s.Is6() {
			fam = 10 // AF_INET6
		}
		addrs = append(addrs, resolvedAddr{Family: fam, Address: s.AsSlice()})
	}
	if err := r.call("SetLinkDNS", int32(ifindex), addrs).Err; err != nil {
		return fmt.Errorf("systemd-resolved SetLinkDNS: %w", err)
	}
	if err := r.call("SetLinkDomains", int32(ifindex), []resolvedDomain{{Domain: domain, RoutingOnly: !search}}).Err; err != nil {
		return fmt.Errorf("systemd-resolved SetLinkDomains: %w", err)
	}
	return nil
}

// tuneLink keeps the link from taking names outside the domain and from
// LLMNR, mDNS and DNSSEC (the overlay domain is not signed). Older resolved
// versions lack some of these calls; their failure is returned for logging
// only.
func (r *resolved) tuneLink(ifindex int) error {
	var errs []error
	if err := r.call("SetLinkDefaultRoute", int32(ifindex), false).Err; err != nil {
		errs = append(errs, fmt.Errorf("SetLinkDefaultRoute: %w", err))
	}
	for _, m := range []string{"SetLinkLLMNR", "SetLinkMulticastDNS", "SetLinkDNSSEC"} {
		if err := r.call(m, int32(ifindex), "no").Err; err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", m, err))
		}
	}
	return errors.Join(errs...)
}

func (r *resolved) revertLink(ifindex int) error {
	if err := r.call("RevertLink", int32(ifindex)).Err; err != nil {
		return fmt.Errorf("systemd-resolved RevertLink: %w", err)
	}
	return nil
}

// upstreams returns the servers resolved forwards to: global ones and those
// of links that take names in general (DefaultRoute). resolved's stub
// addresses are left out.
func (r *resolved) upstreams() ([]netip.AddrPort, error) {
	type serverEx struct {
		Ifindex int32
		Family  int32
		Address []byte
		Port    uint16
		Name    string
	}
	var list []serverEx
	v, err := r.obj.GetProperty(resolvedManager + ".DNSEx")
	if err == nil {
		err = v.Store(&list)
	}
	if err != nil { // before systemd 246
		var old []struct {
			Ifindex int32
			Family  int32
			Address []byte
		}
		v, err2 := r.obj.GetProperty(resolvedManager + ".DNS")
		if err2 == nil {
			err2 = v.Store(&old)
		}
		if err2 != nil {
			return nil, fmt.Errorf("systemd-resolved DNS servers: %w", errors.Join(err, err2))
		}
		list = list[:0]
		for _, s := range old {
			list = append(list, serverEx{Ifindex: s.Ifindex, Family: s.Family, Address: s.Address})
		}
	}
	defaultRoute := make(map[int32]bool)
	var ups []netip.AddrPort
	for _, s := range list {
		a, ok := netip.AddrFromSlice(s.Address)
		if !ok || isResolvedStub(a) {
			continue
		}
		if s.Ifindex != 0 {
			dr, seen := defaultRoute[s.Ifindex]
			if !seen {
				dr = r.linkDefaultRoute(s.Ifindex)
				defaultRoute[s.Ifindex] = dr
			}
			if !dr {
				continue
			}
			if a.Is6() && (a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast()) {
				a = a.WithZone(strconv.Itoa(int(s.Ifindex)))
			}
		}
		port := s.Port
		if port == 0 {
			port = 53
		}
		if ap := netip.AddrPortFrom(a, port); !containsAddrPort(ups, ap) {
			ups = append(ups, ap)
		}
	}
	return ups, nil
}

// linkDefaultRoute reports whether resolved sends names outside any routing
// domain to the link's servers; true where it cannot tell.
func (r *resolved) linkDefaultRoute(ifindex int32) bool {
	var path dbus.ObjectPath
	if err := r.call("GetLink", ifindex).Store(&path); err != nil {
		return true
	}
	v, err := r.conn.Object(resolvedName, path).GetProperty(resolvedLink + ".DefaultRoute")
	if err != nil {
		return true
	}
	dr, ok := v.Value().(bool)
	return !ok || dr
}

func containsAddrPort(s []netip.AddrPort, a netip.AddrPort) bool {
	for _, x := range s {
		if x == a {
			return true
		}
	}
	return false
}
