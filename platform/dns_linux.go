//go:build linux

package platform

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
)

// resolvedResolvConfPath lists systemd-resolved's upstream servers; tests
// point it elsewhere.
var resolvedResolvConfPath = "/run/systemd/resolve/resolv.conf"

// Modes of DNS.
const (
	DNSModeResolved   = "systemd-resolved"
	DNSModeResolvConf = "resolv.conf"
)

// DNS is the OS resolver configuration weft installed; Close undoes it.
type DNS struct {
	mode   string
	logger *slog.Logger
	// ifindex is the link configured in systemd-resolved mode.
	ifindex int
	// backup is the saved original in resolv.conf mode.
	backup string

	mu     sync.Mutex
	closed bool  // guarded by mu
	err    error // result of the first Close; guarded by mu
}

// ConfigureDNS points the OS resolver at cfg.Servers for cfg.Domain: with
// systemd-resolved when it runs and /etc/resolv.conf uses its stub, by
// rewriting /etc/resolv.conf otherwise (see the package documentation).
func ConfigureDNS(cfg DNSConfig) (*DNS, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	logger := componentLogger(cfg.Logger)
	r, err := connectResolved()
	switch {
	case err == nil && usesResolvedStub(resolvConfPath):
		defer r.Close()
		return configureResolved(cfg, r, logger)
	case err == nil:
		r.Close()
		logger.Info("systemd-resolved runs, but resolv.conf does not point at its stub; writing resolv.conf", "file", resolvConfPath)
	case errors.Is(err, errNoResolved):
		logger.Debug("systemd-resolved is not running; writing resolv.conf")
	default:
		logger.Debug("no system bus; writing resolv.conf", "err", err)
	}
	return configureResolvConf(cfg, logger)
}

func usesResolvedStub(path string) bool {
	b, err := os.ReadFile(path)
	return err == nil && slices.ContainsFunc(parseResolvConf(b).nameservers, isResolvedStub)
}

func configureResolved(cfg DNSConfig, r *resolved, logger *slog.Logger) (*DNS, error) {
	if cfg.Interface == "" {
		return nil, errors.New("DNS configuration with systemd-resolved needs the interface name")
	}
	ifi, err := net.InterfaceByName(cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("DNS interface %s: %w", cfg.Interface, err)
	}
	if err := r.configureLink(ifi.Index, cfg.Servers, cfg.Domain, cfg.Search); err != nil {
		r.revertLink(ifi.Index)
		return nil, fmt.Errorf("configure systemd-resolved for %s on %s: %w", cfg.Domain, cfg.Interface, err)
	}
	if err := r.tuneLink(ifi.Index); err != nil {
		logger.Debug("systemd-resolved refused some link settings (older version?)", "err", err)
	}
	logger.Info("split DNS through systemd-resolved", "domain", "~"+cfg.Domain, "servers", cfg.Servers, "interface", cfg.Interface)
	return &DNS{mode: DNSModeResolved, logger: logger, ifindex: ifi.Index}, nil
}

func configureResolvConf(cfg DNSConfig, logger *slog.Logger) (*DNS, error) {
	if cfg.StateDir == "" {
		return nil, fmt.Errorf("DNS configuration in resolv.conf mode needs a state directory for the backup of %s", resolvConfPath)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, err
	}
	backup := filepath.Join(cfg.StateDir, backupName)
	if err := RecoverDNS(cfg.StateDir, logger); err != nil {
		return nil, err
	}
	orig, err := readOriginal(resolvConfPath)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", resolvConfPath, err)
	}
	rc := parseResolvConf(orig.Content)
	if rc.backup != "" {
		return nil, fmt.Errorf("%s is already managed by another weft node (its backup: %s); only one node per host can configure the OS resolver: run this one with --accept-dns=false", resolvConfPath, rc.backup)
	}
	servers := cfg.Servers
	if len(servers) > maxNameservers {
		logger.Warn("resolv.conf takes at most three nameservers; using the first three", "servers", servers)
		servers = servers[:maxNameservers]
	}
	out, droppedRotate := renderResolvConf(rc, servers, cfg.Domain, cfg.Search, backup)
	if droppedRotate {
		logger.Info("dropped the rotate option from resolv.conf while weft runs: it would send overlay names past weft's server")
	}
	orig.Written = out
	if err := writeBackup(backup, orig); err != nil {
		return nil, fmt.Errorf("save %s to %s: %w", resolvConfPath, backup, err)
	}
	if err := replaceFile(resolvConfPath, out, 0o644); err != nil {
		os.Remove(backup)
		return nil, fmt.Errorf("write %s: %w", resolvConfPath, err)
	}
	logger.Info("DNS through resolv.conf", "file", resolvConfPath, "domain", cfg.Domain, "servers", servers, "backup", backup)
	return &DNS{mode: DNSModeResolvConf, logger: logger, backup: backup}, nil
}

// Mode is DNSModeResolved or DNSModeResolvConf.
func (d *DNS) Mode() string { return d.mode }

// Close restores the resolver configuration. It is idempotent. Call it
// before closing the TUN: systemd-resolved forgets a deleted link anyway,
// but its RevertLink then fails harmlessly.
func (d *DNS) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return d.err
	}
	d.closed = true
	switch d.mode {
	case DNSModeResolved:
		r, err := connectResolved()
		if err == nil {
			err = r.revertLink(d.ifindex)
			r.Close()
		}
		if err != nil {
			if _, gone := net.InterfaceByIndex(d.ifindex); gone != nil {
				d.logger.Debug("systemd-resolved link already gone", "err", err)
				err = nil
			}
		}
		d.err = err
		if err == nil {
			d.logger.Info("reverted systemd-resolved link settings")
		}
	case DNSModeResolvConf:
		d.err = restoreResolvConf(d.backup, d.logger)
	}
	return d.err
}

// SystemUpstreams returns the resolvers weft's DNS server forwards other
// names to: the nameservers of /etc/resolv.conf (of the saved original while
// weft's own is installed), with systemd-resolved's stub replaced by
// resolved's real upstreams where they can be read.
func SystemUpstreams() ([]netip.AddrPort, error) {
	ups, err := resolvConfUpstreams(resolvConfPath)
	if err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(ups, func(a netip.AddrPort) bool { return isResolvedStub(a.Addr()) }) {
		return ups, nil
	}
	resolvedUps := resolvedUpstreams()
	if len(resolvedUps) == 0 {
		return ups, nil // keep the stub: it still answers
	}
	var out []netip.AddrPort
	for _, a := range ups {
		if isResolvedStub(a.Addr()) {
			for _, r := range resolvedUps {
				if !containsAddrPort(out, r) {
					out = append(out, r)
				}
			}
		} else if !containsAddrPort(out, a) {
			out = append(out, a)
		}
	}
	return out, nil
}

// resolvedUpstreams returns systemd-resolved's upstream servers, from D-Bus
// or else from the resolv.conf it writes for programs that bypass its stub.
func resolvedUpstreams() []netip.AddrPort {
	if r, err := connectResolved(); err == nil {
		ups, err := r.upstreams()
		r.Close()
		if err == nil && len(ups) > 0 {
			return ups
		}
	}
	ups, err := resolvConfUpstreams(resolvedResolvConfPath)
	if err != nil {
		return nil
	}
	return slices.DeleteFunc(ups, func(a netip.AddrPort) bool { return isResolvedStub(a.Addr()) })
}
