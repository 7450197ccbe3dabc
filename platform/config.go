package platform

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"strings"
)

// Defaults for TUNConfig.
const (
	DefaultTUNName = "weft0"
	DefaultMTU     = 1420
)

// TUNConfig describes the kernel TUN interface CreateTUN brings up.
type TUNConfig struct {
	// Name is the interface name; "" means DefaultTUNName ("weft0").
	Name string
	// MTU of the interface; 0 means DefaultMTU (1420). With an IPv6 address
	// it must be at least 1280, the IPv6 minimum.
	MTU int
	// Addrs are the overlay addresses with the overlay's prefix length, e.g.
	// 100.92.49.235/10 and fd12:3456:789a::1/48: the prefix gives the on-link
	// route for the whole overlay. Nil means no addresses.
	Addrs []netip.Prefix
	// Routes are extra routes through the interface. A route equal to the
	// prefix of one of Addrs is skipped (the kernel already has it). Nil
	// means none.
	Routes []netip.Prefix
	// Logger receives the component's logs; nil discards them.
	Logger *slog.Logger
}

func (c TUNConfig) withDefaults() TUNConfig {
	if c.Name == "" {
		c.Name = DefaultTUNName
	}
	if c.MTU == 0 {
		c.MTU = DefaultMTU
	}
	c.Logger = componentLogger(c.Logger)
	return c
}

// check reports a configuration CreateTUN cannot apply.
func (c TUNConfig) check() error {
	if len(c.Name) >= 16 || strings.ContainsAny(c.Name, "/ \t\n%:") {
		return fmt.Errorf("TUN name %q is not a valid interface name (at most 15 characters, no '/', '%%', ':' or spaces)", c.Name)
	}
	if c.MTU < 576 || c.MTU > 65535 {
		return fmt.Errorf("TUN MTU %d is out of range (576 to 65535)", c.MTU)
	}
	for _, p := range c.Addrs {
		if !p.IsValid() || p.Addr().IsUnspecified() || p.Addr().Zone() != "" {
			return fmt.Errorf("TUN address %v is not a usable address with a prefix length", p)
		}
		if p.Addr().Is6() && !p.Addr().Is4In6() && c.MTU < 1280 {
			return fmt.Errorf("TUN MTU %d is below 1280, the IPv6 minimum, but the interface gets IPv6 address %v", c.MTU, p)
		}
	}
	for _, p := range c.Routes {
		if !p.IsValid() {
			return fmt.Errorf("TUN route %v is not a valid prefix", p)
		}
	}
	return nil
}

// DNSConfig describes how ConfigureDNS points the OS resolver at weft.
type DNSConfig struct {
	// Interface is the TUN interface the servers are reached through; it is
	// required with systemd-resolved (the settings are per link) and only
	// logged in resolv.conf mode.
	Interface string
	// Servers are weft's DNS servers (port 53). At least one is required; in
	// resolv.conf mode at most three are used.
	Servers []netip.Addr
	// Domain is the overlay domain, e.g. "weft.internal". Required.
	Domain string
	// Search also makes Domain a search domain, so that single-label names
	// ("api") resolve in the overlay; false means routing only: only names
	// under Domain go to weft.
	Search bool
	// StateDir holds the backup of /etc/resolv.conf for crash recovery
	// (resolv.conf.weft-backup). Required in resolv.conf mode; unused with
	// systemd-resolved.
	StateDir string
	// Logger receives the component's logs; nil discards them.
	Logger *slog.Logger
}

func (c DNSConfig) check() error {
	if len(c.Servers) == 0 {
		return errors.New("DNS configuration without servers: give weft's DNS server address")
	}
	for _, s := range c.Servers {
		if !s.IsValid() || s.IsUnspecified() {
			return fmt.Errorf("DNS server %v is not a usable address", s)
		}
	}
	d := strings.TrimSuffix(c.Domain, ".")
	if d == "" || strings.ContainsAny(d, " \t\n~#;") || strings.HasPrefix(d, ".") {
		return fmt.Errorf("DNS domain %q is not a domain name", c.Domain)
	}
	return nil
}

// componentLogger returns l (or a discarding logger) tagged with this
// package's component.
func componentLogger(l *slog.Logger) *slog.Logger {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return l.With("component", "platform")
}

// unsupportedError is the error of an ability this OS lacks; it matches
// errors.ErrUnsupported.
type unsupportedError struct {
	what, hint string
}

func (e *unsupportedError) Error() string {
	return fmt.Sprintf("%s is not supported yet on %s; %s", e.what, runtime.GOOS, e.hint)
}

func (e *unsupportedError) Is(target error) bool { return target == errors.ErrUnsupported }
