package trust

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/weft-net/weft/addr"
)

// JoinRequest is what a joining node sends to each anchor. It proposes
// the whole certificate body (the joiner picks name, IPv4 candidate,
// validity window and serial; the tags come from the invite), so that every
// anchor endorses exactly the same bytes and the endorsements add up. The
// signature by SignKey over every other field proves possession of the
// key the certificate will be issued for.
type JoinRequest struct {
	// Invite is the encoded invite token (Invite.Encode); empty for a join
	// that waits in the anchors' pending queues for operator approval.
	Invite string
	// Network is the ID of the network joined.
	Network addr.NetworkID
	// SignKey is the joining node's Ed25519 public key.
	SignKey ed25519.PublicKey
	// WGKey is the joining node's Curve25519 public key.
	WGKey [32]byte
	// Name is the proposed node name.
	Name string
	// IPv4 is the proposed overlay address, ProposeIPv4(prefix, NodeID,
	// attempt); on ReasonAddressTaken the node retries with attempt+1.
	IPv4 netip.Addr
	// Tags are the proposed tags: exactly the invite's tags.
	Tags []string
	// NotBefore and NotAfter are the proposed validity window.
	NotBefore, NotAfter time.Time
	// Serial is the proposed certificate serial (>= 1).
	Serial uint64
	// Time is when the request was made; anchors refuse requests more than
	// JoinRequestSkew away from their clock.
	Time time.Time
	// Sig is SignKey's signature over the fields above.
	Sig []byte
}

// JoinRequestSkew is how far a join request's Time may be from the
// anchor's clock.
const JoinRequestSkew = 10 * time.Minute

// JoinSpec says what a JoinRequest proposes.
type JoinSpec struct {
	// Invite is the invite token; empty for a join awaiting approval.
	Invite string
	// Genesis is the network joined; required when Invite is empty,
	// ignored otherwise (the invite's genesis is used).
	Genesis *Genesis
	// Name is the node name; empty means the invite's bound name, else
	// "node-<short id>".
	Name string
	// Tags are proposed for joins without invite (the operators see them
	// before approving); with an invite, the invite's tags are used.
	Tags []string
	// Attempt selects the IPv4 candidate (ProposeIPv4).
	Attempt int
	// Validity is the certificate lifetime; zero means
	// DefaultCertValidity.
	Validity time.Duration
}

// NewJoinRequest builds and signs a join request for id with an invite
// token, proposing name and the first IPv4 candidate (see
// NewJoinRequestSpec).
func NewJoinRequest(invite string, id *Identity, name string, now time.Time) (*JoinRequest, error) {
	return NewJoinRequestSpec(id, JoinSpec{Invite: invite, Name: name}, now)
}

// NewJoinRequestSpec builds and signs the join request described by spec
// at time now: validity from now-CertBackdate, serial 1.
func NewJoinRequestSpec(id *Identity, spec JoinSpec, now time.Time) (*JoinRequest, error) {
	g := spec.Genesis
	tags := spec.Tags
	name := spec.Name
	if spec.Invite != "" {
		inv, err := ParseInvite(spec.Invite)
		if err != nil {
			return nil, err
		}
		g, tags = inv.Genesis, inv.Tags
		if name == "" {
			name = inv.Name
		}
	}
	if g == nil {
		return nil, errors.New("join request: a join without invite needs the network's genesis")
	}
	if name == "" {
		name = "node-" + id.NodeID().Short()
	}
	ip, err := ProposeIPv4(g.IPv4Prefix, id.NodeID(), spec.Attempt)
	if err != nil {
		return nil, err
	}
	validity := spec.Validity
	if validity <= 0 {
		validity = DefaultCertValidity
	}
	now = now.UTC()
	r := &JoinRequest{
		Invite:    spec.Invite,
		Network:   g.ID(),
		Name:      name,
		IPv4:      ip,
		Tags:      append([]string(nil), tags...),
		NotBefore: now.Add(-CertBackdate).Truncate(time.Second),
		NotAfter:  now.Add(validity).Truncate(time.Second),
		Serial:    1,
		Time:      now,
	}
	if len(r.Tags) == 0 {
		r.Tags = nil
	}
	if err := r.Sign(id); err != nil {
		return nil, err
	}
	return r, nil
}

// NodeID returns the NodeID of SignKey.
func (r *JoinRequest) NodeID() addr.NodeID { return addr.NodeIDFromKey(r.SignKey) }

// Certificate returns the proposed certificate body, without
// endorsements; the joining node adds the anchors' endorsements to it
// (Certificate.AddEndorsement).
func (r *JoinRequest) Certificate() *Certificate {
	c := &Certificate{
		Network:   r.Network,
		NodeID:    r.NodeID(),
		SignKey:   append(ed25519.PublicKey(nil), r.SignKey...),
		WGKey:     r.WGKey,
		Name:      r.Name,
		IPv4:      r.IPv4,
		Tags:      append([]string(nil), r.Tags...),
		NotBefore: r.NotBefore,
		NotAfter:  r.NotAfter,
		Serial:    r.Serial,
	}
	if len(c.Tags) == 0 {
		c.Tags = nil
	}
	return c
}

func (r *JoinRequest) encodeBody(e *encoder) {
	e.u8(tagJoinRequest)
	e.u8(wireVersion)
	e.str(r.Invite)
	e.raw(r.Network[:])
	e.bytes(r.SignKey)
	e.raw(r.WGKey[:])
	e.str(r.Name)
	e.addr(r.IPv4)
	e.strs(r.Tags)
	e.time(r.NotBefore)
	e.time(r.NotAfter)
	e.u64(r.Serial)
	e.time(r.Time)
}

func (r *JoinRequest) signedBody() []byte {
	var e encoder
	r.encodeBody(&e)
	return e.b
}

// Sign sets SignKey and WGKey from id and signs the request.
func (r *JoinRequest) Sign(id *Identity) error {
	if len(id.Sign) != ed25519.PrivateKeySize {
		return fmt.Errorf("sign join request: Ed25519 key has %d bytes, want %d", len(id.Sign), ed25519.PrivateKeySize)
	}
	r.SignKey = id.SignPublic()
	r.WGKey = id.WGPublic()
	r.Sig = ed25519.Sign(id.Sign, signedMessage(ctxJoinRequest, r.signedBody()))
	return nil
}

// Verify checks the request's structure and its signature by SignKey.
func (r *JoinRequest) Verify() error {
	if len(r.SignKey) != ed25519.PublicKeySize {
		return reject(ReasonMalformed, "malformed join request: signing key has %d bytes, want %d", len(r.SignKey), ed25519.PublicKeySize)
	}
	if r.WGKey == ([32]byte{}) {
		return reject(ReasonMalformed, "malformed join request: no WireGuard key")
	}
	if len(r.Sig) != ed25519.SignatureSize || !ed25519.Verify(r.SignKey, signedMessage(ctxJoinRequest, r.signedBody()), r.Sig) {
		return reject(ReasonBadSignature, "join request from %s is not signed by its key; the request was altered in transit or the client is broken", r.NodeID().Short())
	}
	return nil
}

// Marshal returns the canonical encoding of r; it fails if r exceeds the
// decoder's bounds.
func (r *JoinRequest) Marshal() ([]byte, error) {
	b := r.marshal()
	if _, err := UnmarshalJoinRequest(b); err != nil {
		return nil, fmt.Errorf("encode join request: %w", err)
	}
	return b, nil
}

func (r *JoinRequest) marshal() []byte {
	var e encoder
	r.encodeBody(&e)
	e.bytes(r.Sig)
	return e.b
}

// UnmarshalJoinRequest decodes a join request (structure only; the anchor
// calls Verify).
func UnmarshalJoinRequest(b []byte) (*JoinRequest, error) {
	d := decoder{b: b}
	r := new(JoinRequest)
	d.header(tagJoinRequest, "join request")
	r.Invite = d.str("invite", maxInviteToken)
	copy(r.Network[:], d.take(32))
	r.SignKey = d.bytes("signing key", ed25519.PublicKeySize)
	d.array32(&r.WGKey)
	r.Name = d.str("name", maxString)
	r.IPv4 = d.addr()
	r.Tags = d.strs("tags", MaxTags)
	r.NotBefore = d.time()
	r.NotAfter = d.time()
	r.Serial = d.u64()
	r.Time = d.time()
	r.Sig = d.bytes("signature", ed25519.SignatureSize)
	if err := d.finish("join request"); err != nil {
		return nil, err
	}
	return r, nil
}

// JoinResponse is an anchor's answer to a JoinRequest: either Cert (an
// encoded Certificate carrying this anchor's endorsement) or Error.
type JoinResponse struct {
	// Cert is the encoded certificate (Certificate.Marshal), empty on error.
	Cert []byte
	// Error is the human-readable rejection, empty on success.
	Error string
	// Reason is the rejection reason when Error is set, so that the joining
	// side can rebuild a *RejectError (see Err).
	Reason Reason
}

// NewJoinResponse builds the response for Admit's result.
func NewJoinResponse(c *Certificate, err error) *JoinResponse {
	if err != nil {
		r, ok := ReasonOf(err)
		if !ok {
			r = ReasonInvalid
		}
		msg := err.Error()
		if len(msg) > maxErrorLen {
			msg = msg[:maxErrorLen]
		}
		return &JoinResponse{Error: msg, Reason: r}
	}
	if c == nil {
		return &JoinResponse{Error: "anchor produced no certificate", Reason: ReasonInvalid}
	}
	b, merr := c.Marshal()
	if merr != nil {
		return &JoinResponse{Error: merr.Error(), Reason: ReasonInvalid}
	}
	return &JoinResponse{Cert: b}
}

// Err returns nil on success, or the anchor's rejection as a *RejectError.
func (r *JoinResponse) Err() error {
	if r.Error == "" && len(r.Cert) > 0 {
		return nil
	}
	if r.Error == "" {
		return reject(ReasonMalformed, "malformed join response: neither certificate nor error")
	}
	return &RejectError{Reason: r.Reason, Detail: "anchor refused to admit this node: " + r.Error}
}

// Certificate returns the decoded certificate, or Err().
func (r *JoinResponse) Certificate() (*Certificate, error) {
	if err := r.Err(); err != nil {
		return nil, err
	}
	return UnmarshalCertificate(r.Cert)
}

// Marshal returns the canonical encoding of r; it fails if r exceeds the
// decoder's bounds.
func (r *JoinResponse) Marshal() ([]byte, error) {
	b := r.marshal()
	if _, err := UnmarshalJoinResponse(b); err != nil {
		return nil, fmt.Errorf("encode join response: %w", err)
	}
	return b, nil
}

func (r *JoinResponse) marshal() []byte {
	var e encoder
	e.u8(tagJoinResp)
	e.u8(wireVersion)
	e.bytes(r.Cert)
	e.str(r.Error)
	e.u8(uint8(r.Reason))
	return e.b
}

// UnmarshalJoinResponse decodes a join response.
func UnmarshalJoinResponse(b []byte) (*JoinResponse, error) {
	d := decoder{b: b}
	r := new(JoinResponse)
	d.header(tagJoinResp, "join response")
	r.Cert = d.bytes("certificate", maxCertLen)
	r.Error = d.str("error", maxErrorLen)
	r.Reason = Reason(d.u8())
	if d.err == nil && r.Reason >= numReasons {
		d.fail("unknown reason %d", r.Reason)
	}
	if err := d.finish("join response"); err != nil {
		return nil, err
	}
	return r, nil
}
