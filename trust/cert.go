package trust

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/weft-net/weft/addr"
)

// Certificate is a node's membership certificate. It is valid only with
// endorsements from at least Threshold distinct current anchors of its
// network (see Verify).
type Certificate struct {
	// Network is the ID of the network the node belongs to.
	Network addr.NetworkID
	// NodeID must equal addr.NodeIDFromKey(SignKey).
	NodeID addr.NodeID
	// SignKey is the node's Ed25519 public key.
	SignKey ed25519.PublicKey
	// WGKey is the node's Curve25519 (WireGuard) public key.
	WGKey [32]byte
	// Name is the node's DNS label, unique in the network.
	Name string
	// IPv4 is the node's IPv4 overlay address, inside the genesis prefix.
	IPv4 netip.Addr
	// Tags are policy tags (each a DNS label), at most MaxTags.
	Tags []string
	// NotBefore and NotAfter bound the validity window (inclusive).
	NotBefore, NotAfter time.Time
	// Serial is the issuing anchor's serial number; a reissued certificate
	// for the same node has a higher serial.
	Serial uint64
	// Endorsements are the anchors' signatures over everything above.
	Endorsements []Endorsement
}

// IPv6 returns the node's IPv6 overlay address, derived from Network and
// NodeID.
func (c *Certificate) IPv6() netip.Addr { return addr.IPv6(c.Network, c.NodeID) }

// signedBody returns the encoding of every field except the endorsements.
func (c *Certificate) signedBody() []byte {
	var e encoder
	c.encodeBody(&e)
	return e.b
}

func (c *Certificate) encodeBody(e *encoder) {
	e.u8(tagCertificate)
	e.u8(wireVersion)
	e.raw(c.Network[:])
	e.raw(c.NodeID[:])
	e.bytes(c.SignKey)
	e.raw(c.WGKey[:])
	e.str(c.Name)
	e.addr(c.IPv4)
	e.uvarint(uint64(len(c.Tags)))
	for _, t := range c.Tags {
		e.str(t)
	}
	e.time(c.NotBefore)
	e.time(c.NotAfter)
	e.u64(c.Serial)
}

// Endorse adds (or replaces) the endorsement of the anchor holding key.
// It fails only if key is not a 64-byte Ed25519 private key.
func (c *Certificate) Endorse(anchor ed25519.PrivateKey) error {
	var err error
	c.Endorsements, err = addEndorsement(c.Endorsements, anchor, signedMessage(ctxCertificate, c.signedBody()))
	return err
}

// AddEndorsement adds e (an anchor's answer to a join or renew request)
// to c after checking that e is a valid signature over c's body. It does
// not check that e.Anchor is an anchor; verification does. An endorsement
// by an anchor already present replaces the old one.
func (c *Certificate) AddEndorsement(e Endorsement) error {
	if len(e.Anchor) != ed25519.PublicKeySize || len(e.Sig) != ed25519.SignatureSize ||
		!ed25519.Verify(e.Anchor, c.message(), e.Sig) {
		return reject(ReasonBadSignature, "endorsement by %s does not sign this certificate body of %s (%s); the anchor endorsed a different proposal — send the same request to every anchor",
			keyShortSafe(e.Anchor), c.Name, c.NodeID.Short())
	}
	for i := range c.Endorsements {
		if c.Endorsements[i].Anchor.Equal(e.Anchor) {
			c.Endorsements[i] = cloneEndorsement(e)
			return nil
		}
	}
	c.Endorsements = append(c.Endorsements, cloneEndorsement(e))
	return nil
}

func (c *Certificate) message() []byte { return signedMessage(ctxCertificate, c.signedBody()) }

// Verify checks c against the genesis anchor set of g at time now; it is
// NewView(g).VerifyCertificate(c, now). Members that follow anchor-set
// changes and revocations verify against their View instead.
func (c *Certificate) Verify(g *Genesis, now time.Time) error {
	if g == nil {
		return reject(ReasonInvalid, "certificate of %s: no genesis to verify against", c.Name)
	}
	return NewView(g).VerifyCertificate(c, now)
}

// verifyAt checks c against set at now; revoked reports revoked nodes.
func (c *Certificate) verifyAt(set *AnchorSet, revoked func(addr.NodeID) bool, now time.Time) error {
	if err := c.checkContent(set.Genesis); err != nil {
		return err
	}
	if revoked != nil && revoked(c.NodeID) {
		return reject(ReasonRevoked, "node %s (%s) has been revoked by the network's anchors; drop its tunnels and records — it needs a new key and invite to rejoin",
			c.Name, c.NodeID.Short())
	}
	if now.Before(c.NotBefore) {
		return reject(ReasonNotYetValid, "certificate of %s (%s) is not valid before %s (now %s); check this machine's clock",
			c.Name, c.NodeID.Short(), fmtTime(c.NotBefore), fmtTime(now))
	}
	if now.After(c.NotAfter) {
		return reject(ReasonExpired, "certificate of %s (%s) expired at %s; rejoin with a new invite (`weft join`) or ask an anchor to renew it",
			c.Name, c.NodeID.Short(), fmtTime(c.NotAfter))
	}
	if len(c.Endorsements) == 0 {
		if _, ok := set.IsAnchor(c.SignKey); ok {
			want, err := AnchorCertificate(set, c.SignKey)
			if err != nil {
				return err
			}
			if !bytes.Equal(want.marshal(), c.marshal()) {
				return reject(ReasonInvalid, "anchor certificate of %s (%s) differs from the one derived from anchor set %d; the anchor must use the certificate of the current set",
					c.Name, c.NodeID.Short(), set.Seq)
			}
			return nil
		}
	}
	return verifyEndorsements(set, revoked, c.Endorsements, c.message(),
		fmt.Sprintf("certificate of %s (%s)", c.Name, c.NodeID.Short()),
		"do not trust this node; it must join again with `weft join` using a valid invite")
}

// checkContent is Verify without time and endorsements.
func (c *Certificate) checkContent(g *Genesis) error {
	if g == nil {
		return reject(ReasonInvalid, "certificate of %s: no genesis to verify against", c.Name)
	}
	if id := g.ID(); c.Network != id {
		return reject(ReasonWrongNetwork, "certificate of %s (%s) belongs to network %s, not to network %s; the node must join this network with an invite from one of its anchors",
			c.Name, c.NodeID.Short(), c.Network.Short(), g.describe())
	}
	if len(c.SignKey) != ed25519.PublicKeySize {
		return reject(ReasonMalformed, "certificate of %s: signing key has %d bytes, want %d", c.Name, len(c.SignKey), ed25519.PublicKeySize)
	}
	if want := addr.NodeIDFromKey(c.SignKey); c.NodeID != want {
		return reject(ReasonInvalid, "certificate claims node ID %s but its key hashes to %s; it is forged", c.NodeID.Short(), want.Short())
	}
	if err := addr.CheckName(c.Name); err != nil {
		return reject(ReasonInvalid, "certificate of %s: %v", c.NodeID.Short(), err)
	}
	if err := checkTags(c.Tags); err != nil {
		return reject(ReasonInvalid, "certificate of %s: %v", c.Name, err)
	}
	if !usableIPv4(g.IPv4Prefix, c.IPv4) {
		return reject(ReasonInvalid, "certificate of %s: IPv4 address %v is outside the network prefix %v", c.Name, c.IPv4, g.IPv4Prefix)
	}
	if c.NotAfter.Before(c.NotBefore) {
		return reject(ReasonInvalid, "certificate of %s: NotAfter %s is before NotBefore %s", c.Name, fmtTime(c.NotAfter), fmtTime(c.NotBefore))
	}
	return nil
}

// Marshal returns the canonical encoding of c, endorsements included. It
// fails if c exceeds the decoder's bounds (key sizes, MaxTags, MaxAnchors
// endorsements, string lengths), so it never produces bytes that
// UnmarshalCertificate would refuse.
func (c *Certificate) Marshal() ([]byte, error) {
	b := c.marshal()
	if _, err := UnmarshalCertificate(b); err != nil {
		return nil, fmt.Errorf("encode certificate of %s: %w", c.Name, err)
	}
	return b, nil
}

func (c *Certificate) marshal() []byte {
	var e encoder
	c.encodeBody(&e)
	encodeEndorsements(&e, c.Endorsements)
	return e.b
}

// UnmarshalCertificate decodes a certificate. It checks structure only;
// call Verify before trusting it. Errors are *RejectError (ReasonMalformed).
func UnmarshalCertificate(b []byte) (*Certificate, error) {
	if len(b) > maxCertLen {
		return nil, reject(ReasonMalformed, "malformed certificate: %d bytes exceeds limit %d", len(b), maxCertLen)
	}
	d := decoder{b: b}
	c := decodeCertificate(&d)
	if err := d.finish("certificate"); err != nil {
		return nil, err
	}
	return c, nil
}

// Unmarshal decodes b into c (see UnmarshalCertificate).
func (c *Certificate) Unmarshal(b []byte) error {
	v, err := UnmarshalCertificate(b)
	if err != nil {
		return err
	}
	*c = *v
	return nil
}

func decodeCertificate(d *decoder) *Certificate {
	c := new(Certificate)
	d.header(tagCertificate, "certificate")
	copy(c.Network[:], d.take(32))
	copy(c.NodeID[:], d.take(32))
	c.SignKey = d.bytes("signing key", ed25519.PublicKeySize)
	d.array32(&c.WGKey)
	c.Name = d.str("name", maxString)
	c.IPv4 = d.addr()
	n := d.length("tags", MaxTags)
	for i := 0; i < n && d.err == nil; i++ {
		c.Tags = append(c.Tags, d.str("tag", maxString))
	}
	c.NotBefore = d.time()
	c.NotAfter = d.time()
	c.Serial = d.u64()
	c.Endorsements = decodeEndorsements(d)
	return c
}

// SaveCertificate writes c to dir/cert atomically with mode 0600.
func SaveCertificate(dir string, c *Certificate) error {
	b, err := c.Marshal()
	if err != nil {
		return fmt.Errorf("save certificate: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, CertificateFile), b, 0o600); err != nil {
		return fmt.Errorf("save certificate: %w", err)
	}
	return nil
}

// LoadCertificate reads dir/cert. It does not Verify it. A missing file
// yields an error wrapping fs.ErrNotExist.
func LoadCertificate(dir string) (*Certificate, error) {
	path := filepath.Join(dir, CertificateFile)
	b, err := readFileLimited(path)
	if err != nil {
		return nil, fmt.Errorf("load certificate: %w", err)
	}
	c, err := UnmarshalCertificate(b)
	if err != nil {
		return nil, fmt.Errorf("load certificate %s: %w", path, err)
	}
	return c, nil
}

// checkTags checks that tags are at most MaxTags distinct DNS labels.
func checkTags(tags []string) error {
	if len(tags) > MaxTags {
		return fmt.Errorf("%d tags, at most %d allowed", len(tags), MaxTags)
	}
	for i, t := range tags {
		if err := addr.CheckName(t); err != nil {
			return fmt.Errorf("tag: %v", err)
		}
		for _, u := range tags[:i] {
			if u == t {
				return fmt.Errorf("tag %q listed twice", t)
			}
		}
	}
	return nil
}

func cloneEndorsement(e Endorsement) Endorsement {
	return Endorsement{Anchor: append(ed25519.PublicKey(nil), e.Anchor...), Sig: append([]byte(nil), e.Sig...)}
}

// keyShortSafe is keyShort for keys that may be malformed.
func keyShortSafe(pub ed25519.PublicKey) string {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Sprintf("<%d-byte key>", len(pub))
	}
	return keyShort(pub)
}

// certificate decodes a length-prefixed certificate embedded in another
// object (node records, renew requests).
func (d *decoder) certificate() *Certificate {
	cb := d.bytes("certificate", maxCertLen)
	if d.err != nil {
		return nil
	}
	c, err := UnmarshalCertificate(cb)
	if err != nil {
		d.fail("certificate: %v", err)
	}
	return c
}
