package trust

import (
	"crypto/ed25519"
	"encoding/hex"
	"net/netip"
	"time"

	"github.com/weft-net/weft/addr"
)

// InvitePrefix starts every encoded invite token.
const InvitePrefix = "weft1-"

// maxInviteToken bounds the length of an encoded invite token.
const maxInviteToken = len(InvitePrefix) + (maxInvite*4+2)/3

// Invite is a token letting a node join a network. It carries the whole
// genesis, so a joining node learns the network from the token alone, and
// is valid once Threshold anchors of that genesis endorsed it.
type Invite struct {
	// Genesis is the network being joined.
	Genesis *Genesis
	// ID identifies the invite in the anchors' use ledgers.
	ID [16]byte
	// Name, if not empty, is the only node name this invite admits.
	Name string
	// Tags are the policy tags written into the certificates of nodes
	// joining with this invite (at most MaxTags DNS labels).
	Tags []string
	// NotAfter is when the invite expires.
	NotAfter time.Time
	// MaxUses is how many distinct nodes may join with the invite (>= 1).
	MaxUses int
	// Bootstrap are addresses of nodes to contact first (typically the
	// issuing anchor), at most MaxBootstrap.
	Bootstrap []netip.AddrPort
	// AnchorNode is the NodeID of the anchor to send the join request to; it
	// must be one of Genesis.Anchors.
	AnchorNode addr.NodeID
	// AnchorWGKey is that anchor's Curve25519 public key, used to seal the
	// join request.
	AnchorWGKey [32]byte
	// Endorsements are anchor signatures over everything above.
	Endorsements []Endorsement
	// Chain are the anchor-set changes since Genesis (at most
	// MaxInviteChain), so that a joining node can verify endorsements by
	// the current anchors from the token alone. The changes carry their own
	// endorsements and are not covered by the invite's.
	Chain []*AnchorChange
}

// IDString returns the invite ID as 32 hex digits.
func (inv *Invite) IDString() string { return hex.EncodeToString(inv.ID[:]) }

func (inv *Invite) encodeBody(e *encoder) {
	e.u8(tagInvite)
	e.u8(wireVersion)
	if inv.Genesis != nil {
		inv.Genesis.encode(e)
	} else {
		(&Genesis{}).encode(e)
	}
	e.raw(inv.ID[:])
	e.str(inv.Name)
	e.strs(inv.Tags)
	e.time(inv.NotAfter)
	e.uvarint(uint64(inv.MaxUses))
	e.uvarint(uint64(len(inv.Bootstrap)))
	for _, ap := range inv.Bootstrap {
		e.addrPort(ap)
	}
	e.raw(inv.AnchorNode[:])
	e.raw(inv.AnchorWGKey[:])
}

func (inv *Invite) signedBody() []byte {
	var e encoder
	inv.encodeBody(&e)
	return e.b
}

// Endorse adds (or replaces) the endorsement of the anchor holding key.
func (inv *Invite) Endorse(anchor ed25519.PrivateKey) error {
	var err error
	inv.Endorsements, err = addEndorsement(inv.Endorsements, anchor, signedMessage(ctxInvite, inv.signedBody()))
	return err
}

// Marshal returns the canonical binary encoding of inv.
func (inv *Invite) Marshal() []byte {
	var e encoder
	inv.encodeBody(&e)
	encodeEndorsements(&e, inv.Endorsements)
	e.uvarint(uint64(len(inv.Chain)))
	for _, ch := range inv.Chain {
		e.bytes(ch.Marshal())
	}
	return e.b
}

// UnmarshalInvite decodes the binary form of an invite (structure only;
// call Verify).
func UnmarshalInvite(b []byte) (*Invite, error) {
	if len(b) > maxInvite {
		return nil, reject(ReasonMalformed, "malformed invite: %d bytes exceeds limit %d; copy the whole `weft1-…` token as printed by `weft invite`", len(b), maxInvite)
	}
	d := decoder{b: b}
	inv := new(Invite)
	d.header(tagInvite, "invite")
	inv.Genesis = decodeGenesis(&d)
	copy(inv.ID[:], d.take(16))
	inv.Name = d.str("name", maxString)
	inv.Tags = d.strs("tags", MaxTags)
	inv.NotAfter = d.time()
	inv.MaxUses = d.length("max uses", 1<<31-1)
	n := d.length("bootstrap addresses", MaxBootstrap)
	for i := 0; i < n && d.err == nil; i++ {
		inv.Bootstrap = append(inv.Bootstrap, d.addrPort())
	}
	copy(inv.AnchorNode[:], d.take(32))
	d.array32(&inv.AnchorWGKey)
	inv.Endorsements = decodeEndorsements(&d)
	n = d.length("anchor-set changes", MaxInviteChain)
	for i := 0; i < n && d.err == nil; i++ {
		cb := d.bytes("anchor-set change", maxStmt)
		if d.err != nil {
			break
		}
		ch, err := UnmarshalAnchorChange(cb)
		if err != nil {
			d.fail("anchor-set change: %v", err)
			break
		}
		inv.Chain = append(inv.Chain, ch)
	}
	if err := d.finish("invite"); err != nil {
		err.(*RejectError).Detail += "; copy the whole `weft1-…` token as printed by `weft invite`"
		return nil, err
	}
	return inv, nil
}

// Encode returns the invite as one line: "weft1-" followed by the
// unpadded base64url of Marshal().
func (inv *Invite) Encode() string {
	return encodeToken(InvitePrefix, inv.Marshal())
}

// ParseInvite decodes a token made by Encode. Surrounding white space is
// ignored. It checks structure only; call Verify.
func ParseInvite(s string) (*Invite, error) {
	b, err := decodeToken(s, InvitePrefix, "invite", "`weft invite`", maxInvite)
	if err != nil {
		return nil, err
	}
	return UnmarshalInvite(b)
}

// Verify checks that the invite is usable at time now, from the token
// alone: its genesis is valid, the embedded Chain applies to it, and the
// invite verifies against the resulting anchor set (see
// View.VerifyInvite). It does not check the use ledger: that is the
// anchors' job.
func (inv *Invite) Verify(now time.Time) error {
	g := inv.Genesis
	if g == nil {
		return reject(ReasonMalformed, "malformed invite: no genesis")
	}
	if err := g.Check(); err != nil {
		return reject(ReasonInvalid, "invite: %v", err)
	}
	v := NewView(g)
	if _, err := v.ApplyChain(inv.Chain); err != nil {
		return err
	}
	return v.VerifyInvite(inv, now)
}

func (inv *Invite) verifyAt(set *AnchorSet, revoked func(addr.NodeID) bool, now time.Time) error {
	if now.After(inv.NotAfter) {
		return reject(ReasonExpired, "invite expired at %s; ask an anchor for a new one with `weft invite`", fmtTime(inv.NotAfter))
	}
	if inv.MaxUses < 1 {
		return reject(ReasonInvalid, "invite %s allows %d uses; ask an anchor for a new one with `weft invite`", inv.IDString(), inv.MaxUses)
	}
	if inv.Name != "" {
		if err := addr.CheckName(inv.Name); err != nil {
			return reject(ReasonInvalid, "invite bound to a bad name: %v", err)
		}
	}
	if err := checkTags(inv.Tags); err != nil {
		return reject(ReasonInvalid, "invite %s: %v", inv.IDString(), err)
	}
	if _, ok := set.Anchor(inv.AnchorNode); !ok || (revoked != nil && revoked(inv.AnchorNode)) {
		return reject(ReasonInvalid, "invite names node %s as its anchor, but that node is not a current anchor of network %s; ask an anchor for a new invite with `weft invite`",
			inv.AnchorNode.Short(), set.describe())
	}
	return verifyEndorsements(set, revoked, inv.Endorsements, signedMessage(ctxInvite, inv.signedBody()),
		"invite "+inv.IDString(), "ask an anchor for a new one with `weft invite`, co-signed by enough anchors (`weft invite cosign`)")
}
