package addr

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
)

const (
	// DefaultIPv4Prefix is the IPv4 overlay prefix of a network whose
	// genesis names none (the RFC 6598 shared address space).
	DefaultIPv4Prefix = "100.64.0.0/10"

	// DefaultDomain is the DNS domain of a network whose genesis names none.
	DefaultDomain = "weft.internal"

	// MinIPv4Bits and MaxIPv4Bits bound the length of an IPv4 overlay prefix.
	MinIPv4Bits = 8
	MaxIPv4Bits = 30
)

// iidContext domain-separates the interface-ID hash.
const iidContext = "weft-iid-v1"

// ULAPrefix returns the network's RFC 4193 /48: fd00::/8 followed by the
// first 40 bits of the network ID.
func ULAPrefix(nw NetworkID) netip.Prefix {
	var a [16]byte
	a[0] = 0xfd
	copy(a[1:6], nw[:5])
	return netip.PrefixFrom(netip.AddrFrom16(a), 48)
}

// IPv6 returns the overlay IPv6 address of node id in network nw:
// the network's ULA /48, subnet 0, and an interface ID made of the first 8
// bytes of SHA-256("weft-iid-v1" || id).
func IPv6(nw NetworkID, id NodeID) netip.Addr {
	h := sha256.New()
	h.Write([]byte(iidContext))
	h.Write(id[:])
	var sum [32]byte
	h.Sum(sum[:0])

	var a [16]byte
	a[0] = 0xfd
	copy(a[1:6], nw[:5])
	// a[6:8] is subnet 0.
	copy(a[8:16], sum[:8])
	return netip.AddrFrom16(a)
}

// CheckIPv6 returns nil if ip is the overlay IPv6 address of node id in
// network nw, and an error wrapping ErrAddrMismatch otherwise. IPv4-mapped
// forms and zones are never accepted.
func CheckIPv6(nw NetworkID, id NodeID, ip netip.Addr) error {
	want := IPv6(nw, id)
	if ip != want {
		return fmt.Errorf("%w: %v is not %s's address %v in network %s", ErrAddrMismatch, ip, id.Short(), want, nw.Short())
	}
	return nil
}

// ParseIPv4Prefix parses an IPv4 overlay prefix such as "100.64.0.0/10" and
// checks it with CheckIPv4Prefix.
func ParseIPv4Prefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%w: %v", ErrInvalidPrefix, err)
	}
	if err := CheckIPv4Prefix(p); err != nil {
		return netip.Prefix{}, err
	}
	return p, nil
}

// CheckIPv4Prefix returns nil if p is a valid IPv4 overlay prefix: IPv4 (not
// IPv4-mapped IPv6), between /8 and /30, with its host bits zero.
func CheckIPv4Prefix(p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return fmt.Errorf("%w: %v is not a valid prefix", ErrInvalidPrefix, p)
	case !p.Addr().Is4():
		return fmt.Errorf("%w: %v is not IPv4", ErrInvalidPrefix, p)
	case p.Bits() < MinIPv4Bits || p.Bits() > MaxIPv4Bits:
		return fmt.Errorf("%w: %v must be between /%d and /%d", ErrInvalidPrefix, p, MinIPv4Bits, MaxIPv4Bits)
	case p.Masked() != p:
		return fmt.Errorf("%w: %v has host bits set; did you mean %v?", ErrInvalidPrefix, p, p.Masked())
	}
	return nil
}

// IPv4Hosts returns the number of usable host addresses in a valid IPv4
// overlay prefix (all addresses but the network and broadcast addresses), or
// 0 if p is not valid.
func IPv4Hosts(p netip.Prefix) int {
	if CheckIPv4Prefix(p) != nil {
		return 0
	}
	return 1<<(32-p.Bits()) - 2
}

// IPv4 returns candidate number attempt (0, 1, 2, …) for node id's IPv4
// overlay address within prefix: the first 4 bytes of
// SHA-256(id || uint32be(attempt)) modulo the number of usable hosts,
// never the network or broadcast address. The caller (an anchor) probes
// increasing attempts until it finds an address nobody holds.
func IPv4(prefix netip.Prefix, id NodeID, attempt int) (netip.Addr, error) {
	if err := CheckIPv4Prefix(prefix); err != nil {
		return netip.Addr{}, err
	}
	if attempt < 0 || uint64(attempt) > math.MaxUint32 {
		return netip.Addr{}, fmt.Errorf("ipv4 for %s: attempt %d out of range 0..%d", id.Short(), attempt, uint32(math.MaxUint32))
	}
	var buf [32 + 4]byte
	copy(buf[:32], id[:])
	binary.BigEndian.PutUint32(buf[32:], uint32(attempt))
	sum := sha256.Sum256(buf[:])
	h := binary.BigEndian.Uint32(sum[:4])

	hosts := uint32(1)<<(32-prefix.Bits()) - 2
	host := 1 + h%hosts
	base := prefix.Addr().As4()
	v := binary.BigEndian.Uint32(base[:]) | host
	var out [4]byte
	binary.BigEndian.PutUint32(out[:], v)
	return netip.AddrFrom4(out), nil
}

// CheckName returns nil if s is a valid node name: a DNS label of 1..63
// characters from a-z, 0-9 and '-', not starting or ending with '-'.
func CheckName(s string) error {
	if err := checkLabel(s); err != nil {
		return fmt.Errorf("%w %q: %s", ErrInvalidName, s, err)
	}
	return nil
}

// CheckDomain returns nil if s is a valid overlay DNS domain: one or more
// labels valid under CheckName joined by '.', at most 253 characters, with
// no trailing dot.
func CheckDomain(s string) error {
	if s == "" {
		return fmt.Errorf("%w: empty", ErrInvalidDomain)
	}
	if len(s) > 253 {
		return fmt.Errorf("%w %.40q…: %d characters, at most 253 allowed", ErrInvalidDomain, s, len(s))
	}
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '.' {
			if err := checkLabel(s[start:i]); err != nil {
				return fmt.Errorf("%w %q: label %q: %s", ErrInvalidDomain, s, s[start:i], err)
			}
			start = i + 1
		}
	}
	return nil
}

// checkLabel returns a human-readable reason why s is not a lowercase DNS
// label, as a plain error.
func checkLabel(s string) error {
	if len(s) == 0 {
		return errString("must not be empty")
	}
	if len(s) > 63 {
		return errString(fmt.Sprintf("%d characters, at most 63 allowed", len(s)))
	}
	if s[0] == '-' || s[len(s)-1] == '-' {
		return errString("must not start or end with '-'")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-':
		case c >= 'A' && c <= 'Z':
			return errString("must be lowercase")
		default:
			return errString(fmt.Sprintf("character %q not allowed (use a-z, 0-9 and '-')", c))
		}
	}
	return nil
}

type errString string

func (e errString) Error() string { return string(e) }
