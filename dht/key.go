package dht

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/bits"
	"net/netip"

	"github.com/weft-net/weft/addr"
)

// KeySize is the length of a Key in bytes: Kademlia's 256-bit ID space.
const KeySize = 32

// Key is a 256-bit DHT key. Record keys and node IDs share one space, so the
// XOR distance between a record key and a node decides which nodes store it.
type Key [KeySize]byte

// Domain-separation prefixes: each kind of record hashes under its own
// prefix so that, for example, a node name can never collide with a node ID.
const (
	nodeKeyPrefix = "weft/node/"
	nameKeyPrefix = "weft/name/"
	ipKeyPrefix   = "weft/ip/"
)

// NodeKey is the key of a node's record: SHA-256("weft/node/" || id).
func NodeKey(id addr.NodeID) Key {
	h := sha256.New()
	h.Write([]byte(nodeKeyPrefix))
	h.Write(id[:])
	return Key(h.Sum(nil))
}

// NameKey is the key of a name record: SHA-256("weft/name/" || name). The
// name is hashed as given; callers pass a name that addr.CheckName accepts
// (lowercase), so one name has one key.
func NameKey(name string) Key {
	return Key(sha256.Sum256([]byte(nameKeyPrefix + name)))
}

// IPKey is the key of the record mapping an overlay address to its node:
// SHA-256("weft/ip/" || ip), where ip is 4 bytes for an IPv4 (or
// IPv4-mapped IPv6) address and 16 bytes for IPv6. Zones are ignored.
func IPKey(ip netip.Addr) Key {
	ip = ip.Unmap().WithZone("")
	h := sha256.New()
	h.Write([]byte(ipKeyPrefix))
	h.Write(ip.AsSlice())
	return Key(h.Sum(nil))
}

// ParseKey parses 64 hexadecimal digits.
func ParseKey(s string) (Key, error) {
	var k Key
	if len(s) != 2*KeySize {
		return k, fmt.Errorf("parse dht key %q: want %d hex digits, got %d", s, 2*KeySize, len(s))
	}
	if _, err := hex.Decode(k[:], []byte(s)); err != nil {
		return Key{}, fmt.Errorf("parse dht key %q: %w", s, err)
	}
	return k, nil
}

// String returns the key as 64 lowercase hexadecimal digits.
func (k Key) String() string { return hex.EncodeToString(k[:]) }

// Short returns the first 12 hexadecimal digits, for logs.
func (k Key) Short() string { return hex.EncodeToString(k[:6]) }

// IsZero reports whether k is all zeros.
func (k Key) IsZero() bool { return k == Key{} }

// MarshalText implements encoding.TextMarshaler.
func (k Key) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (k *Key) UnmarshalText(b []byte) error {
	v, err := ParseKey(string(b))
	if err != nil {
		return err
	}
	*k = v
	return nil
}

// Distance is the Kademlia XOR distance between k and o.
func (k Key) Distance(o Key) Key {
	var d Key
	for i := range d {
		d[i] = k[i] ^ o[i]
	}
	return d
}

// CommonPrefixLen returns the number of leading bits k and o share (256 when
// equal): the index of the routing-table bucket o falls in, seen from k.
func (k Key) CommonPrefixLen(o Key) int {
	for i := range k {
		if x := k[i] ^ o[i]; x != 0 {
			return i*8 + bits.LeadingZeros8(x)
		}
	}
	return KeySize * 8
}

// CompareDistance reports whether a is closer to target than b (-1), farther
// (+1), or equally far (0, only when a == b).
func CompareDistance(target, a, b Key) int {
	da, db := target.Distance(a), target.Distance(b)
	return bytes.Compare(da[:], db[:])
}
