package trust

import (
	"crypto/ed25519"
	"fmt"
	"time"
)

// RenewRequest asks anchors to endorse a renewed certificate: the same
// NodeID, keys, name, IPv4 and tags as Cert, with the window [NotBefore,
// NotAfter] and serial Cert.Serial+1. It is signed by the node's key.
// Anchors endorse it (Anchor.Renew) if Cert verifies and the node is not
// revoked; the node assembles the renewed certificate from Certificate()
// and the endorsements.
type RenewRequest struct {
	// Cert is the node's current, still valid certificate.
	Cert *Certificate
	// NotBefore and NotAfter are the proposed new validity window.
	NotBefore, NotAfter time.Time
	// Time is when the request was made (within JoinRequestSkew of the
	// anchor's clock).
	Time time.Time
	// Sig is the signature by Cert.SignKey over the fields above.
	Sig []byte
}

// NewRenewRequest asks for cert (held by id) to be renewed for validity
// (0 means DefaultCertValidity) from now.
func NewRenewRequest(id *Identity, cert *Certificate, validity time.Duration, now time.Time) (*RenewRequest, error) {
	if validity <= 0 {
		validity = DefaultCertValidity
	}
	if len(id.Sign) != ed25519.PrivateKeySize || !id.SignPublic().Equal(cert.SignKey) {
		return nil, fmt.Errorf("renew request: identity %s does not hold the key of certificate %s", id.NodeID().Short(), cert.NodeID.Short())
	}
	now = now.UTC()
	r := &RenewRequest{Cert: cert, NotBefore: now.Add(-CertBackdate).Truncate(time.Second),
		NotAfter: now.Add(validity).Truncate(time.Second), Time: now}
	r.Sig = ed25519.Sign(id.Sign, signedMessage(ctxRenew, r.signedBody()))
	return r, nil
}

func (r *RenewRequest) encodeBody(e *encoder) {
	e.u8(tagRenew)
	e.u8(wireVersion)
	if r.Cert != nil {
		e.bytes(r.Cert.marshal())
	} else {
		e.bytes(nil)
	}
	e.time(r.NotBefore)
	e.time(r.NotAfter)
	e.time(r.Time)
}

func (r *RenewRequest) signedBody() []byte {
	var e encoder
	r.encodeBody(&e)
	return e.b
}

// Verify checks the request's structure and its signature by the
// certificate's key (not the certificate itself; anchors do that).
func (r *RenewRequest) Verify() error {
	if r.Cert == nil || len(r.Cert.SignKey) != ed25519.PublicKeySize {
		return reject(ReasonMalformed, "malformed renew request: no certificate")
	}
	if len(r.Sig) != ed25519.SignatureSize || !ed25519.Verify(r.Cert.SignKey, signedMessage(ctxRenew, r.signedBody()), r.Sig) {
		return reject(ReasonBadSignature, "renew request for %s is not signed by the certificate's key; it was altered or forged", r.Cert.NodeID.Short())
	}
	if r.NotAfter.Before(r.NotBefore) {
		return reject(ReasonInvalid, "renew request for %s: NotAfter %s is before NotBefore %s", r.Cert.NodeID.Short(), fmtTime(r.NotAfter), fmtTime(r.NotBefore))
	}
	return nil
}

// Certificate returns the renewed certificate body, without endorsements.
func (r *RenewRequest) Certificate() *Certificate {
	c := *r.Cert
	c.SignKey = append(ed25519.PublicKey(nil), r.Cert.SignKey...)
	c.Tags = append([]string(nil), r.Cert.Tags...)
	if len(c.Tags) == 0 {
		c.Tags = nil
	}
	c.NotBefore, c.NotAfter = r.NotBefore, r.NotAfter
	c.Serial = r.Cert.Serial + 1
	c.Endorsements = nil
	return &c
}

// Marshal returns the canonical encoding of r.
func (r *RenewRequest) Marshal() ([]byte, error) {
	b := r.marshal()
	if _, err := UnmarshalRenewRequest(b); err != nil {
		return nil, fmt.Errorf("encode renew request: %w", err)
	}
	return b, nil
}

func (r *RenewRequest) marshal() []byte {
	var e encoder
	r.encodeBody(&e)
	e.bytes(r.Sig)
	return e.b
}

// UnmarshalRenewRequest decodes a renew request (structure only).
func UnmarshalRenewRequest(b []byte) (*RenewRequest, error) {
	if len(b) > maxRecordLen {
		return nil, reject(ReasonMalformed, "malformed renew request: %d bytes exceeds limit %d", len(b), maxRecordLen)
	}
	d := decoder{b: b}
	r := new(RenewRequest)
	d.header(tagRenew, "renew request")
	r.Cert = d.certificate()
	r.NotBefore = d.time()
	r.NotAfter = d.time()
	r.Time = d.time()
	r.Sig = d.bytes("signature", ed25519.SignatureSize)
	if err := d.finish("renew request"); err != nil {
		return nil, err
	}
	return r, nil
}
