//go:build linux

package platform

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// TUN is a kernel TUN interface configured for the overlay. Hand Device to
// the wireguard-go device; Close removes the interface.
type TUN struct {
	dev      tun.Device
	name     string
	index    int
	offloads string
	nl       *netlink.Handle // netlink socket in the interface's namespace
	logger   *slog.Logger

	closeOnce sync.Once
	closeErr  error // the result of the first Close
}

// CreateTUN creates and configures the TUN interface cfg describes in the
// calling thread's network namespace. It needs CAP_NET_ADMIN. On failure
// nothing it did is left behind.
func CreateTUN(cfg TUNConfig) (*TUN, error) {
	cfg = cfg.withDefaults()
	if err := cfg.check(); err != nil {
		return nil, err
	}
	// Every socket and the TUN itself belong to the namespace of the thread
	// that creates them: stay on one thread throughout.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	nl, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink socket: %w", err)
	}
	t := &TUN{nl: nl, logger: cfg.Logger.With("tun", cfg.Name)}
	if err := t.removeLeftover(cfg.Name); err != nil {
		nl.Close()
		return nil, err
	}
	dev, err := tun.CreateTUN(cfg.Name, cfg.MTU)
	if err != nil {
		nl.Close()
		return nil, fmt.Errorf("create TUN %s: %w%s", cfg.Name, err, permissionHint(err))
	}
	t.dev = dev
	if err := t.configure(cfg); err != nil {
		t.Close()
		return nil, err
	}
	t.logger.Info("TUN interface up", "index", t.index, "mtu", cfg.MTU, "addrs", cfg.Addrs, "routes", cfg.Routes, "offloads", t.offloads)
	return t, nil
}

// removeLeftover deletes a TUN named name left by an earlier run, and
// refuses any other kind of interface of that name.
func (t *TUN) removeLeftover(name string) error {
	l, err := t.nl.LinkByName(name)
	if err != nil {
		if _, ok := err.(netlink.LinkNotFoundError); ok {
			return nil
		}
		return fmt.Errorf("look up interface %s: %w%s", name, err, permissionHint(err))
	}
	tt, ok := l.(*netlink.Tuntap)
	if !ok {
		return fmt.Errorf("interface %s exists and is a %s, not a TUN: weft will not delete it; choose another name with --tun", name, l.Type())
	}
	if tt.Mode == netlink.TUNTAP_MODE_TAP {
		return fmt.Errorf("interface %s exists and is a TAP, not a TUN: weft will not delete it; choose another name with --tun", name)
	}
	t.logger.Warn("deleting leftover TUN interface of the same name (from a run that crashed, a weft still running, or a persistent one)",
		"index", l.Attrs().Index, "persistent", !tt.NonPersist, "owner", tt.Owner)
	if err := t.nl.LinkDel(l); err != nil {
		return fmt.Errorf("delete leftover TUN %s: %w", name, err)
	}
	return nil
}

// configure sets addresses, link state and routes on the new interface.
func (t *TUN) configure(cfg TUNConfig) error {
	name, err := t.dev.Name()
	if err != nil {
		return fmt.Errorf("TUN name: %w", err)
	}
	t.name = name
	l, err := t.nl.LinkByName(name)
	if err != nil {
		return fmt.Errorf("look up new TUN %s: %w", name, err)
	}
	t.index = l.Attrs().Index
	if l.Attrs().MTU != cfg.MTU { // tun.CreateTUN sets it; make sure
		if err := t.nl.LinkSetMTU(l, cfg.MTU); err != nil {
			return fmt.Errorf("set MTU %d on %s: %w", cfg.MTU, name, err)
		}
	}
	onLink := make(map[netip.Prefix]bool)
	for _, p := range cfg.Addrs {
		a := &netlink.Addr{IPNet: ipNet(p)}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD // usable at once: nobody else is on this link
		}
		if err := t.nl.AddrAdd(l, a); err != nil {
			return fmt.Errorf("add address %v to %s: %w%s", p, name, err, ipv6Hint(p, err))
		}
		onLink[p.Masked()] = true
	}
	if err := t.nl.LinkSetUp(l); err != nil {
		return fmt.Errorf("bring %s up: %w", name, err)
	}
	for _, p := range cfg.Routes {
		p = p.Masked()
		if onLink[p] {
			t.logger.Debug("route already on-link through an address", "route", p)
			continue
		}
		r := &netlink.Route{LinkIndex: t.index, Dst: ipNet(p), Protocol: unix.RTPROT_STATIC}
		if p.Addr().Is4() {
			r.Scope = netlink.SCOPE_LINK
		}
		if err := t.nl.RouteAdd(r); err != nil {
			if errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("add route %v via %s: a route to %v already exists (`ip route show %v`); remove it or leave it out of the routes", p, name, p, p)
			}
			return fmt.Errorf("add route %v via %s: %w", p, name, err)
		}
	}
	t.offloads = describeOffloads(t.dev, name)
	return nil
}

// Device is the TUN for the wireguard-go device. Closing it (directly or
// through the wireguard-go device) makes the kernel delete the interface.
func (t *TUN) Device() tun.Device { return t.dev }

// Name is the interface's name.
func (t *TUN) Name() string { return t.name }

// Index is the interface's index.
func (t *TUN) Index() int { return t.index }

// Offloads describes the segmentation offloads in effect, e.g.
// "GSO on (TCP, UDP), GRO on (TCP, UDP), 128 packets per batch". GSO is the
// kernel handing weft large TCP/UDP segments to split; GRO is weft
// coalescing received packets before writing them to the kernel. Both need
// the kernel to accept the virtio-net header.
func (t *TUN) Offloads() string { return t.offloads }

// Close closes the device and deletes the interface with its addresses and
// routes. It is idempotent and safe after the device alone was closed.
func (t *TUN) Close() error {
	t.closeOnce.Do(func() { t.closeErr = t.close() })
	return t.closeErr
}

func (t *TUN) close() error {
	var errs []error
	if t.dev != nil {
		if err := t.dev.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
			errs = append(errs, fmt.Errorf("close TUN %s: %w", t.name, err))
		}
	}
	if t.index != 0 {
		// The kernel deletes a non-persistent TUN when the last descriptor
		// closes; a read in flight may hold it for a moment.
		if l, gone := t.waitGone(time.Second); !gone {
			t.logger.Info("TUN interface outlived its descriptor (persistent?); deleting it")
			if err := t.nl.LinkDel(l); err != nil {
				if _, ok := err.(netlink.LinkNotFoundError); !ok && !errors.Is(err, unix.ENODEV) {
					errs = append(errs, fmt.Errorf("delete TUN %s: %w", t.name, err))
				}
			}
		}
	}
	t.nl.Close()
	if len(errs) == 0 {
		t.logger.Info("TUN interface removed")
	}
	return errors.Join(errs...)
}

// waitGone waits up to d for the interface to disappear. It returns the
// link if it is still there.
func (t *TUN) waitGone(d time.Duration) (netlink.Link, bool) {
	deadline := time.Now().Add(d)
	for {
		l, err := t.nl.LinkByIndex(t.index)
		if err != nil || l.Attrs().Name != t.name {
			return nil, true // gone (an index is not reused at once)
		}
		if time.Now().After(deadline) {
			return l, false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func ipNet(p netip.Prefix) *net.IPNet {
	a := p.Addr().Unmap()
	bits := 128
	if a.Is4() {
		bits = 32
	}
	return &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(p.Bits(), bits)}
}

func permissionHint(err error) string {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return " (kernel TUN mode needs root or CAP_NET_ADMIN; run without --tun for userspace mode)"
	}
	return ""
}

func ipv6Hint(p netip.Prefix, err error) string {
	if p.Addr().Is6() && (errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM)) {
		return " (is IPv6 disabled? check sysctl net.ipv6.conf.all.disable_ipv6)"
	}
	return ""
}
