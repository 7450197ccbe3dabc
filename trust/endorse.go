package trust

import (
	"crypto/ed25519"
	"fmt"

	"github.com/weft-net/weft/addr"
)

// Endorsement is an anchor's signature over the signed body of a
// certificate or invite.
type Endorsement struct {
	// Anchor is the endorsing anchor's Ed25519 public key.
	Anchor ed25519.PublicKey
	// Sig is the Ed25519 signature over the domain-separated body.
	Sig []byte
}

// Domain-separation contexts: a signature made for one kind of object can
// never be replayed as another.
const (
	ctxCertificate = "weft/certificate/v1\x00"
	ctxInvite      = "weft/invite/v1\x00"
	ctxJoinRequest = "weft/join-request/v1\x00"
	ctxNodeRecord  = "weft/node-record/v1\x00"
	ctxDescriptor  = "weft/anchor-descriptor/v1\x00"
	ctxChange      = "weft/anchor-change/v1\x00"
	ctxRevocation  = "weft/revocation/v1\x00"
	ctxPolicy      = "weft/policy/v1\x00"
	ctxRenew       = "weft/renew-request/v1\x00"
)

func signedMessage(ctx string, body []byte) []byte {
	m := make([]byte, 0, len(ctx)+len(body))
	m = append(m, ctx...)
	return append(m, body...)
}

// addEndorsement signs msg with key and adds or replaces key's
// endorsement in list.
func addEndorsement(list []Endorsement, key ed25519.PrivateKey, msg []byte) ([]Endorsement, error) {
	if len(key) != ed25519.PrivateKeySize {
		return list, fmt.Errorf("endorse: Ed25519 private key has %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	pub := key.Public().(ed25519.PublicKey)
	e := Endorsement{Anchor: pub, Sig: ed25519.Sign(key, msg)}
	for i := range list {
		if pub.Equal(list[i].Anchor) {
			list[i] = e
			return list, nil
		}
	}
	return append(list, e), nil
}

// verifyEndorsements counts the distinct anchors of set, not revoked,
// whose endorsement of msg verifies. Endorsements by the same anchor count once; endorsements
// by keys outside the anchor set are not counted (and their signatures are
// not checked, so junk endorsements cost nothing). If fewer than
// set.Threshold anchors count, the error's reason is the most specific cause:
// ReasonNotAnchor if some endorsement came from a non-anchor,
// ReasonBadSignature if an anchor's signature failed, otherwise
// ReasonTooFewEndorsements. what names the object for messages.
func verifyEndorsements(set *AnchorSet, revoked func(addr.NodeID) bool, list []Endorsement, msg []byte, what, fix string) error {
	counted := make([]bool, len(set.Anchors))
	valid := 0
	var nonAnchor, badSig, revokedAnchor ed25519.PublicKey
	for _, e := range list {
		i := anchorIndex(set.Anchors, e.Anchor)
		if i >= 0 && revoked != nil && revoked(set.Anchors[i].NodeID()) {
			// A revoked anchor has lost its anchor power.
			if revokedAnchor == nil {
				revokedAnchor = e.Anchor
			}
			continue
		}
		if i < 0 {
			if nonAnchor == nil {
				nonAnchor = e.Anchor
			}
			continue
		}
		if counted[i] {
			continue
		}
		if len(e.Sig) != ed25519.SignatureSize || !ed25519.Verify(e.Anchor, msg, e.Sig) {
			if badSig == nil {
				badSig = e.Anchor
			}
			continue
		}
		counted[i] = true
		valid++
	}
	if valid >= set.Threshold {
		return nil
	}
	have := fmt.Sprintf("%s has %d of the %d anchor endorsements network %s requires", what, valid, set.Threshold, set.describe())
	switch {
	case revokedAnchor != nil:
		return reject(ReasonNotAnchor, "%s: it is endorsed by anchor %s, which has been revoked and no longer counts — %s",
			have, keyShort(revokedAnchor), fix)
	case nonAnchor != nil:
		return reject(ReasonNotAnchor, "%s: it is endorsed by key %s, which is not a current (unrevoked) anchor of this network; it was not issued by this network's anchors — %s",
			have, keyShort(nonAnchor), fix)
	case badSig != nil:
		return reject(ReasonBadSignature, "%s: the endorsement by anchor %s does not verify, so it was altered after signing or forged — %s",
			have, keyShort(badSig), fix)
	default:
		return reject(ReasonTooFewEndorsements, "%s — %s", have, fix)
	}
}

func encodeEndorsements(e *encoder, list []Endorsement) {
	e.uvarint(uint64(len(list)))
	for _, en := range list {
		e.bytes(en.Anchor)
		e.bytes(en.Sig)
	}
}

func decodeEndorsements(d *decoder) []Endorsement {
	n := d.length("endorsements", MaxAnchors)
	var list []Endorsement
	for i := 0; i < n && d.err == nil; i++ {
		var en Endorsement
		en.Anchor = d.bytes("endorsement key", maxBytes)
		en.Sig = d.bytes("endorsement signature", maxBytes)
		if d.err == nil && len(en.Anchor) != ed25519.PublicKeySize {
			d.fail("endorsement key has %d bytes, want %d", len(en.Anchor), ed25519.PublicKeySize)
		}
		if d.err == nil && len(en.Sig) != ed25519.SignatureSize {
			d.fail("endorsement signature has %d bytes, want %d", len(en.Sig), ed25519.SignatureSize)
		}
		list = append(list, en)
	}
	return list
}
