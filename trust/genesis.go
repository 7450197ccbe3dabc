package trust

import (
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/weft-net/weft/addr"
)

// AnchorInfo describes one anchor: its keys, its node name and IPv4
// overlay address (anchors are members without endorsements, see
// AnchorCertificate) and where it can be reached.
type AnchorInfo struct {
	// SignKey is the anchor's Ed25519 public key; its hash is the anchor's
	// NodeID.
	SignKey ed25519.PublicKey
	// WGKey is the anchor's Curve25519 (WireGuard) public key.
	WGKey [32]byte
	// Name is the anchor's node name (a DNS label), unique in the network.
	Name string
	// IPv4 is the anchor's IPv4 overlay address, inside the network prefix.
	IPv4 netip.Addr
	// Endpoints are UDP addresses the anchor may be reached at, at most
	// MaxAnchorEndpoints.
	Endpoints []netip.AddrPort
}

// NodeID returns the NodeID of SignKey.
func (ai *AnchorInfo) NodeID() addr.NodeID { return addr.NodeIDFromKey(ai.SignKey) }

func (ai *AnchorInfo) clone() AnchorInfo {
	c := *ai
	c.SignKey = append(ed25519.PublicKey(nil), ai.SignKey...)
	c.Endpoints = append([]netip.AddrPort(nil), ai.Endpoints...)
	if len(c.Endpoints) == 0 {
		c.Endpoints = nil
	}
	return c
}

func cloneAnchors(list []AnchorInfo) []AnchorInfo {
	out := make([]AnchorInfo, len(list))
	for i := range list {
		out[i] = list[i].clone()
	}
	return out
}

func (ai *AnchorInfo) encode(e *encoder) {
	e.bytes(ai.SignKey)
	e.raw(ai.WGKey[:])
	e.str(ai.Name)
	e.addr(ai.IPv4)
	e.uvarint(uint64(len(ai.Endpoints)))
	for _, ap := range ai.Endpoints {
		e.addrPort(ap)
	}
}

func decodeAnchorInfo(d *decoder) AnchorInfo {
	var ai AnchorInfo
	ai.SignKey = d.bytes("anchor key", ed25519.PublicKeySize)
	d.array32(&ai.WGKey)
	ai.Name = d.str("anchor name", maxString)
	ai.IPv4 = d.addr()
	n := d.length("anchor endpoints", MaxAnchorEndpoints)
	for i := 0; i < n && d.err == nil; i++ {
		ai.Endpoints = append(ai.Endpoints, d.addrPort())
	}
	return ai
}

func encodeAnchors(e *encoder, list []AnchorInfo) {
	e.uvarint(uint64(len(list)))
	for i := range list {
		list[i].encode(e)
	}
}

func decodeAnchors(d *decoder) []AnchorInfo {
	n := d.length("anchors", MaxAnchors)
	var out []AnchorInfo
	for i := 0; i < n && d.err == nil; i++ {
		out = append(out, decodeAnchorInfo(d))
	}
	return out
}

// Genesis defines a network: its name, DNS domain, IPv4 overlay prefix and
// its initial anchor set with threshold. The network ID is the SHA-256 of
// its encoding, so changing any field makes a different network. Later
// anchor sets follow from it by AnchorChange statements (see View).
type Genesis struct {
	// Name is the network's name, a DNS label (addr.CheckName).
	Name string
	// Domain is the overlay DNS domain (addr.CheckDomain).
	Domain string
	// IPv4Prefix is the prefix IPv4 overlay addresses are chosen from.
	IPv4Prefix netip.Prefix
	// Anchors are the initial anchors, in order.
	Anchors []AnchorInfo
	// Threshold is t: how many distinct anchors must endorse a statement.
	// n/2 < Threshold <= n (see CheckThreshold).
	Threshold int
	// Created is when the network was created.
	Created time.Time
}

// DefaultThreshold returns floor(2n/3)+1, the smallest threshold that
// tolerates f = floor((n-1)/3) Byzantine anchors among n.
func DefaultThreshold(n int) int { return 2*n/3 + 1 }

// Tolerance returns how many Byzantine anchors a set of n anchors with
// threshold t tolerates: the largest f such that f anchors can neither
// reach t on their own (f < t), nor, together with honest anchors that
// each sign at most one statement per sequence number, make two conflicting
// statements both reach t (f < 2t-n), nor stop the honest anchors from
// reaching t (f <= n-t). For the default threshold it is floor((n-1)/3).
func Tolerance(n, t int) int {
	return max(0, min(t-1, 2*t-n-1, n-t))
}

// CheckThreshold returns a *RejectError (ReasonInvalid) unless n/2 < t <= n.
// A threshold of n/2 or less would let two disjoint groups of anchors each
// approve conflicting statements (two different certificates for one
// address, two forks of the anchor set).
func CheckThreshold(n, t int) error {
	switch {
	case n < 1 || n > MaxAnchors:
		return reject(ReasonInvalid, "%d anchors; a network needs 1 to %d", n, MaxAnchors)
	case t > n:
		return reject(ReasonInvalid, "threshold %d exceeds the number of anchors (%d), so no quorum could ever form; use at most %d (default %d, which tolerates %d Byzantine anchors)",
			t, n, n, DefaultThreshold(n), Tolerance(n, DefaultThreshold(n)))
	case 2*t <= n:
		return reject(ReasonInvalid, "threshold %d of %d anchors is too low: it must exceed n/2 (use at least %d) so that two disjoint groups of anchors cannot each approve conflicting statements; the default %d tolerates %d Byzantine anchors",
			t, n, n/2+1, DefaultThreshold(n), Tolerance(n, DefaultThreshold(n)))
	}
	return nil
}

// NewGenesis builds and checks a genesis created now from anchors whose
// keys the caller already holds (the one-anchor `weft init` path). Zero
// values select defaults: domain "" means addr.DefaultDomain, an invalid
// (zero) prefix means addr.DefaultIPv4Prefix, threshold 0 means
// DefaultThreshold(len(anchors)), an anchor without IPv4 gets one (see
// NewGenesisFromDescriptors), an anchor without name is called
// "anchor-<short id>". Created is the current time truncated to seconds,
// UTC; set it and call Check to build a genesis for another time.
func NewGenesis(name, domain string, prefix netip.Prefix, anchors []AnchorInfo, threshold int) (*Genesis, error) {
	g, err := newGenesis(name, domain, prefix, anchors, threshold, time.Now())
	if err != nil {
		return nil, fmt.Errorf("new genesis: %w", err)
	}
	return g, nil
}

// NewGenesisFromDescriptors assembles a genesis from the descriptors the
// anchors generated on their own machines (NewAnchorDescriptor), so that
// no private key leaves its machine. It verifies each descriptor's
// self-signature, refuses repeated keys and names, assigns each anchor an
// IPv4 address (addr.IPv4 attempts, no collision among anchors), and
// checks the threshold: 0 means DefaultThreshold(n); t <= n/2 or t > n is
// refused.
func NewGenesisFromDescriptors(name, domain string, prefix netip.Prefix, descs []*AnchorDescriptor, threshold int, created time.Time) (*Genesis, error) {
	var anchors []AnchorInfo
	for i, d := range descs {
		if d == nil {
			return nil, fmt.Errorf("new genesis: descriptor %d is missing", i)
		}
		if err := d.Verify(); err != nil {
			return nil, fmt.Errorf("new genesis: anchor %d: %w", i, err)
		}
		anchors = append(anchors, d.Info())
	}
	g, err := newGenesis(name, domain, prefix, anchors, threshold, created)
	if err != nil {
		return nil, fmt.Errorf("new genesis: %w", err)
	}
	return g, nil
}

func newGenesis(name, domain string, prefix netip.Prefix, anchors []AnchorInfo, threshold int, created time.Time) (*Genesis, error) {
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
		IPv4Prefix: prefix.Masked(),
		Anchors:    cloneAnchors(anchors),
		Threshold:  threshold,
		Created:    created.UTC().Truncate(time.Second),
	}
	if err := addr.CheckIPv4Prefix(g.IPv4Prefix); err != nil {
		return nil, reject(ReasonInvalid, "network %q: %v", name, err)
	}
	for i := range g.Anchors {
		a := &g.Anchors[i]
		if len(a.SignKey) != ed25519.PublicKeySize {
			return nil, reject(ReasonInvalid, "anchor %d key has %d bytes, want %d", i, len(a.SignKey), ed25519.PublicKeySize)
		}
		if a.Name == "" {
			a.Name = "anchor-" + a.NodeID().Short()
		}
	}
	if err := assignAnchorIPv4(g.IPv4Prefix, g.Anchors); err != nil {
		return nil, err
	}
	if err := g.Check(); err != nil {
		return nil, err
	}
	return g, nil
}

// assignAnchorIPv4 gives every anchor without a valid address the first
// addr.IPv4 candidate no other anchor holds.
func assignAnchorIPv4(p netip.Prefix, anchors []AnchorInfo) error {
	taken := map[netip.Addr]bool{}
	for _, a := range anchors {
		if a.IPv4.IsValid() {
			taken[a.IPv4] = true
		}
	}
	for i := range anchors {
		a := &anchors[i]
		if a.IPv4.IsValid() {
			continue
		}
		for attempt := 0; ; attempt++ {
			ip, err := ProposeIPv4(p, a.NodeID(), attempt)
			if err != nil {
				return reject(ReasonPoolExhausted, "no IPv4 address left in %v for anchor %s: %v", p, a.Name, err)
			}
			if !taken[ip] {
				a.IPv4 = ip
				taken[ip] = true
				break
			}
		}
	}
	return nil
}

// checkAnchorSet checks anchors and threshold for a network with prefix p;
// what names the set for messages.
func checkAnchorSet(p netip.Prefix, anchors []AnchorInfo, threshold int, what string) error {
	n := len(anchors)
	if n == 0 || n > MaxAnchors {
		return reject(ReasonInvalid, "%s has %d anchors; it needs 1 to %d", what, n, MaxAnchors)
	}
	names := make(map[string]int, n)
	ips := make(map[netip.Addr]int, n)
	for i := range anchors {
		a := &anchors[i]
		if len(a.SignKey) != ed25519.PublicKeySize {
			return reject(ReasonInvalid, "%s: anchor %d key has %d bytes, want %d", what, i, len(a.SignKey), ed25519.PublicKeySize)
		}
		for _, b := range anchors[:i] {
			if a.SignKey.Equal(b.SignKey) {
				return reject(ReasonInvalid, "%s lists anchor %s twice", what, keyShort(a.SignKey))
			}
		}
		if a.WGKey == ([32]byte{}) {
			return reject(ReasonInvalid, "%s: anchor %s has no WireGuard key", what, keyShort(a.SignKey))
		}
		if err := addr.CheckName(a.Name); err != nil {
			return reject(ReasonInvalid, "%s: anchor %s: %v", what, keyShort(a.SignKey), err)
		}
		if j, dup := names[a.Name]; dup {
			return reject(ReasonInvalid, "%s: anchors %d and %d are both named %q; anchor names must be unique", what, j, i, a.Name)
		}
		names[a.Name] = i
		if !usableIPv4(p, a.IPv4) {
			return reject(ReasonInvalid, "%s: anchor %s address %v is not a host address in %v", what, a.Name, a.IPv4, p)
		}
		if j, dup := ips[a.IPv4]; dup {
			return reject(ReasonInvalid, "%s: anchors %d and %d both have address %v", what, j, i, a.IPv4)
		}
		ips[a.IPv4] = i
		if len(a.Endpoints) > MaxAnchorEndpoints {
			return reject(ReasonInvalid, "%s: anchor %s has %d endpoints, at most %d allowed", what, a.Name, len(a.Endpoints), MaxAnchorEndpoints)
		}
		for _, ap := range a.Endpoints {
			if !ap.IsValid() || ap.Port() == 0 {
				return reject(ReasonInvalid, "%s: anchor %s endpoint %v is not an address:port", what, a.Name, ap)
			}
		}
	}
	if err := CheckThreshold(n, threshold); err != nil {
		return reject(ReasonInvalid, "%s: %v", what, err)
	}
	return nil
}

// usableIPv4 reports whether ip is a host address of p (not the network
// or broadcast address).
func usableIPv4(p netip.Prefix, ip netip.Addr) bool {
	if !ip.Is4() || !p.Contains(ip) || ip == p.Masked().Addr() {
		return false
	}
	if p.Bits() >= 31 {
		return true
	}
	b := ip.As4()
	host := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	mask := uint32(1)<<(32-p.Bits()) - 1
	return host&mask != mask
}

// Check returns a *RejectError (ReasonInvalid) if g is not a usable
// genesis: bad name, domain or prefix, no anchors or more than MaxAnchors,
// a malformed or repeated anchor key, name or address, or a threshold
// outside n/2 < t <= n.
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
	if g.IPv4Prefix != g.IPv4Prefix.Masked() {
		return reject(ReasonInvalid, "network %q: prefix %v has host bits set", g.Name, g.IPv4Prefix)
	}
	return checkAnchorSet(g.IPv4Prefix, g.Anchors, g.Threshold, fmt.Sprintf("network %q", g.Name))
}

// ID returns the network ID: SHA-256 of Marshal().
func (g *Genesis) ID() addr.NetworkID { return addr.NetworkID(sha256.Sum256(g.Marshal())) }

// IsAnchor reports whether pub is one of g's initial anchors, and its index
// in g.Anchors. Use View.Set().IsAnchor for the current anchors.
func (g *Genesis) IsAnchor(pub ed25519.PublicKey) (int, bool) {
	i := anchorIndex(g.Anchors, pub)
	return i, i >= 0
}

// Set returns the initial anchor set (Seq 0) of g.
func (g *Genesis) Set() *AnchorSet {
	return &AnchorSet{Genesis: g, Network: g.ID(), Seq: 0, Hash: [32]byte(g.ID()),
		Anchors: cloneAnchors(g.Anchors), Threshold: g.Threshold, Created: g.Created}
}

func anchorIndex(list []AnchorInfo, pub ed25519.PublicKey) int {
	for i := range list {
		if list[i].SignKey.Equal(pub) {
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
	encodeAnchors(e, g.Anchors)
	e.uvarint(uint64(g.Threshold))
	e.time(g.Created)
}

// UnmarshalGenesis decodes and checks a genesis. Errors are *RejectError
// with ReasonMalformed or ReasonInvalid.
func UnmarshalGenesis(b []byte) (*Genesis, error) {
	if len(b) > maxStmt {
		return nil, reject(ReasonMalformed, "malformed genesis: %d bytes exceeds limit %d", len(b), maxStmt)
	}
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
	g.Anchors = decodeAnchors(d)
	g.Threshold = d.length("threshold", MaxAnchors)
	g.Created = d.time()
	return g
}

// GenesisPrefix starts every encoded genesis token.
const GenesisPrefix = "weft-genesis1-"

// Encode returns g as one line, "weft-genesis1-" + base64url, so that the
// anchors can hand it to each other and to members.
func (g *Genesis) Encode() string { return encodeToken(GenesisPrefix, g.Marshal()) }

// ParseGenesisToken decodes and checks a token made by Genesis.Encode.
// Compare the result's ID with the network ID the operators announced
// before trusting it.
func ParseGenesisToken(s string) (*Genesis, error) {
	b, err := decodeToken(s, GenesisPrefix, "genesis", "`weft trust genesis`", maxStmt)
	if err != nil {
		return nil, err
	}
	return UnmarshalGenesis(b)
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
