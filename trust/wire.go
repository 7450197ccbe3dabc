package trust

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Wire format (see doc.go): every top-level object starts with a one-byte
// type tag and a one-byte version. Integers are big-endian fixed width;
// lengths and counts are minimal unsigned varints; byte strings and strings
// are length-prefixed; times are int64 Unix seconds plus uint32 nanoseconds;
// addresses are a family byte (0 none, 4, 6) plus 4 or 16 bytes. Decoders
// bound every length, reject trailing bytes and non-canonical encodings, so
// that Unmarshal(b) succeeding implies Marshal(Unmarshal(b)) == b.

const wireVersion = 1

// Object type tags.
const (
	tagGenesis     = 'G'
	tagCertificate = 'C'
	tagInvite      = 'I'
	tagJoinRequest = 'J'
	tagJoinResp    = 'P'
	tagNodeRecord  = 'R'
	tagIdentity    = 'K'
	tagDescriptor  = 'D'
	tagChange      = 'A'
	tagRevocation  = 'X'
	tagPolicy      = 'Y'
	tagRenew       = 'N'
	tagView        = 'V'
)

// Bounds enforced by decoders.
const (
	// MaxAnchors bounds the anchor set of a genesis.
	MaxAnchors = 64
	// MaxTags bounds the tags of a certificate.
	MaxTags = 32
	// MaxEndpoints bounds the endpoints of a node record.
	MaxEndpoints = 32
	// MaxRendezvous bounds the rendezvous servers of a node record.
	MaxRendezvous = 8
	// MaxRelays bounds the relays of a node record.
	MaxRelays = 8
	// MaxBootstrap bounds the bootstrap addresses of an invite.
	MaxBootstrap = 16
	// MaxAnchorEndpoints bounds the endpoints of one anchor in a genesis,
	// descriptor or anchor-set change.
	MaxAnchorEndpoints = 8
	// MaxRules bounds the rules of a policy.
	MaxRules = 256
	// MaxInviteChain bounds the anchor-set changes embedded in an invite.
	MaxInviteChain = 16

	maxString   = 253  // names, domains, tags
	maxBytes    = 128  // keys and signatures
	maxErrorLen = 1024 // JoinResponse.Error
	maxCertLen  = 64 << 10
	maxInvite   = 64 << 10 // encoded invite bytes (also inside a join request)
	maxStmt     = 64 << 10 // encoded change, revocation, policy, descriptor, genesis
)

type encoder struct{ b []byte }

func (e *encoder) u8(v uint8)   { e.b = append(e.b, v) }
func (e *encoder) u16(v uint16) { e.b = binary.BigEndian.AppendUint16(e.b, v) }
func (e *encoder) u32(v uint32) { e.b = binary.BigEndian.AppendUint32(e.b, v) }
func (e *encoder) u64(v uint64) { e.b = binary.BigEndian.AppendUint64(e.b, v) }
func (e *encoder) uvarint(v uint64) {
	e.b = binary.AppendUvarint(e.b, v)
}
func (e *encoder) raw(p []byte) { e.b = append(e.b, p...) }
func (e *encoder) bytes(p []byte) {
	e.uvarint(uint64(len(p)))
	e.b = append(e.b, p...)
}
func (e *encoder) str(s string) {
	e.uvarint(uint64(len(s)))
	e.b = append(e.b, s...)
}
func (e *encoder) time(t time.Time) {
	e.u64(uint64(t.Unix()))
	e.u32(uint32(t.Nanosecond()))
}
func (e *encoder) addr(a netip.Addr) {
	switch {
	case a.Is4():
		e.u8(4)
		b := a.As4()
		e.raw(b[:])
	case a.Is6():
		e.u8(6)
		b := a.As16()
		e.raw(b[:])
	default:
		e.u8(0)
	}
}
func (e *encoder) addrPort(ap netip.AddrPort) {
	e.addr(ap.Addr())
	e.u16(ap.Port())
}

// decoder reads a wire encoding. The first error sticks; later reads return
// zero values, so decode functions check d.err once at the end.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.fail("truncated: need %d bytes, have %d", n, len(d.b))
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) u8() uint8 {
	p := d.take(1)
	if p == nil {
		return 0
	}
	return p[0]
}
func (d *decoder) u16() uint16 {
	p := d.take(2)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint16(p)
}
func (d *decoder) u32() uint32 {
	p := d.take(4)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint32(p)
}
func (d *decoder) u64() uint64 {
	p := d.take(8)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint64(p)
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	if n != len(binary.AppendUvarint(nil, v)) {
		d.fail("non-minimal varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// length reads a length or count and checks it against max.
func (d *decoder) length(what string, max int) int {
	v := d.uvarint()
	if d.err != nil {
		return 0
	}
	if v > uint64(max) {
		d.fail("%s: length %d exceeds limit %d", what, v, max)
		return 0
	}
	return int(v)
}

// bytes reads a length-prefixed byte string of at most max bytes and
// returns a copy (nil when empty).
func (d *decoder) bytes(what string, max int) []byte {
	n := d.length(what, max)
	p := d.take(n)
	if len(p) == 0 {
		return nil
	}
	return append([]byte(nil), p...)
}

func (d *decoder) str(what string, max int) string {
	n := d.length(what, max)
	return string(d.take(n))
}

func (d *decoder) array32(dst *[32]byte) {
	copy(dst[:], d.take(32))
}

func (d *decoder) time() time.Time {
	sec := int64(d.u64())
	nsec := d.u32()
	if d.err != nil {
		return time.Time{}
	}
	if nsec >= 1e9 {
		d.fail("time: nanoseconds %d out of range", nsec)
		return time.Time{}
	}
	t := time.Unix(sec, int64(nsec)).UTC()
	if t.Unix() != sec {
		d.fail("time out of range")
		return time.Time{}
	}
	return t
}

func (d *decoder) addr() netip.Addr {
	switch fam := d.u8(); fam {
	case 0:
		return netip.Addr{}
	case 4:
		p := d.take(4)
		if p == nil {
			return netip.Addr{}
		}
		return netip.AddrFrom4([4]byte(p))
	case 6:
		p := d.take(16)
		if p == nil {
			return netip.Addr{}
		}
		return netip.AddrFrom16([16]byte(p))
	default:
		d.fail("address family %d unknown", fam)
		return netip.Addr{}
	}
}

func (d *decoder) addrPort() netip.AddrPort {
	a := d.addr()
	port := d.u16()
	if d.err != nil {
		return netip.AddrPort{}
	}
	if !a.IsValid() {
		if port != 0 {
			d.fail("port without address")
		}
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(a, port)
}

// header reads and checks the tag and version bytes.
func (d *decoder) header(tag byte, what string) {
	t := d.u8()
	v := d.u8()
	if d.err != nil {
		return
	}
	if t != tag {
		d.fail("this is not a %s: wrong type tag %#x", what, t)
		return
	}
	if v != wireVersion {
		d.fail("%s version %d not supported (this build reads version %d; upgrade weft)", what, v, wireVersion)
	}
}

// finish reports trailing bytes and converts the decode error into a
// *RejectError with ReasonMalformed.
func (d *decoder) finish(what string) error {
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return reject(ReasonMalformed, "malformed %s: %v", what, d.err)
	}
	return nil
}

// encodeToken returns prefix followed by the unpadded base64url of b.
func encodeToken(prefix string, b []byte) string {
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// decodeToken strips white space and prefix and decodes the base64url
// payload of a token. what names the object and hint says where a valid
// token comes from, for messages.
func decodeToken(s, prefix, what, hint string, max int) ([]byte, error) {
	s = strings.TrimSpace(s)
	if len(s) > len(prefix)+(max*4+2)/3 {
		return nil, reject(ReasonMalformed, "malformed %s: token is %d characters, longer than any valid one; copy the token exactly as printed by %s", what, len(s), hint)
	}
	if !strings.HasPrefix(s, prefix) {
		return nil, reject(ReasonMalformed, "malformed %s: a weft %s token starts with %q; copy the whole token as printed by %s", what, what, prefix, hint)
	}
	// encoding/base64 skips line breaks even in Strict mode; a token is
	// one line, so that every token has exactly one spelling.
	if strings.ContainsAny(s, "\r\n") {
		return nil, reject(ReasonMalformed, "malformed %s: the token contains a line break; join the lines and copy it as one line, as printed by %s", what, hint)
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s[len(prefix):])
	if err != nil {
		return nil, reject(ReasonMalformed, "malformed %s: %v; the token may be truncated or mangled, copy it again exactly as printed by %s", what, err, hint)
	}
	return b, nil
}

func (e *encoder) strs(list []string) {
	e.uvarint(uint64(len(list)))
	for _, s := range list {
		e.str(s)
	}
}

func (d *decoder) strs(what string, maxCount int) []string {
	n := d.length(what, maxCount)
	var out []string
	for i := 0; i < n && d.err == nil; i++ {
		out = append(out, d.str(what, maxString))
	}
	return out
}
