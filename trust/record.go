package trust

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"net/netip"
	"time"
)

// NodeRecord is what a node publishes about itself in the DHT: its
// certificate, where to reach it, a sequence number and an expiry, signed
// by the node's own key.
type NodeRecord struct {
	// Cert is the node's membership certificate.
	Cert *Certificate
	// Seq increases with every new record the node publishes; the highest
	// valid Seq wins.
	Seq uint64
	// Expires is when the record stops being valid; it may not be later
	// than Cert.NotAfter.
	Expires time.Time
	// Endpoints are UDP addresses the node may be reached at, at most
	// MaxEndpoints.
	Endpoints []netip.AddrPort
	// WGKey is the node's current WireGuard public key, signed by its
	// Ed25519 identity so the node can rotate it without new endorsements
	// (Identity.RotateWG). Zero means Cert.WGKey.
	WGKey [32]byte
	// Rendezvous are the DHT servers a node behind NAT keeps bindings to
	// (at most MaxRendezvous): others reach it through them. Empty means
	// the node is publicly reachable itself (a DHT server).
	Rendezvous []netip.AddrPort
	// Relays are TURN relays the node may be reached through (at most
	// MaxRelays); hints only.
	Relays []netip.AddrPort
	// Sig is the signature by Cert.SignKey over the fields above.
	Sig []byte
}

// Node record versions. Version 1 has no Rendezvous and Relays; version 2
// appends them. A record without either is always encoded as version 1, so
// a node that has none publishes records every build reads, and each
// record keeps exactly one encoding.
const (
	recordV1 = 1
	recordV2 = 2
)

func (r *NodeRecord) version() uint8 {
	if len(r.Rendezvous) > 0 || len(r.Relays) > 0 {
		return recordV2
	}
	return recordV1
}

func (r *NodeRecord) encodeBody(e *encoder) {
	v := r.version()
	e.u8(tagNodeRecord)
	e.u8(v)
	if r.Cert != nil {
		e.bytes(r.Cert.marshal())
	} else {
		e.bytes(nil)
	}
	e.u64(r.Seq)
	e.time(r.Expires)
	e.uvarint(uint64(len(r.Endpoints)))
	for _, ap := range r.Endpoints {
		e.addrPort(ap)
	}
	e.raw(r.WGKey[:])
	if v == recordV2 {
		e.uvarint(uint64(len(r.Rendezvous)))
		for _, ap := range r.Rendezvous {
			e.addrPort(ap)
		}
		e.uvarint(uint64(len(r.Relays)))
		for _, ap := range r.Relays {
			e.addrPort(ap)
		}
	}
}

// WireGuardKey returns the key peers must use for the node: WGKey, or
// Cert.WGKey when WGKey is zero.
func (r *NodeRecord) WireGuardKey() [32]byte {
	if r.WGKey != ([32]byte{}) || r.Cert == nil {
		return r.WGKey
	}
	return r.Cert.WGKey
}

func (r *NodeRecord) signedBody() []byte {
	var e encoder
	r.encodeBody(&e)
	return e.b
}

// Sign signs the record with id, which must hold Cert's key.
func (r *NodeRecord) Sign(id *Identity) error {
	if r.Cert == nil {
		return fmt.Errorf("sign node record: no certificate")
	}
	if len(id.Sign) != ed25519.PrivateKeySize || !id.SignPublic().Equal(r.Cert.SignKey) {
		return fmt.Errorf("sign node record: identity %s does not hold the key of certificate %s", id.NodeID().Short(), r.Cert.NodeID.Short())
	}
	r.Sig = ed25519.Sign(id.Sign, signedMessage(ctxNodeRecord, r.signedBody()))
	return nil
}

// Verify checks the record at time now against the genesis anchor set of
// g; it is NewView(g).VerifyRecord(r, now). Members verify against their
// View, which also refuses records of revoked nodes.
func (r *NodeRecord) Verify(g *Genesis, now time.Time) error {
	if g == nil {
		return reject(ReasonInvalid, "node record: no genesis to verify against")
	}
	return NewView(g).VerifyRecord(r, now)
}

// checkSelf checks the record's own signature and times; the certificate
// was verified by the caller.
func (r *NodeRecord) checkSelf(now time.Time) error {
	name := fmt.Sprintf("%s (%s)", r.Cert.Name, r.Cert.NodeID.Short())
	if len(r.Sig) != ed25519.SignatureSize || !ed25519.Verify(r.Cert.SignKey, signedMessage(ctxNodeRecord, r.signedBody()), r.Sig) {
		return reject(ReasonBadSignature, "node record of %s is not signed by the node's key; it was altered or forged — drop it", name)
	}
	if !now.Before(r.Expires) {
		return reject(ReasonExpired, "node record of %s (seq %d) expired at %s; the node must publish a fresh one", name, r.Seq, fmtTime(r.Expires))
	}
	if r.Expires.After(r.Cert.NotAfter) {
		return reject(ReasonInvalid, "node record of %s expires at %s, after its certificate (%s); the node must publish a record that expires with its certificate",
			name, fmtTime(r.Expires), fmtTime(r.Cert.NotAfter))
	}
	return nil
}

// Supersedes reports whether r should replace old, a record for the same
// node already held. It returns (true, nil) if r has a higher Seq,
// (false, nil) if r is byte-for-byte the same record, and a *RejectError
// with ReasonReplayed if r has a lower Seq, or the same Seq with different
// content (the node equivocated or someone replays an old record). A record
// for a different node is ReasonInvalid. Neither record is verified here.
func (r *NodeRecord) Supersedes(old *NodeRecord) (bool, error) {
	if old == nil {
		return true, nil
	}
	if r.Cert == nil || old.Cert == nil {
		return false, reject(ReasonMalformed, "malformed node record: no certificate")
	}
	if r.Cert.NodeID != old.Cert.NodeID {
		return false, reject(ReasonInvalid, "node record of %s cannot replace the record of %s", r.Cert.NodeID.Short(), old.Cert.NodeID.Short())
	}
	switch {
	case r.Seq > old.Seq:
		return true, nil
	case r.Seq < old.Seq:
		return false, reject(ReasonReplayed, "node record of %s has seq %d, older than the held seq %d; it is stale or replayed", r.Cert.NodeID.Short(), r.Seq, old.Seq)
	case bytes.Equal(r.marshal(), old.marshal()):
		return false, nil
	default:
		return false, reject(ReasonReplayed, "node record of %s reuses seq %d with different content; the node must publish with a higher seq", r.Cert.NodeID.Short(), r.Seq)
	}
}

// Marshal returns the canonical encoding of r; it fails if r has no
// certificate or exceeds the decoder's bounds.
func (r *NodeRecord) Marshal() ([]byte, error) {
	b := r.marshal()
	if _, err := UnmarshalNodeRecord(b); err != nil {
		return nil, fmt.Errorf("encode node record: %w", err)
	}
	return b, nil
}

func (r *NodeRecord) marshal() []byte {
	var e encoder
	r.encodeBody(&e)
	e.bytes(r.Sig)
	return e.b
}

// maxRecordLen bounds an encoded node record.
const maxRecordLen = maxCertLen + 4096

// UnmarshalNodeRecord decodes a node record (structure only; call Verify).
func UnmarshalNodeRecord(b []byte) (*NodeRecord, error) {
	if len(b) > maxRecordLen {
		return nil, reject(ReasonMalformed, "malformed node record: %d bytes exceeds limit %d", len(b), maxRecordLen)
	}
	d := decoder{b: b}
	r := new(NodeRecord)
	v := d.recordHeader()
	r.Cert = d.certificate()
	r.Seq = d.u64()
	r.Expires = d.time()
	n := d.length("endpoints", MaxEndpoints)
	for i := 0; i < n && d.err == nil; i++ {
		r.Endpoints = append(r.Endpoints, d.addrPort())
	}
	d.array32(&r.WGKey)
	if v == recordV2 {
		n := d.length("rendezvous", MaxRendezvous)
		for i := 0; i < n && d.err == nil; i++ {
			r.Rendezvous = append(r.Rendezvous, d.addrPort())
		}
		n = d.length("relays", MaxRelays)
		for i := 0; i < n && d.err == nil; i++ {
			r.Relays = append(r.Relays, d.addrPort())
		}
		if d.err == nil && len(r.Rendezvous) == 0 && len(r.Relays) == 0 {
			d.fail("version 2 without rendezvous or relays (must be encoded as version 1)")
		}
	}
	r.Sig = d.bytes("signature", ed25519.SignatureSize)
	if err := d.finish("node record"); err != nil {
		return nil, err
	}
	return r, nil
}

// recordHeader reads a node record's tag and version (1 or 2).
func (d *decoder) recordHeader() uint8 {
	t := d.u8()
	v := d.u8()
	if d.err != nil {
		return 0
	}
	if t != tagNodeRecord {
		d.fail("this is not a node record: wrong type tag %#x", t)
		return 0
	}
	if v != recordV1 && v != recordV2 {
		d.fail("node record version %d not supported (this build reads versions %d and %d; upgrade weft)", v, recordV1, recordV2)
		return 0
	}
	return v
}

// Unmarshal decodes b into r (see UnmarshalNodeRecord).
func (r *NodeRecord) Unmarshal(b []byte) error {
	v, err := UnmarshalNodeRecord(b)
	if err != nil {
		return err
	}
	*r = *v
	return nil
}
