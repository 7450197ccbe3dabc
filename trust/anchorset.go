package trust

import (
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"time"

	"github.com/weft-net/weft/addr"
)

// AnchorTag is the policy tag every derived anchor certificate carries.
const AnchorTag = "anchor"

// AnchorCertValidity is how long after the genesis was created derived
// anchor certificates stay valid.
const anchorCertYears = 100

// AnchorSet is the anchor set in force at one point of a network's chain:
// the genesis set (Seq 0) or the result of Seq anchor-set changes.
// AnchorSets are immutable; do not modify one obtained from a View.
type AnchorSet struct {
	// Genesis is the network's genesis.
	Genesis *Genesis
	// Network is Genesis.ID().
	Network addr.NetworkID
	// Seq is 0 for the genesis set and the Seq of the last applied change
	// otherwise.
	Seq uint64
	// Hash identifies the set: the network ID for Seq 0, the SHA-256 of the
	// last change's signed body otherwise. The next change names it as Prev.
	Hash [32]byte
	// Anchors are the anchors of this set.
	Anchors []AnchorInfo
	// Threshold is how many distinct anchors of this set must endorse a
	// statement.
	Threshold int
	// Created is when the set was decided (genesis or change Created).
	Created time.Time
}

// IsAnchor reports whether pub is an anchor of s and its index.
func (s *AnchorSet) IsAnchor(pub ed25519.PublicKey) (int, bool) {
	i := anchorIndex(s.Anchors, pub)
	return i, i >= 0
}

// Anchor returns the anchor of s with NodeID id.
func (s *AnchorSet) Anchor(id addr.NodeID) (AnchorInfo, bool) {
	for _, a := range s.Anchors {
		if a.NodeID() == id {
			return a.clone(), true
		}
	}
	return AnchorInfo{}, false
}

// Tolerance returns how many Byzantine anchors s tolerates (see the
// function Tolerance).
func (s *AnchorSet) Tolerance() int { return Tolerance(len(s.Anchors), s.Threshold) }

func (s *AnchorSet) describe() string {
	return fmt.Sprintf("%s (anchor set %d: %d of %d)", s.Genesis.describe(), s.Seq, s.Threshold, len(s.Anchors))
}

// AnchorCertificate returns the certificate of the anchor holding signKey
// in set. It is derived, not signed: Network and the anchor's keys, name
// and IPv4 from set, Tags [AnchorTag], NotBefore = genesis Created −
// CertBackdate, NotAfter = genesis Created + 100 years, Serial 0 and no
// endorsements. View.VerifyCertificate accepts a certificate without
// endorsements exactly when it equals the one derived from the current
// set. It fails with ReasonNotAnchor if signKey is not an anchor of set.
func AnchorCertificate(set *AnchorSet, signKey ed25519.PublicKey) (*Certificate, error) {
	i, ok := set.IsAnchor(signKey)
	if !ok {
		return nil, reject(ReasonNotAnchor, "key %s is not an anchor of network %s; only anchors have derived certificates",
			keyShort(signKey), set.describe())
	}
	a := &set.Anchors[i]
	created := set.Genesis.Created
	return &Certificate{
		Network:   set.Network,
		NodeID:    a.NodeID(),
		SignKey:   append(ed25519.PublicKey(nil), a.SignKey...),
		WGKey:     a.WGKey,
		Name:      a.Name,
		IPv4:      a.IPv4,
		Tags:      []string{AnchorTag},
		NotBefore: created.Add(-CertBackdate),
		NotAfter:  created.AddDate(anchorCertYears, 0, 0),
		Serial:    0,
	}, nil
}

// AnchorChange replaces the anchor set: adding, removing or rotating an
// anchor's key are all expressed as a new full set. It is valid iff it
// names the current set (Seq = current Seq + 1, Prev = current Hash) and
// at least the current threshold of distinct current anchors endorsed it.
type AnchorChange struct {
	// Network is the network's ID.
	Network addr.NetworkID
	// Seq is the current set's Seq + 1.
	Seq uint64
	// Prev is the Hash of the set this change replaces (the network ID for
	// the first change).
	Prev [32]byte
	// Anchors is the new anchor set.
	Anchors []AnchorInfo
	// Threshold is the new threshold (n/2 < t <= n).
	Threshold int
	// Created is when the change was proposed; not before the current
	// set's Created.
	Created time.Time
	// Endorsements are signatures of anchors of the current set.
	Endorsements []Endorsement
}

// ChangePrefix starts every encoded anchor-set change.
const ChangePrefix = "weft-change1-"

// NewAnchorChange proposes replacing cur with anchors and threshold
// (0 means DefaultThreshold). Anchors without IPv4 get one as in
// NewGenesisFromDescriptors; an anchor that stays keeps its address.
func NewAnchorChange(cur *AnchorSet, anchors []AnchorInfo, threshold int, created time.Time) (*AnchorChange, error) {
	if threshold == 0 {
		threshold = DefaultThreshold(len(anchors))
	}
	ch := &AnchorChange{Network: cur.Network, Seq: cur.Seq + 1, Prev: cur.Hash, Anchors: cloneAnchors(anchors),
		Threshold: threshold, Created: created.UTC().Truncate(time.Second)}
	for i := range ch.Anchors {
		a := &ch.Anchors[i]
		if a.Name == "" {
			a.Name = "anchor-" + a.NodeID().Short()
		}
		if j, ok := cur.IsAnchor(a.SignKey); ok && !a.IPv4.IsValid() {
			a.IPv4 = cur.Anchors[j].IPv4
		}
	}
	if err := assignAnchorIPv4(cur.Genesis.IPv4Prefix, ch.Anchors); err != nil {
		return nil, err
	}
	if err := cur.checkChange(ch); err != nil {
		return nil, fmt.Errorf("new anchor change: %w", err)
	}
	return ch, nil
}

// Hash returns the SHA-256 of the signed body: the Hash of the set that
// results from applying ch.
func (ch *AnchorChange) Hash() [32]byte { return sha256.Sum256(ch.signedBody()) }

func (ch *AnchorChange) encodeBody(e *encoder) {
	e.u8(tagChange)
	e.u8(wireVersion)
	e.raw(ch.Network[:])
	e.u64(ch.Seq)
	e.raw(ch.Prev[:])
	encodeAnchors(e, ch.Anchors)
	e.uvarint(uint64(ch.Threshold))
	e.time(ch.Created)
}

func (ch *AnchorChange) signedBody() []byte {
	var e encoder
	ch.encodeBody(&e)
	return e.b
}

func (ch *AnchorChange) message() []byte { return signedMessage(ctxChange, ch.signedBody()) }

// Endorse adds (or replaces) the endorsement of the anchor holding key.
// It signs anything; Anchor.EndorseChange is what an honest anchor uses,
// since it refuses to sign two different changes with the same Seq.
func (ch *AnchorChange) Endorse(key ed25519.PrivateKey) error {
	var err error
	ch.Endorsements, err = addEndorsement(ch.Endorsements, key, ch.message())
	return err
}

// checkChange checks that ch may follow s, except for endorsements.
func (s *AnchorSet) checkChange(ch *AnchorChange) error {
	if ch.Network != s.Network {
		return reject(ReasonWrongNetwork, "anchor-set change %d is for network %s, not %s; it belongs to another network",
			ch.Seq, ch.Network.Short(), s.Genesis.describe())
	}
	switch {
	case ch.Seq <= s.Seq:
		return reject(ReasonReplayed, "anchor-set change %d is not newer than the anchor set held (seq %d); it is stale or replayed — nothing to do",
			ch.Seq, s.Seq)
	case ch.Seq > s.Seq+1:
		return reject(ReasonFork, "anchor-set change %d does not follow the anchor set held (seq %d); fetch and apply changes %d..%d first",
			ch.Seq, s.Seq, s.Seq+1, ch.Seq-1)
	case ch.Prev != s.Hash:
		return reject(ReasonFork, "anchor-set change %d names a previous set %x that is not the one held (%x); it forks the anchor chain — refuse it and alert the network's operators",
			ch.Seq, ch.Prev[:6], s.Hash[:6])
	}
	if ch.Created.Before(s.Created) {
		return reject(ReasonInvalid, "anchor-set change %d is dated %s, before the set it replaces (%s)", ch.Seq, fmtTime(ch.Created), fmtTime(s.Created))
	}
	return checkAnchorSet(s.Genesis.IPv4Prefix, ch.Anchors, ch.Threshold, fmt.Sprintf("anchor-set change %d", ch.Seq))
}

// next verifies ch against s (content, linkage and at least s.Threshold
// endorsements by anchors of s not revoked) and returns the new set.
func (s *AnchorSet) next(ch *AnchorChange, revoked func(addr.NodeID) bool) (*AnchorSet, error) {
	if err := s.checkChange(ch); err != nil {
		return nil, err
	}
	if err := verifyEndorsements(s, revoked, ch.Endorsements, ch.message(),
		fmt.Sprintf("anchor-set change %d", ch.Seq), "refuse it; a change needs the current threshold of current anchors (`weft trust change cosign`)"); err != nil {
		return nil, err
	}
	return &AnchorSet{Genesis: s.Genesis, Network: s.Network, Seq: ch.Seq, Hash: ch.Hash(),
		Anchors: cloneAnchors(ch.Anchors), Threshold: ch.Threshold, Created: ch.Created}, nil
}

// Marshal returns the canonical encoding of ch.
func (ch *AnchorChange) Marshal() []byte {
	var e encoder
	ch.encodeBody(&e)
	encodeEndorsements(&e, ch.Endorsements)
	return e.b
}

// UnmarshalAnchorChange decodes a change (structure only; View.ApplyChange
// verifies it).
func UnmarshalAnchorChange(b []byte) (*AnchorChange, error) {
	if len(b) > maxStmt {
		return nil, reject(ReasonMalformed, "malformed anchor-set change: %d bytes exceeds limit %d", len(b), maxStmt)
	}
	d := decoder{b: b}
	ch := decodeChange(&d)
	if err := d.finish("anchor-set change"); err != nil {
		return nil, err
	}
	return ch, nil
}

func decodeChange(d *decoder) *AnchorChange {
	ch := new(AnchorChange)
	d.header(tagChange, "anchor-set change")
	copy(ch.Network[:], d.take(32))
	ch.Seq = d.u64()
	copy(ch.Prev[:], d.take(32))
	ch.Anchors = decodeAnchors(d)
	ch.Threshold = d.length("threshold", MaxAnchors)
	ch.Created = d.time()
	ch.Endorsements = decodeEndorsements(d)
	return ch
}

// Encode returns ch as one line: "weft-change1-" + base64url.
func (ch *AnchorChange) Encode() string { return encodeToken(ChangePrefix, ch.Marshal()) }

// ParseAnchorChange decodes a token made by AnchorChange.Encode
// (structure only).
func ParseAnchorChange(s string) (*AnchorChange, error) {
	b, err := decodeToken(s, ChangePrefix, "anchor-set change", "`weft trust change`", maxStmt)
	if err != nil {
		return nil, err
	}
	return UnmarshalAnchorChange(b)
}
