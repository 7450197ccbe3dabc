//go:build !linux

package platform

import "net/netip"

// DNS is the OS resolver configuration weft installed; on this OS there is
// none (see ConfigureDNS).
type DNS struct{}

// ConfigureDNS fails on this OS with an error matching errors.ErrUnsupported.
func ConfigureDNS(cfg DNSConfig) (*DNS, error) {
	return nil, &unsupportedError{what: "configuring the OS resolver", hint: "run with --accept-dns=false and point your resolver at weft's DNS server yourself"}
}

// Mode is "" on this OS.
func (d *DNS) Mode() string { return "" }

// Close does nothing on this OS.
func (d *DNS) Close() error { return nil }

// SystemUpstreams returns the nameservers of /etc/resolv.conf where the
// system has one.
func SystemUpstreams() ([]netip.AddrPort, error) {
	return resolvConfUpstreams(resolvConfPath)
}
