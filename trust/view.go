package trust

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/weft-net/weft/addr"
)

// View is everything a node verifies against: the genesis, the chain of
// anchor-set changes that followed it, the revocations and the policy.
// Certificates, records, invites, revocations, changes and policies are
// all checked against the current anchor set of a View. A View is safe for
// concurrent use.
type View struct {
	genesis *Genesis
	network addr.NetworkID

	mu sync.RWMutex // guards the fields below
	// sets[i] is the anchor set with Seq i; the last is current.
	sets []*AnchorSet
	// changes[i] produced sets[i+1].
	changes []*AnchorChange
	// revs are the revocations held, by revoked node.
	revs map[addr.NodeID]heldRevocation
	// policy is the policy in force (nil: allow all), verified against
	// sets[policySet].
	policy    *Policy
	policySet uint64
}

// heldRevocation is a revocation and the anchor set it verified against.
type heldRevocation struct {
	r   *Revocation
	set uint64
}

// NewView returns a view of g with no anchor-set changes, revocations or
// policy. g must have passed Check (UnmarshalGenesis, NewGenesis and
// LoadGenesis ensure that) and must not be modified afterwards.
func NewView(g *Genesis) *View {
	v := &View{genesis: g, network: g.ID(), revs: map[addr.NodeID]heldRevocation{}}
	s := g.Set()
	s.Network = v.network
	v.sets = []*AnchorSet{s}
	return v
}

// Genesis returns the view's genesis (do not modify it).
func (v *View) Genesis() *Genesis { return v.genesis }

// Network returns the network ID.
func (v *View) Network() addr.NetworkID { return v.network }

// Set returns the current anchor set (do not modify it).
func (v *View) Set() *AnchorSet {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.sets[len(v.sets)-1]
}

// Chain returns the anchor-set changes applied so far, oldest first.
func (v *View) Chain() []*AnchorChange {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return append([]*AnchorChange(nil), v.changes...)
}

func (v *View) curLocked() *AnchorSet { return v.sets[len(v.sets)-1] }

func (v *View) revokedLocked(id addr.NodeID) bool {
	_, ok := v.revs[id]
	return ok
}

// VerifyCertificate checks c at time now against the current anchor set:
// network, NodeID = hash of SignKey, name, tags and IPv4 well-formed and
// inside the prefix, not revoked, now within [NotBefore, NotAfter], and
// either at least the threshold of distinct unrevoked current anchors
// endorsed it, or it has no endorsements and equals AnchorCertificate of
// a current anchor. Failures are *RejectError.
func (v *View) VerifyCertificate(c *Certificate, now time.Time) error {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return c.verifyAt(v.curLocked(), v.revokedLocked, now)
}

// VerifyRecord checks r at time now: its certificate verifies (see
// VerifyCertificate; a revoked node's records are refused), it is signed
// by the certificate's key, it has not expired and does not outlive its
// certificate.
func (v *View) VerifyRecord(r *NodeRecord, now time.Time) error {
	if r.Cert == nil {
		return reject(ReasonMalformed, "malformed node record: no certificate")
	}
	if err := v.VerifyCertificate(r.Cert, now); err != nil {
		return err
	}
	return r.checkSelf(now)
}

// VerifyInvite checks that inv is usable at now: it is for this network,
// not expired, MaxUses >= 1, a bound name and the tags are valid,
// AnchorNode is a current anchor, and at least the threshold of current
// anchors endorsed it. The use ledger is the anchors' business.
func (v *View) VerifyInvite(inv *Invite, now time.Time) error {
	if inv.Genesis == nil {
		return reject(ReasonMalformed, "malformed invite: no genesis")
	}
	if id := inv.Genesis.ID(); id != v.network {
		return reject(ReasonWrongNetwork, "invite is for network %q (id %s), not %s; use an invite from an anchor of this network",
			inv.Genesis.Name, id.Short(), v.genesis.describe())
	}
	v.mu.RLock()
	defer v.mu.RUnlock()
	return inv.verifyAt(v.curLocked(), v.revokedLocked, now)
}

// ApplyChange verifies ch against the current anchor set and makes the
// set it describes current. A change that is not the successor of the
// current set is refused: ReasonReplayed for an old seq (also when ch is
// the very change already applied), ReasonFork for a wrong Prev or a gap.
func (v *View) ApplyChange(ch *AnchorChange) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.applyLocked(ch)
}

func (v *View) applyLocked(ch *AnchorChange) error {
	cur := v.curLocked()
	if ch.Seq >= 1 && ch.Seq <= cur.Seq {
		held := v.changes[ch.Seq-1]
		if held.Hash() != ch.Hash() {
			return reject(ReasonFork, "anchor-set change %d differs from the change %d already applied; it forks the anchor chain — refuse it and alert the network's operators",
				ch.Seq, ch.Seq)
		}
	}
	next, err := cur.next(ch, v.revokedLocked)
	if err != nil {
		return err
	}
	v.sets = append(v.sets, next)
	v.changes = append(v.changes, cloneChange(ch))
	return nil
}

// VerifyChange checks that ch would apply as the successor of the current
// set (quorum of the current anchors, seq and prev), without applying it.
func (v *View) VerifyChange(ch *AnchorChange) error {
	v.mu.RLock()
	defer v.mu.RUnlock()
	_, err := v.curLocked().next(ch, v.revokedLocked)
	return err
}

// ApplyChain applies the changes of chain in order, skipping those already
// applied (same Seq and hash), and returns how many were new. It stops at
// the first change that does not verify.
func (v *View) ApplyChain(chain []*AnchorChange) (int, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	n := 0
	for _, ch := range chain {
		if ch.Seq >= 1 && ch.Seq <= v.curLocked().Seq && v.changes[ch.Seq-1].Hash() == ch.Hash() {
			continue
		}
		if err := v.applyLocked(ch); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

func cloneChange(ch *AnchorChange) *AnchorChange {
	c, err := UnmarshalAnchorChange(ch.Marshal())
	if err != nil {
		panic("trust: change does not round-trip: " + err.Error())
	}
	return c
}

// VerifyRevocation checks r against the current anchor set.
func (v *View) VerifyRevocation(r *Revocation) error {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return r.verifyAt(v.curLocked(), v.revokedLocked)
}

// AddRevocation verifies r against the current anchor set and holds it.
// It reports whether r was new: a second revocation of a node already
// revoked is verified but changes nothing. Revocations are permanent: they
// stay held across later anchor-set changes.
func (v *View) AddRevocation(r *Revocation) (bool, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	cur := v.curLocked()
	if err := r.verifyAt(cur, v.revokedLocked); err != nil {
		return false, err
	}
	if _, ok := v.revs[r.NodeID]; ok {
		return false, nil
	}
	c, err := UnmarshalRevocation(r.Marshal())
	if err != nil {
		return false, err
	}
	v.revs[r.NodeID] = heldRevocation{r: c, set: cur.Seq}
	return true, nil
}

// Revoked returns the revocation of node id, if held.
func (v *View) Revoked(id addr.NodeID) (*Revocation, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	h, ok := v.revs[id]
	return h.r, ok
}

// Revocations returns the revocations held, ordered by NodeID.
func (v *View) Revocations() []*Revocation {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make([]*Revocation, 0, len(v.revs))
	for _, h := range v.revs {
		out = append(out, h.r)
	}
	sort.Slice(out, func(i, j int) bool { return bytes.Compare(out[i].NodeID[:], out[j].NodeID[:]) < 0 })
	return out
}

// IsAnchor reports whether pub is a current, unrevoked anchor.
func (v *View) IsAnchor(pub ed25519.PublicKey) bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	_, ok := v.curLocked().IsAnchor(pub)
	return ok && len(pub) == ed25519.PublicKeySize && !v.revokedLocked(addr.NodeIDFromKey(pub))
}

// VerifyPolicy checks p against the current anchor set (not its Seq).
func (v *View) VerifyPolicy(p *Policy) error {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return p.verifyAt(v.curLocked(), v.revokedLocked)
}

// SetPolicy verifies p and makes it the policy in force if its Seq is
// higher than the held policy's. The same policy again is a no-op; a lower
// Seq, or the same Seq with different content, is ReasonReplayed.
func (v *View) SetPolicy(p *Policy) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := p.verifyAt(v.curLocked(), v.revokedLocked); err != nil {
		return err
	}
	if old := v.policy; old != nil {
		switch {
		case p.Seq < old.Seq:
			return reject(ReasonReplayed, "policy %d is older than the policy in force (%d); it is stale or replayed — nothing to do", p.Seq, old.Seq)
		case p.Seq == old.Seq && bytes.Equal(bodyOf(p), bodyOf(old)):
			return nil
		case p.Seq == old.Seq:
			return reject(ReasonReplayed, "policy %d differs from the policy %d in force; a new policy needs a higher seq", p.Seq, old.Seq)
		}
	}
	c, err := UnmarshalPolicy(p.Marshal())
	if err != nil {
		return err
	}
	v.policy, v.policySet = c, v.curLocked().Seq
	return nil
}

func bodyOf(p *Policy) []byte {
	var e encoder
	p.encodeBody(&e)
	return e.b
}

// Policy returns the policy in force, or nil (allow all).
func (v *View) Policy() *Policy {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.policy
}

// View file format (local state, binary like everything signed): tag 'V',
// version, network ID, the changes, the revocations each with the seq of
// the set it verified against, and an optional policy with its set seq.
const (
	maxViewChanges = 1 << 12
	maxViewRevs    = 1 << 20
)

func (v *View) marshal() []byte {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var e encoder
	e.u8(tagView)
	e.u8(wireVersion)
	e.raw(v.network[:])
	e.uvarint(uint64(len(v.changes)))
	for _, ch := range v.changes {
		e.bytes(ch.Marshal())
	}
	ids := make([]addr.NodeID, 0, len(v.revs))
	for id := range v.revs {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return bytes.Compare(ids[i][:], ids[j][:]) < 0 })
	e.uvarint(uint64(len(ids)))
	for _, id := range ids {
		h := v.revs[id]
		e.u64(h.set)
		e.bytes(h.r.Marshal())
	}
	if v.policy == nil {
		e.u8(0)
	} else {
		e.u8(1)
		e.u64(v.policySet)
		e.bytes(v.policy.Marshal())
	}
	return e.b
}

// unmarshalView rebuilds a view of g from b, re-verifying every change,
// and every revocation and the policy against the set they verified
// against.
func unmarshalView(g *Genesis, b []byte) (*View, error) {
	v := NewView(g)
	d := decoder{b: b}
	d.header(tagView, "trust view")
	var netID addr.NetworkID
	copy(netID[:], d.take(32))
	if d.err == nil && netID != v.network {
		return nil, reject(ReasonWrongNetwork, "trust view belongs to network %s, not %s; use a separate --state directory per network", netID.Short(), g.describe())
	}
	n := d.length("changes", maxViewChanges)
	for i := 0; i < n && d.err == nil; i++ {
		cb := d.bytes("change", maxStmt)
		if d.err != nil {
			break
		}
		ch, err := UnmarshalAnchorChange(cb)
		if err != nil {
			return nil, err
		}
		if err := v.applyLocked(ch); err != nil {
			return nil, fmt.Errorf("trust view: change %d: %w", i+1, err)
		}
	}
	n = d.length("revocations", maxViewRevs)
	for i := 0; i < n && d.err == nil; i++ {
		seq := d.u64()
		rb := d.bytes("revocation", maxStmt)
		if d.err != nil {
			break
		}
		r, err := UnmarshalRevocation(rb)
		if err != nil {
			return nil, err
		}
		if seq >= uint64(len(v.sets)) {
			return nil, reject(ReasonMalformed, "trust view: revocation of %s refers to anchor set %d, beyond the chain", r.NodeID.Short(), seq)
		}
		if err := r.verifyAt(v.sets[seq], nil); err != nil {
			return nil, fmt.Errorf("trust view: %w", err)
		}
		if _, dup := v.revs[r.NodeID]; dup {
			return nil, reject(ReasonMalformed, "trust view: revocation of %s listed twice", r.NodeID.Short())
		}
		v.revs[r.NodeID] = heldRevocation{r: r, set: seq}
	}
	switch has := d.u8(); {
	case d.err != nil:
	case has == 1:
		seq := d.u64()
		pb := d.bytes("policy", maxStmt)
		if d.err != nil {
			break
		}
		p, err := UnmarshalPolicy(pb)
		if err != nil {
			return nil, err
		}
		if seq >= uint64(len(v.sets)) {
			return nil, reject(ReasonMalformed, "trust view: policy refers to anchor set %d, beyond the chain", seq)
		}
		if err := p.verifyAt(v.sets[seq], nil); err != nil {
			return nil, fmt.Errorf("trust view: %w", err)
		}
		v.policy, v.policySet = p, seq
	case has != 0:
		d.fail("policy flag %d", has)
	}
	if err := d.finish("trust view"); err != nil {
		return nil, err
	}
	return v, nil
}

// SaveView writes v's chain, revocations and policy to dir/trust-view
// atomically with mode 0600. The genesis is kept in dir/genesis
// (SaveGenesis).
func SaveView(dir string, v *View) error {
	if err := writeFileAtomic(filepath.Join(dir, ViewFile), v.marshal(), 0o600); err != nil {
		return fmt.Errorf("save trust view: %w", err)
	}
	return nil
}

// LoadView reads dir/genesis and dir/trust-view and re-verifies the
// stored chain, revocations and policy. A missing trust-view file yields
// NewView of the genesis; a missing genesis an error wrapping
// fs.ErrNotExist.
func LoadView(dir string) (*View, error) {
	g, err := LoadGenesis(dir)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, ViewFile)
	b, err := readFileLimited(path)
	if errors.Is(err, fs.ErrNotExist) {
		return NewView(g), nil
	}
	if err != nil {
		return nil, fmt.Errorf("load trust view: %w", err)
	}
	v, err := unmarshalView(g, b)
	if err != nil {
		return nil, fmt.Errorf("load trust view %s: %w", path, err)
	}
	return v, nil
}
