package trust

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/weft-net/weft/addr"
)

// Genesis defines a network: its name, DNS domain, IPv4 overlay prefix and
// its anchor set with threshold. The network ID is the SHA-256 of its
// encoding, so changing any field makes a different network.
type Genesis struct {
	// Name is the network's name, a DNS label (addr.CheckName).
	Name string
	// Domain is the overlay DNS domain (addr.CheckDomain).
	Domain string
	// IPv4Prefix is the prefix IPv4 overlay addresses are chosen from.
	IPv4Prefix netip.Prefix
	// Anchors are the Ed25519 public keys of the anchors, in order.
	Anchors []ed25519.PublicKey
	// Threshold is t: how many distinct anchors must endorse a certificate
	// or invite. 1 <= Threshold <= len(Anchors).
	Threshold int
	// Created is when the network was created.
	Created time.Time
}

// DefaultThreshold returns floor(2n/3)+1, the smallest threshold that
// tolerates f = floor((n-1)/3) Byzantine anchors among n.
func DefaultThreshold(n int) int { return 2*n/3 + 1 }

// NewGenesis builds and checks a genesis created now. Zero values select
// defaults: domain "" means addr.DefaultDomain, an invalid (zero) prefix
// means addr.DefaultIPv4Prefix, threshold 0 means
// DefaultThreshold(len(anchors)). Created is the current time truncated to
// seconds, UTC; set it and call Check to build a genesis for another time.
func NewGenesis(name, domain string, prefix netip.Prefix, anchors []ed25519.PublicKey, threshold int) (*Genesis, error) {
	created := time.Now()
	if domain == "" {
		domain = addr.DefaultDomain
	}
	if !prefix.IsValid() {
		prefix = netip.MustParsePrefix(addr.DefaultIPv4Prefix)
	}
	if threshold == 0 {
		threshold = DefaultThreshold(len(anchors))
	}
	g := &Genesis{
		Name:       name,
		Domain:     domain,
		IPv4Prefix: prefix,
		Threshold:  threshold,
		Created:    created.UTC().Truncate(time.Second),
	}
	for _, a := range anchors {
		g.Anchors = append(g.Anchors, append(ed25519.PublicKey(nil), a...))
	}
	if err := g.Check(); err != nil {
		return nil, fmt.Errorf("new genesis: %w", err)
	}
	return g, nil
}

// Check returns a *RejectError (ReasonInvalid) if g is not a usable
// genesis: bad name, domain or prefix, no anchors or more than MaxAnchors,
// a malformed or repeated anchor key, or a threshold outside 1..n.
func (g *Genesis) Check() error {
	if err := addr.CheckName(g.Name); err != nil {
		return reject(ReasonInvalid, "network name: %v", err)
	}
	if err := addr.CheckDomain(g.Domain); err != nil {
		return reject(ReasonInvalid, "network domain: %v", err)
	}
	if err := addr.CheckIPv4Prefix(g.IPv4Prefix); err != nil {
		return reject(ReasonInvalid, "network %q: %v", g.Name, err)
	}
	n := len(g.Anchors)
	if n == 0 || n > MaxAnchors {
		return reject(ReasonInvalid, "network %q has %d anchors; it needs 1 to %d", g.Name, n, MaxAnchors)
	}
	for i, a := range g.Anchors {
		if len(a) != ed25519.PublicKeySize {
			return reject(ReasonInvalid, "network %q: anchor %d key has %d bytes, want %d", g.Name, i, len(a), ed25519.PublicKeySize)
		}
		for _, b := range g.Anchors[:i] {
			if bytes.Equal(a, b) {
				return reject(ReasonInvalid, "network %q lists anchor %s twice", g.Name, keyShort(a))
			}
		}
	}
	if g.Threshold < 1 || g.Threshold > n {
		return reject(ReasonInvalid, "network %q: threshold %d must be between 1 and the number of anchors (%d)", g.Name, g.Threshold, n)
	}
	return nil
}

// ID returns the network ID: SHA-256 of Marshal().
func (g *Genesis) ID() addr.NetworkID { return addr.NetworkID(sha256.Sum256(g.Marshal())) }

// IsAnchor reports whether pub is one of g's anchors, and its index in
// g.Anchors.
func (g *Genesis) IsAnchor(pub ed25519.PublicKey) (int, bool) {
	i := g.anchorIndex(pub)
	return i, i >= 0
}

func (g *Genesis) anchorIndex(pub ed25519.PublicKey) int {
	for i, a := range g.Anchors {
		if bytes.Equal(a, pub) {
			return i
		}
	}
	return -1
}

// describe names the network for messages: "name" (id abcdef012345).
func (g *Genesis) describe() string {
	return fmt.Sprintf("%q (id %s)", g.Name, g.ID().Short())
}

// Marshal returns the canonical encoding of g.
func (g *Genesis) Marshal() []byte {
	var e encoder
	g.encode(&e)
	return e.b
}

func (g *Genesis) encode(e *encoder) {
	e.u8(tagGenesis)
	e.u8(wireVersion)
	e.str(g.Name)
	e.str(g.Domain)
	e.addr(g.IPv4Prefix.Addr())
	e.u8(uint8(g.IPv4Prefix.Bits()))
	e.uvarint(uint64(len(g.Anchors)))
	for _, a := range g.Anchors {
		e.bytes(a)
	}
	e.uvarint(uint64(g.Threshold))
	e.time(g.Created)
}

// UnmarshalGenesis decodes and checks a genesis. Errors are *RejectError
// with ReasonMalformed or ReasonInvalid.
func UnmarshalGenesis(b []byte) (*Genesis, error) {
	d := decoder{b: b}
	g := decodeGenesis(&d)
	if err := d.finish("genesis"); err != nil {
		return nil, err
	}
	if err := g.Check(); err != nil {
		return nil, err
	}
	return g, nil
}

func decodeGenesis(d *decoder) *Genesis {
	g := new(Genesis)
	d.header(tagGenesis, "genesis")
	g.Name = d.str("network name", maxString)
	g.Domain = d.str("domain", maxString)
	a := d.addr()
	bits := d.u8()
	if d.err == nil {
		if !a.Is4() || int(bits) > 32 {
			d.fail("IPv4 prefix %v/%d is not IPv4", a, bits)
		}
		g.IPv4Prefix = netip.PrefixFrom(a, int(bits))
	}
	n := d.length("anchors", MaxAnchors)
	for i := 0; i < n && d.err == nil; i++ {
		g.Anchors = append(g.Anchors, ed25519.PublicKey(d.bytes("anchor key", ed25519.PublicKeySize)))
	}
	g.Threshold = d.length("threshold", MaxAnchors)
	g.Created = d.time()
	return g
}

// SaveGenesis writes g to dir/genesis atomically with mode 0600.
func SaveGenesis(dir string, g *Genesis) error {
	if err := writeFileAtomic(filepath.Join(dir, GenesisFile), g.Marshal(), 0o600); err != nil {
		return fmt.Errorf("save genesis: %w", err)
	}
	return nil
}

// LoadGenesis reads dir/genesis. A missing file yields an error wrapping
// fs.ErrNotExist.
func LoadGenesis(dir string) (*Genesis, error) {
	path := filepath.Join(dir, GenesisFile)
	b, err := readFileLimited(path)
	if err != nil {
		return nil, fmt.Errorf("load genesis: %w", err)
	}
	g, err := UnmarshalGenesis(b)
	if err != nil {
		return nil, fmt.Errorf("load genesis %s: %w", path, err)
	}
	return g, nil
}

// keyShort prints the first 12 hex digits of the NodeID of an Ed25519 key,
// which is how keys are shown to people.
func keyShort(pub ed25519.PublicKey) string {
	return addr.NodeIDFromKey(pub).Short()
}
