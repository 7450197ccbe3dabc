package trust

import (
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/weft-net/weft/addr"
)

// AnchorDescriptor is what a future anchor generates on its own machine
// and hands to whoever assembles the genesis (NewGenesisFromDescriptors):
// its public keys, name and endpoints, signed by its Ed25519 key to prove
// that it holds the key. The private key never leaves the machine.
type AnchorDescriptor struct {
	// SignKey is the anchor's Ed25519 public key.
	SignKey ed25519.PublicKey
	// WGKey is the anchor's Curve25519 (WireGuard) public key.
	WGKey [32]byte
	// Name is the anchor's node name (a DNS label).
	Name string
	// Endpoints are UDP addresses the anchor will be reachable at, at most
	// MaxAnchorEndpoints.
	Endpoints []netip.AddrPort
	// Sig is SignKey's signature over the fields above.
	Sig []byte
}

// DescriptorPrefix starts every encoded anchor descriptor.
const DescriptorPrefix = "weft-anchor1-"

// NewAnchorDescriptor describes id as an anchor named name (empty means
// "anchor-<short id>") reachable at endpoints, and signs the description.
func NewAnchorDescriptor(id *Identity, name string, endpoints []netip.AddrPort) (*AnchorDescriptor, error) {
	if len(id.Sign) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("anchor descriptor: Ed25519 key has %d bytes, want %d", len(id.Sign), ed25519.PrivateKeySize)
	}
	if name == "" {
		name = "anchor-" + id.NodeID().Short()
	}
	d := &AnchorDescriptor{SignKey: id.SignPublic(), WGKey: id.WGPublic(), Name: name,
		Endpoints: append([]netip.AddrPort(nil), endpoints...)}
	if len(d.Endpoints) == 0 {
		d.Endpoints = nil
	}
	d.Sig = ed25519.Sign(id.Sign, signedMessage(ctxDescriptor, d.signedBody()))
	if err := d.Verify(); err != nil {
		return nil, fmt.Errorf("anchor descriptor: %w", err)
	}
	return d, nil
}

// Info returns the descriptor as an AnchorInfo (without IPv4, which the
// genesis assigns).
func (d *AnchorDescriptor) Info() AnchorInfo {
	return (&AnchorInfo{SignKey: d.SignKey, WGKey: d.WGKey, Name: d.Name, Endpoints: d.Endpoints}).clone()
}

func (d *AnchorDescriptor) encodeBody(e *encoder) {
	e.u8(tagDescriptor)
	e.u8(wireVersion)
	e.bytes(d.SignKey)
	e.raw(d.WGKey[:])
	e.str(d.Name)
	e.uvarint(uint64(len(d.Endpoints)))
	for _, ap := range d.Endpoints {
		e.addrPort(ap)
	}
}

func (d *AnchorDescriptor) signedBody() []byte {
	var e encoder
	d.encodeBody(&e)
	return e.b
}

// Verify checks the descriptor's content and its self-signature.
func (d *AnchorDescriptor) Verify() error {
	if len(d.SignKey) != ed25519.PublicKeySize {
		return reject(ReasonMalformed, "anchor descriptor: signing key has %d bytes, want %d", len(d.SignKey), ed25519.PublicKeySize)
	}
	if d.WGKey == ([32]byte{}) {
		return reject(ReasonInvalid, "anchor descriptor of %s has no WireGuard key", keyShort(d.SignKey))
	}
	if err := addr.CheckName(d.Name); err != nil {
		return reject(ReasonInvalid, "anchor descriptor of %s: %v", keyShort(d.SignKey), err)
	}
	if len(d.Endpoints) > MaxAnchorEndpoints {
		return reject(ReasonInvalid, "anchor descriptor of %s has %d endpoints, at most %d allowed", d.Name, len(d.Endpoints), MaxAnchorEndpoints)
	}
	for _, ap := range d.Endpoints {
		if !ap.IsValid() || ap.Port() == 0 {
			return reject(ReasonInvalid, "anchor descriptor of %s: endpoint %v is not an address:port", d.Name, ap)
		}
	}
	if len(d.Sig) != ed25519.SignatureSize || !ed25519.Verify(d.SignKey, signedMessage(ctxDescriptor, d.signedBody()), d.Sig) {
		return reject(ReasonBadSignature, "anchor descriptor of %s (%s) is not signed by its key; ask the anchor's operator for a fresh `weft trust keygen` output",
			d.Name, keyShort(d.SignKey))
	}
	return nil
}

// Marshal returns the canonical encoding of d.
func (d *AnchorDescriptor) Marshal() []byte {
	var e encoder
	d.encodeBody(&e)
	e.bytes(d.Sig)
	return e.b
}

// UnmarshalAnchorDescriptor decodes a descriptor (structure only; call
// Verify).
func UnmarshalAnchorDescriptor(b []byte) (*AnchorDescriptor, error) {
	if len(b) > maxStmt {
		return nil, reject(ReasonMalformed, "malformed anchor descriptor: %d bytes exceeds limit %d", len(b), maxStmt)
	}
	dec := decoder{b: b}
	d := new(AnchorDescriptor)
	dec.header(tagDescriptor, "anchor descriptor")
	d.SignKey = dec.bytes("anchor key", ed25519.PublicKeySize)
	dec.array32(&d.WGKey)
	d.Name = dec.str("anchor name", maxString)
	n := dec.length("anchor endpoints", MaxAnchorEndpoints)
	for i := 0; i < n && dec.err == nil; i++ {
		d.Endpoints = append(d.Endpoints, dec.addrPort())
	}
	d.Sig = dec.bytes("signature", ed25519.SignatureSize)
	if err := dec.finish("anchor descriptor"); err != nil {
		return nil, err
	}
	return d, nil
}

// Encode returns d as one line: "weft-anchor1-" + base64url.
func (d *AnchorDescriptor) Encode() string { return encodeToken(DescriptorPrefix, d.Marshal()) }

// ParseAnchorDescriptor decodes a token made by Encode and verifies its
// self-signature.
func ParseAnchorDescriptor(s string) (*AnchorDescriptor, error) {
	b, err := decodeToken(s, DescriptorPrefix, "anchor descriptor", "`weft trust keygen`", maxStmt)
	if err != nil {
		return nil, err
	}
	d, err := UnmarshalAnchorDescriptor(b)
	if err != nil {
		return nil, err
	}
	if err := d.Verify(); err != nil {
		return nil, err
	}
	return d, nil
}

// ipv4HashProbes is how many hashed candidates (addr.IPv4 attempts) are
// proposed before ProposeIPv4 falls back to a linear scan of the prefix.
const ipv4HashProbes = 64

// ProposeIPv4 returns the IPv4 address a node proposes on its attempt-th
// try: addr.IPv4(prefix, id, attempt) for the first ipv4HashProbes
// attempts, then the addresses after candidate 0 in order, so that every
// host address of a small prefix is eventually proposed. It fails when
// attempt exceeds the number of candidates.
func ProposeIPv4(prefix netip.Prefix, id addr.NodeID, attempt int) (netip.Addr, error) {
	if attempt < ipv4HashProbes {
		return addr.IPv4(prefix, id, attempt)
	}
	hosts := addr.IPv4Hosts(prefix)
	i := attempt - ipv4HashProbes
	if i >= hosts {
		return netip.Addr{}, reject(ReasonPoolExhausted, "all %d addresses of %v were proposed and taken; the network's anchors must remove nodes before admitting more", hosts, prefix)
	}
	first, err := addr.IPv4(prefix, id, 0)
	if err != nil {
		return netip.Addr{}, err
	}
	base := prefix.Masked().Addr().As4()
	network := binary.BigEndian.Uint32(base[:])
	f := first.As4()
	off := binary.BigEndian.Uint32(f[:]) - network // 1..hosts
	off = (off-1+uint32(i)+1)%uint32(hosts) + 1
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], network+off)
	return netip.AddrFrom4(b), nil
}
