package nat

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// DefaultGateway returns the gateway of the IPv4 default route. With
// several default routes it picks the one with the lowest metric.
func DefaultGateway() (netip.Addr, error) {
	rs, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("default gateway: list routes: %w", err)
	}
	var (
		best   netip.Addr
		bestPr int
	)
	for _, r := range rs {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		gw, ok := netip.AddrFromSlice(r.Gw)
		if !ok {
			// A multipath default route: take its first hop with a gateway.
			for _, nh := range r.MultiPath {
				if gw, ok = netip.AddrFromSlice(nh.Gw); ok {
					break
				}
			}
		}
		if gw = gw.Unmap(); !ok || !gw.Is4() || gw.IsUnspecified() {
			continue
		}
		if !best.IsValid() || r.Priority < bestPr {
			best, bestPr = gw, r.Priority
		}
	}
	if !best.IsValid() {
		return netip.Addr{}, errors.New("default gateway: no IPv4 default route via a gateway")
	}
	return best, nil
}
