//go:build linux

package weft

import (
	"context"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// watchNetChanges sends on events (without blocking) whenever an address
// or a route of the machine changes, until ctx is done.
func watchNetChanges(ctx context.Context, events chan<- struct{}) error {
	done := make(chan struct{})
	addrs := make(chan netlink.AddrUpdate, 16)
	routes := make(chan netlink.RouteUpdate, 16)
	if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{}); err != nil {
		close(done)
		return fmt.Errorf("subscribe to address changes: %w", err)
	}
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{}); err != nil {
		close(done)
		return fmt.Errorf("subscribe to route changes: %w", err)
	}
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case _, ok := <-addrs:
				if !ok {
					return
				}
			case _, ok := <-routes:
				if !ok {
					return
				}
			}
			select {
			case events <- struct{}{}:
			default:
			}
		}
	}()
	return nil
}

// defaultRoutes describes the machine's default routes ("via GW dev N").
func defaultRoutes() []string {
	var out []string
	for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
		rs, err := netlink.RouteList(nil, family)
		if err != nil {
			continue
		}
		for _, r := range rs {
			if r.Dst != nil {
				if ones, _ := r.Dst.Mask.Size(); ones != 0 {
					continue
				}
			}
			out = append(out, fmt.Sprintf("default=%v@%d", r.Gw, r.LinkIndex))
		}
	}
	return out
}
