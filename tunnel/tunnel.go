package tunnel

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
)

// Key is a Curve25519 WireGuard key, public or private.
type Key [32]byte

func (k Key) hex() string { return hex.EncodeToString(k[:]) }

// DefaultKeepalive is the persistent keepalive interval given to peers whose
// Peer.Keepalive is zero.
const DefaultKeepalive = 25 * time.Second

// ErrClosed is returned by methods called after Close.
var ErrClosed = errors.New("tunnel closed")

// Config configures a Tunnel.
type Config struct {
	// Bind carries encrypted packets. Required.
	Bind conn.Bind
	// TUN carries plaintext packets to and from the local stack. Required.
	TUN tun.Device
	// PrivateKey is the node's WireGuard private key. Required (non-zero).
	PrivateKey Key
	// Logger receives the device's log lines at Debug (verbose) and Warn
	// (errors). Nil means slog.Default().
	Logger *slog.Logger
}

// Peer is the configuration of one WireGuard peer.
type Peer struct {
	PublicKey Key
	// Endpoint is where encrypted packets for this peer are sent. The zero
	// value leaves the endpoint unset (the peer must contact us first, and
	// wireguard-go learns its endpoint from its packets).
	Endpoint netip.AddrPort
	// AllowedIPs are the overlay addresses routed to this peer and accepted
	// as sources from it.
	AllowedIPs []netip.Prefix
	// Keepalive is the persistent keepalive interval; zero means
	// DefaultKeepalive, negative disables it.
	Keepalive time.Duration
}

// PeerStats is the state of one peer as the device reports it.
type PeerStats struct {
	PublicKey     Key
	Endpoint      netip.AddrPort
	AllowedIPs    []netip.Prefix
	LastHandshake time.Time // zero if never
	RxBytes       uint64
	TxBytes       uint64
}

// Stats are counters of the tunnel as a whole.
type Stats struct {
	// SpoofedDrops counts decrypted packets dropped because their source
	// address was not the sending peer's overlay address.
	SpoofedDrops uint64
}

// Tunnel is a running wireguard-go device.
type Tunnel struct {
	dev    *device.Device
	logger *slog.Logger

	spoofed atomic.Uint64

	mu     sync.Mutex // guards closed; serializes configuration changes
	closed bool
}

// New creates the device, sets its private key and brings it up.
func New(cfg Config) (*Tunnel, error) {
	if cfg.Bind == nil || cfg.TUN == nil {
		return nil, errors.New("tunnel: Config.Bind and Config.TUN are required")
	}
	if cfg.PrivateKey == (Key{}) {
		return nil, errors.New("tunnel: Config.PrivateKey is required")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	t := &Tunnel{logger: logger.With("component", "tunnel")}
	t.dev = device.NewDevice(cfg.TUN, cfg.Bind, t.deviceLogger())
	if err := t.dev.IpcSet("private_key=" + cfg.PrivateKey.hex() + "\n"); err != nil {
		t.dev.Close()
		return nil, fmt.Errorf("tunnel: set private key: %w", err)
	}
	if err := t.dev.Up(); err != nil {
		t.dev.Close()
		return nil, fmt.Errorf("tunnel: bring device up: %w", err)
	}
	return t, nil
}

func (t *Tunnel) deviceLogger() *device.Logger {
	return &device.Logger{
		Verbosef: func(format string, args ...any) {
			if strings.Contains(format, "disallowed source address") {
				t.spoofed.Add(1)
				t.logger.Warn("dropped packet with spoofed source address", "detail", fmt.Sprintf(format, args...))
				return
			}
			if t.logger.Enabled(nil, slog.LevelDebug) {
				t.logger.Debug(fmt.Sprintf(format, args...))
			}
		},
		Errorf: func(format string, args ...any) {
			t.logger.Warn(fmt.Sprintf(format, args...))
		},
	}
}

// SetPeer adds the peer or replaces its endpoint, allowed IPs and keepalive.
func (t *Tunnel) SetPeer(p Peer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "public_key=%s\n", p.PublicKey.hex())
	if p.Endpoint.IsValid() {
		fmt.Fprintf(&b, "endpoint=%s\n", p.Endpoint)
	}
	ka := p.Keepalive
	if ka == 0 {
		ka = DefaultKeepalive
	}
	if ka < 0 {
		ka = 0
	}
	fmt.Fprintf(&b, "persistent_keepalive_interval=%d\n", int(ka/time.Second))
	b.WriteString("replace_allowed_ips=true\n")
	for _, pfx := range p.AllowedIPs {
		fmt.Fprintf(&b, "allowed_ip=%s\n", pfx.Masked())
	}
	return t.ipcSet("set peer "+p.PublicKey.hex()[:8], b.String())
}

// RemovePeer removes the peer if it is configured.
func (t *Tunnel) RemovePeer(pub Key) error {
	return t.ipcSet("remove peer", "public_key="+pub.hex()+"\nremove=true\n")
}

// SetPrivateKey changes the device's private key (key rotation).
func (t *Tunnel) SetPrivateKey(k Key) error {
	return t.ipcSet("set private key", "private_key="+k.hex()+"\n")
}

func (t *Tunnel) ipcSet(op, conf string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	if err := t.dev.IpcSet(conf); err != nil {
		return fmt.Errorf("tunnel %s: %w", op, err)
	}
	return nil
}

// UAPI returns the device's configuration in the `wg` UAPI text format
// (what `wg show` reads).
func (t *Tunnel) UAPI() (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return "", ErrClosed
	}
	return t.dev.IpcGet()
}

// Device returns the underlying wireguard-go device, for serving its UAPI
// socket.
func (t *Tunnel) Device() *device.Device { return t.dev }

// Stats returns the tunnel-wide counters.
func (t *Tunnel) Stats() Stats {
	return Stats{SpoofedDrops: t.spoofed.Load()}
}

// Peers returns the state of every configured peer.
func (t *Tunnel) Peers() ([]PeerStats, error) {
	s, err := t.UAPI()
	if err != nil {
		return nil, err
	}
	return parseUAPI(s)
}

// parseUAPI parses the peer sections of an IpcGet dump.
func parseUAPI(s string) ([]PeerStats, error) {
	var peers []PeerStats
	var cur *PeerStats
	var hsSec, hsNsec int64
	flush := func() {
		if cur != nil {
			if hsSec != 0 || hsNsec != 0 {
				cur.LastHandshake = time.Unix(hsSec, hsNsec)
			}
			peers = append(peers, *cur)
		}
		cur, hsSec, hsNsec = nil, 0, 0
	}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		if k == "public_key" {
			flush()
			var pk Key
			b, err := hex.DecodeString(v)
			if err != nil || len(b) != len(pk) {
				return nil, fmt.Errorf("tunnel: bad public_key %q in device dump", v)
			}
			copy(pk[:], b)
			cur = &PeerStats{PublicKey: pk}
			continue
		}
		if cur == nil {
			continue
		}
		switch k {
		case "endpoint":
			if ap, err := netip.ParseAddrPort(v); err == nil {
				cur.Endpoint = ap
			}
		case "allowed_ip":
			if p, err := netip.ParsePrefix(v); err == nil {
				cur.AllowedIPs = append(cur.AllowedIPs, p)
			}
		case "last_handshake_time_sec":
			hsSec, _ = strconv.ParseInt(v, 10, 64)
		case "last_handshake_time_nsec":
			hsNsec, _ = strconv.ParseInt(v, 10, 64)
		case "rx_bytes":
			cur.RxBytes, _ = strconv.ParseUint(v, 10, 64)
		case "tx_bytes":
			cur.TxBytes, _ = strconv.ParseUint(v, 10, 64)
		}
	}
	flush()
	return peers, sc.Err()
}

// Close tears the device down, closing the Bind and the TUN device. It is
// idempotent.
func (t *Tunnel) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.mu.Unlock()
	t.dev.Close()
	return nil
}
