package trust

import (
	"crypto/ed25519"
	"fmt"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/weft-net/weft/addr"
)

// Revocation removes a node from the network for good. It names the node
// by NodeID (the hash of its key, never a hash of certificate bytes), so
// every certificate and record of that key is refused, including ones
// issued later. It is valid with endorsements from at least the threshold
// of distinct anchors of the current set. An anchor can be revoked too
// (by t others): its endorsements then no longer count, although it stays
// in the anchor set until an AnchorChange removes it.
type Revocation struct {
	// Network is the network's ID.
	Network addr.NetworkID
	// NodeID is the revoked node.
	NodeID addr.NodeID
	// Reason is a short human-readable explanation (at most 253 bytes of
	// printable UTF-8), shown in logs and `weft status`.
	Reason string
	// Created is when the revocation was proposed.
	Created time.Time
	// Endorsements are anchor signatures over the fields above.
	Endorsements []Endorsement
}

// RevocationPrefix starts every encoded revocation.
const RevocationPrefix = "weft-revoke1-"

// NewRevocation proposes revoking node id of network for reason. It
// carries no endorsement yet; anchors add theirs with Endorse (or
// Anchor.EndorseRevocation).
func NewRevocation(network addr.NetworkID, id addr.NodeID, reason string, created time.Time) (*Revocation, error) {
	r := &Revocation{Network: network, NodeID: id, Reason: reason, Created: created.UTC().Truncate(time.Second)}
	if err := r.checkContent(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Revocation) checkContent() error {
	if r.NodeID.IsZero() {
		return reject(ReasonInvalid, "revocation names no node")
	}
	if err := checkText(r.Reason); err != nil {
		return reject(ReasonInvalid, "revocation of %s: reason %v", r.NodeID.Short(), err)
	}
	return nil
}

// checkText accepts short printable UTF-8 text.
func checkText(s string) error {
	if len(s) > maxString {
		return fmt.Errorf("is %d bytes, at most %d allowed", len(s), maxString)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("is not UTF-8")
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("contains the non-printable character %U", r)
		}
	}
	return nil
}

func (r *Revocation) encodeBody(e *encoder) {
	e.u8(tagRevocation)
	e.u8(wireVersion)
	e.raw(r.Network[:])
	e.raw(r.NodeID[:])
	e.str(r.Reason)
	e.time(r.Created)
}

func (r *Revocation) message() []byte {
	var e encoder
	r.encodeBody(&e)
	return signedMessage(ctxRevocation, e.b)
}

// Endorse adds (or replaces) the endorsement of the anchor holding key.
func (r *Revocation) Endorse(key ed25519.PrivateKey) error {
	var err error
	r.Endorsements, err = addEndorsement(r.Endorsements, key, r.message())
	return err
}

// verifyAt checks r against set.
func (r *Revocation) verifyAt(set *AnchorSet, revoked func(addr.NodeID) bool) error {
	if r.Network != set.Network {
		return reject(ReasonWrongNetwork, "revocation of %s is for network %s, not %s; ignore it", r.NodeID.Short(), r.Network.Short(), set.Genesis.describe())
	}
	if err := r.checkContent(); err != nil {
		return err
	}
	return verifyEndorsements(set, revoked, r.Endorsements, r.message(), "revocation of "+r.NodeID.Short(),
		"ignore it; a revocation needs the threshold of current anchors (`weft revoke` on each anchor)")
}

// Marshal returns the canonical encoding of r.
func (r *Revocation) Marshal() []byte {
	var e encoder
	r.encodeBody(&e)
	encodeEndorsements(&e, r.Endorsements)
	return e.b
}

// UnmarshalRevocation decodes a revocation (structure only; View verifies).
func UnmarshalRevocation(b []byte) (*Revocation, error) {
	if len(b) > maxStmt {
		return nil, reject(ReasonMalformed, "malformed revocation: %d bytes exceeds limit %d", len(b), maxStmt)
	}
	d := decoder{b: b}
	r := new(Revocation)
	d.header(tagRevocation, "revocation")
	copy(r.Network[:], d.take(32))
	copy(r.NodeID[:], d.take(32))
	r.Reason = d.str("reason", maxString)
	r.Created = d.time()
	r.Endorsements = decodeEndorsements(&d)
	if err := d.finish("revocation"); err != nil {
		return nil, err
	}
	return r, nil
}

// Encode returns r as one line: "weft-revoke1-" + base64url.
func (r *Revocation) Encode() string { return encodeToken(RevocationPrefix, r.Marshal()) }

// ParseRevocation decodes a token made by Revocation.Encode (structure
// only).
func ParseRevocation(s string) (*Revocation, error) {
	b, err := decodeToken(s, RevocationPrefix, "revocation", "`weft revoke`", maxStmt)
	if err != nil {
		return nil, err
	}
	return UnmarshalRevocation(b)
}
