//go:build !linux

package nat

import (
	"errors"
	"net/netip"
)

// DefaultGateway returns the gateway of the IPv4 default route. It is only
// implemented on Linux; elsewhere, set PortMapperConfig.Gateway.
func DefaultGateway() (netip.Addr, error) {
	return netip.Addr{}, errors.New("default gateway: not implemented on this platform; configure the gateway explicitly")
}
