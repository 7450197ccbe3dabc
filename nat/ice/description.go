package ice

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Candidate types, as in SDP and Path.LocalType/RemoteType.
const (
	TypeHost  = "host"  // an address of the shared socket
	TypeSrflx = "srflx" // the shared socket's address as a STUN server saw it
	TypePrflx = "prflx" // an address learnt from a connectivity check (never in a Description)
	TypeRelay = "relay" // an address allocated on a TURN server
)

// Description limits. They keep an encoded Description well under the
// ~1200 bytes a sealed control message has room for (at most 499 bytes).
const (
	// MaxCandidates is the most candidates a Description carries. Session
	// keeps the highest-priority ones.
	MaxCandidates = 16

	minUfrag = 4  // RFC 8445 section 5.3: at least 24 bits of randomness
	maxUfrag = 64 // RFC allows 256; weft's own are 16
	minPwd   = 22 // RFC 8445: at least 128 bits
	maxPwd   = 64 // weft's own are 32

	descVersion = 1
)

// Candidate is one transport address a peer may be reached at.
type Candidate struct {
	// Type is TypeHost, TypeSrflx or TypeRelay.
	Type string
	// Addr is the address and port. IPv4 addresses are never 4in6-mapped.
	Addr netip.AddrPort
	// Priority is the RFC 8445 candidate priority (non-zero).
	Priority uint32
}

func (c Candidate) String() string {
	return fmt.Sprintf("%s %s/%d", c.Type, c.Addr, c.Priority)
}

// Description is one side's ICE parameters: credentials and candidates. It
// is the offer or answer that travels, sealed, inside a weft control
// message; use MarshalBinary and UnmarshalBinary for that.
type Description struct {
	// Ufrag and Pwd are the ICE credentials (ice-chars: ALPHA, DIGIT, '+',
	// '/'), 4..64 and 22..64 characters.
	Ufrag, Pwd string
	// Candidates lists at most MaxCandidates candidates.
	Candidates []Candidate
}

// String describes d for logs. It leaves the password out.
func (d Description) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ufrag=%s candidates=[", d.Ufrag)
	for i, c := range d.Candidates {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(c.String())
	}
	b.WriteString("]")
	return b.String()
}

// Wire encoding, all integers big-endian:
//
//	version  u8 (1)
//	ufrag    u8 length, ice-chars
//	pwd      u8 length, ice-chars
//	count    u8, then count candidates:
//	  kind     u8: candidate type (1 host, 2 srflx, 3 relay) | 0x80 for IPv6
//	  addr     4 or 16 bytes
//	  port     u16 (non-zero)
//	  priority u32 (non-zero)
//
// The encoding is canonical: UnmarshalBinary accepts exactly what
// MarshalBinary produces, so re-encoding a decoded description gives back
// the same bytes.
const (
	kindHost  = 1
	kindSrflx = 2
	kindRelay = 3
	kindIPv6  = 0x80
)

func kindOf(typ string) (byte, bool) {
	switch typ {
	case TypeHost:
		return kindHost, true
	case TypeSrflx:
		return kindSrflx, true
	case TypeRelay:
		return kindRelay, true
	}
	return 0, false
}

func typeOf(kind byte) (string, bool) {
	switch kind &^ kindIPv6 {
	case kindHost:
		return TypeHost, true
	case kindSrflx:
		return TypeSrflx, true
	case kindRelay:
		return TypeRelay, true
	}
	return "", false
}

// Validate reports whether d can be encoded and used as a remote
// description.
func (d *Description) Validate() error {
	if err := checkCred("ufrag", d.Ufrag, minUfrag, maxUfrag); err != nil {
		return err
	}
	if err := checkCred("pwd", d.Pwd, minPwd, maxPwd); err != nil {
		return err
	}
	if len(d.Candidates) > MaxCandidates {
		return fmt.Errorf("%w: %d candidates, at most %d", ErrBadDescription, len(d.Candidates), MaxCandidates)
	}
	seen := make(map[Candidate]bool, len(d.Candidates))
	for i, c := range d.Candidates {
		if err := checkCandidate(c); err != nil {
			return fmt.Errorf("%w: candidate %d: %v", ErrBadDescription, i, err)
		}
		k := Candidate{Type: c.Type, Addr: c.Addr}
		if seen[k] {
			return fmt.Errorf("%w: candidate %d (%s) is listed twice", ErrBadDescription, i, c)
		}
		seen[k] = true
	}
	return nil
}

func checkCred(what, s string, minLen, maxLen int) error {
	if len(s) < minLen || len(s) > maxLen {
		return fmt.Errorf("%w: %s is %d characters, want %d..%d", ErrBadDescription, what, len(s), minLen, maxLen)
	}
	for i := 0; i < len(s); i++ {
		if !isICEChar(s[i]) {
			return fmt.Errorf("%w: %s has byte %#x at %d; only letters, digits, '+' and '/' are allowed", ErrBadDescription, what, s[i], i)
		}
	}
	return nil
}

func isICEChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '+' || c == '/'
}

func checkCandidate(c Candidate) error {
	if _, ok := kindOf(c.Type); !ok {
		return fmt.Errorf("type %q is not host, srflx or relay", c.Type)
	}
	a := c.Addr.Addr()
	switch {
	case !a.IsValid():
		return fmt.Errorf("no address")
	case a.Is4In6():
		return fmt.Errorf("address %s is IPv4-mapped; use the plain IPv4 form", a)
	case a.Zone() != "":
		return fmt.Errorf("address %s has a zone", a)
	case a.IsUnspecified() || a.IsMulticast():
		return fmt.Errorf("address %s is not a unicast address", a)
	case c.Addr.Port() == 0:
		return fmt.Errorf("port is zero")
	case c.Priority == 0:
		return fmt.Errorf("priority is zero")
	}
	return nil
}

// MappedCandidate is the server-reflexive candidate of addr, a public
// address a gateway maps to the shared socket on request (NAT-PMP): peers
// reach it unsolicited. Its priority is that of pion's server-reflexive
// candidates.
func MappedCandidate(addr netip.AddrPort) Candidate {
	const typePref, localPref, component = 100, 65535, 1
	return Candidate{Type: TypeSrflx, Addr: addr, Priority: typePref<<24 | localPref<<8 | (256 - component)}
}

// AddCandidate adds c to d unless d has a candidate of its address, keeping
// the candidates in priority order and at most MaxCandidates of them.
func (d *Description) AddCandidate(c Candidate) error {
	if err := checkCandidate(c); err != nil {
		return fmt.Errorf("ice candidate %s: %w", c, err)
	}
	for _, have := range d.Candidates {
		if have.Addr == c.Addr {
			return nil
		}
	}
	d.Candidates = append(d.Candidates, c)
	slices.SortStableFunc(d.Candidates, func(a, b Candidate) int { return cmp.Compare(b.Priority, a.Priority) })
	if len(d.Candidates) > MaxCandidates {
		d.Candidates = d.Candidates[:MaxCandidates]
	}
	return nil
}

// MarshalBinary encodes d (see Validate for what is accepted).
func (d Description) MarshalBinary() ([]byte, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	b := make([]byte, 0, 4+len(d.Ufrag)+len(d.Pwd)+len(d.Candidates)*23)
	b = append(b, descVersion, byte(len(d.Ufrag)))
	b = append(b, d.Ufrag...)
	b = append(b, byte(len(d.Pwd)))
	b = append(b, d.Pwd...)
	b = append(b, byte(len(d.Candidates)))
	for _, c := range d.Candidates {
		kind, _ := kindOf(c.Type)
		if c.Addr.Addr().Is6() {
			kind |= kindIPv6
		}
		b = append(b, kind)
		b = append(b, c.Addr.Addr().AsSlice()...)
		b = binary.BigEndian.AppendUint16(b, c.Addr.Port())
		b = binary.BigEndian.AppendUint32(b, c.Priority)
	}
	return b, nil
}

// UnmarshalBinary decodes b into d. It rejects anything MarshalBinary would
// not produce, including trailing bytes, with an error wrapping
// ErrBadDescription.
func (d *Description) UnmarshalBinary(b []byte) error {
	var out Description
	r := reader{b: b}
	if v := r.byte(); r.err == nil && v != descVersion {
		return fmt.Errorf("%w: version %d, want %d", ErrBadDescription, v, descVersion)
	}
	out.Ufrag = string(r.bytes(int(r.byte())))
	out.Pwd = string(r.bytes(int(r.byte())))
	n := int(r.byte())
	if r.err == nil && n > MaxCandidates {
		return fmt.Errorf("%w: %d candidates, at most %d", ErrBadDescription, n, MaxCandidates)
	}
	for i := 0; i < n && r.err == nil; i++ {
		kind := r.byte()
		typ, ok := typeOf(kind)
		if r.err == nil && (!ok || kind&^(kindIPv6|3) != 0) {
			return fmt.Errorf("%w: candidate %d has unknown kind %#x", ErrBadDescription, i, kind)
		}
		var addr netip.Addr
		if kind&kindIPv6 != 0 {
			addr = netip.AddrFrom16([16]byte(r.bytes(16)))
		} else {
			addr = netip.AddrFrom4([4]byte(r.bytes(4)))
		}
		port := r.uint16()
		prio := r.uint32()
		out.Candidates = append(out.Candidates, Candidate{Type: typ, Addr: netip.AddrPortFrom(addr, port), Priority: prio})
	}
	if r.err != nil {
		return r.err
	}
	if len(r.b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrBadDescription, len(r.b))
	}
	if err := out.Validate(); err != nil {
		return err
	}
	*d = out
	return nil
}

// reader consumes b, recording the first short read in err. After an
// error every read returns zeros of the right size.
type reader struct {
	b   []byte
	err error
}

func (r *reader) bytes(n int) []byte {
	if r.err == nil && len(r.b) < n {
		r.err = fmt.Errorf("%w: truncated", ErrBadDescription)
	}
	if r.err != nil {
		return make([]byte, n)
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) byte() byte     { return r.bytes(1)[0] }
func (r *reader) uint16() uint16 { return binary.BigEndian.Uint16(r.bytes(2)) }
func (r *reader) uint32() uint32 { return binary.BigEndian.Uint32(r.bytes(4)) }
