//go:build linux

package natlab

import (
	"crypto/rand"
	"encoding/binary"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// CoturnConfig configures Namespace.StartCoturn.
type CoturnConfig struct {
	// IP is the address coturn listens on and relays from. It must be
	// one of the namespace's addresses.
	IP netip.Addr

	// Port is the TURN port (UDP and TCP). Zero means 3478.
	Port uint16

	// User and Password are the one static long-term credential. Both
	// must be set.
	User, Password string

	// Realm is the TURN realm. Empty means "weft".
	Realm string

	// Args are more turnserver flags (see turnserver --help).
	Args []string
}

// NeedCoturn skips t unless coturn's turnserver is installed, so a test
// can skip before it builds a lab for it.
func NeedCoturn(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("turnserver"); err != nil {
		t.Skip("natlab: coturn not installed (`make setup` installs it; Debian package coturn); skipped")
	}
}

// StartCoturn runs coturn's turnserver in the namespace with a static user
// (long-term credential mechanism, no TLS or DTLS, no CLI, a user database
// of its own in a temporary directory) and waits until it answers a STUN
// Binding request. It skips t if turnserver is not installed (Debian
// package coturn). The process is killed when t ends; its log is in the
// test output if t fails.
func (ns *Namespace) StartCoturn(t testing.TB, cfg CoturnConfig) *Process {
	t.Helper()
	NeedCoturn(t)
	if !cfg.IP.IsValid() || cfg.User == "" || cfg.Password == "" {
		t.Fatalf("natlab: StartCoturn needs IP, User and Password (got %+v)", cfg)
	}
	if cfg.Port == 0 {
		cfg.Port = 3478
	}
	if cfg.Realm == "" {
		cfg.Realm = "weft"
	}
	dir := t.TempDir()
	args := []string{
		"-n", // no configuration file
		"--listening-ip", cfg.IP.String(),
		"--relay-ip", cfg.IP.String(),
		"--listening-port", strconv.Itoa(int(cfg.Port)),
		"--lt-cred-mech",
		"--user", cfg.User + ":" + cfg.Password,
		"--realm", cfg.Realm,
		"--no-tls", "--no-dtls", "--no-cli",
		"--userdb", filepath.Join(dir, "turndb"),
		"--pidfile", filepath.Join(dir, "turnserver.pid"),
		"--log-file", "stdout", "--simple-log",
	}
	p := ns.Start(t, "turnserver", "turnserver", append(args, cfg.Args...)...)
	ns.waitSTUN(t, p, netip.AddrPortFrom(cfg.IP, cfg.Port))
	return p
}

// waitSTUN waits until server answers a STUN Binding request sent from
// the namespace; it fails t if p exits or 10 seconds pass first.
func (ns *Namespace) waitSTUN(t testing.TB, p *Process, server netip.AddrPort) {
	t.Helper()
	pc, err := ns.ListenPacket("udp", net.JoinHostPort(netip.IPv4Unspecified().String(), "0"))
	if server.Addr().Is6() {
		pc, err = ns.ListenPacket("udp", "[::]:0")
	}
	if err != nil {
		t.Fatalf("natlab: %s: %v", ns, err)
	}
	defer pc.Close()
	req := make([]byte, 20) // Binding request, no attributes
	binary.BigEndian.PutUint16(req[0:], 0x0001)
	binary.BigEndian.PutUint32(req[4:], 0x2112A442)
	rand.Read(req[8:])
	buf := make([]byte, 1500)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if p.Exited() {
			t.Fatalf("natlab: %s exited before answering STUN; output:\n%s", p.Label, p.Output())
		}
		pc.WriteTo(req, net.UDPAddrFromAddrPort(server))
		pc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, _, err := pc.ReadFrom(buf)
		if err == nil && n >= 20 && string(buf[8:20]) == string(req[8:20]) {
			return
		}
	}
	t.Fatalf("natlab: %s does not answer STUN at %v after 10s; output:\n%s", p.Label, server, p.Output())
}
