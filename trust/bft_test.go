package trust

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/weft-net/weft/addr"
)

// openAnchors opens one Anchor per anchor of tn, each with its own state
// directory and its own View.
func openAnchors(t *testing.T, tn *testNet) []*Anchor {
	t.Helper()
	var out []*Anchor
	for _, id := range tn.anchors {
		a := &Anchor{View: NewView(tn.g), Identity: id, Dir: t.TempDir(), Now: func() time.Time { return t0 }}
		out = append(out, a)
	}
	return out
}

// subsets returns every subset of {0..n-1} with k elements.
func subsets(n, k int) [][]int {
	var out [][]int
	var rec func(start int, cur []int)
	rec = func(start int, cur []int) {
		if len(cur) == k {
			out = append(out, slices.Clone(cur))
			return
		}
		for i := start; i < n; i++ {
			rec(i+1, append(cur, i))
		}
	}
	rec(0, nil)
	return out
}

// statements builds one unendorsed object of every kind for tn, and how to
// endorse and verify it against a fresh view.
type stmtKind struct {
	name    string
	make    func(tn *testNet) any
	endorse func(obj any, id *Identity)
	verify  func(v *View, obj any) error
}

func stmtKinds() []stmtKind {
	node := func() *Identity {
		var seed [32]byte
		seed[0] = 1
		id, err := NewIdentityFrom(seededReader{rand.NewChaCha8(seed)})
		if err != nil {
			panic(err)
		}
		return id
	}
	return []stmtKind{
		{"certificate",
			func(tn *testNet) any { return tn.cert(node(), "web-1") },
			func(o any, id *Identity) { o.(*Certificate).Endorse(id.Sign) },
			func(v *View, o any) error { return v.VerifyCertificate(o.(*Certificate), t0) }},
		{"invite",
			func(tn *testNet) any {
				return &Invite{Genesis: tn.g, ID: [16]byte{1}, NotAfter: t0.Add(time.Hour), MaxUses: 1,
					AnchorNode: tn.anchors[0].NodeID(), AnchorWGKey: tn.anchors[0].WGPublic(), Tags: []string{"web"}}
			},
			func(o any, id *Identity) { o.(*Invite).Endorse(id.Sign) },
			func(v *View, o any) error { return v.VerifyInvite(o.(*Invite), t0) }},
		{"revocation",
			func(tn *testNet) any {
				r, _ := NewRevocation(tn.g.ID(), node().NodeID(), "stolen laptop", t0)
				return r
			},
			func(o any, id *Identity) { o.(*Revocation).Endorse(id.Sign) },
			func(v *View, o any) error { _, err := v.AddRevocation(o.(*Revocation)); return err }},
		{"change",
			func(tn *testNet) any {
				infos := cloneAnchors(tn.g.Anchors)
				infos = append(infos, AnchorInfo{SignKey: node().SignPublic(), WGKey: node().WGPublic(), Name: "new-anchor"})
				ch, err := NewAnchorChange(tn.g.Set(), infos, 0, t0)
				if err != nil {
					panic(err)
				}
				return ch
			},
			func(o any, id *Identity) { o.(*AnchorChange).Endorse(id.Sign) },
			func(v *View, o any) error { return v.ApplyChange(o.(*AnchorChange)) }},
		{"policy",
			func(tn *testNet) any {
				p, _ := NewPolicy(tn.g.ID(), 1, []Rule{{From: []string{"*"}, To: []string{"db"}, Proto: "tcp", Ports: []PortRange{{5432, 5432}}}}, t0)
				return p
			},
			func(o any, id *Identity) { o.(*Policy).Endorse(id.Sign) },
			func(v *View, o any) error { return v.SetPolicy(o.(*Policy)) }},
	}
}

func TestQuorumExactlyThreshold(t *testing.T) {
	for _, n := range []int{1, 4, 7} {
		tn := newTestNet(t, n, 0, "")
		th := tn.g.Threshold
		if th != DefaultThreshold(n) {
			t.Fatalf("n=%d threshold %d", n, th)
		}
		for _, k := range stmtKinds() {
			t.Run(fmt.Sprintf("n=%d/%s", n, k.name), func(t *testing.T) {
				// Exactly t endorsements (taken from the end, so not only anchor 0).
				obj := k.make(tn)
				for _, a := range tn.anchors[n-th:] {
					k.endorse(obj, a)
				}
				if err := k.verify(NewView(tn.g), obj); err != nil {
					t.Fatalf("t=%d endorsements refused: %v", th, err)
				}
				// t-1 endorsements, even with duplicates and a non-anchor.
				obj = k.make(tn)
				for _, a := range tn.anchors[:th-1] {
					k.endorse(obj, a)
					k.endorse(obj, a)
				}
				err := k.verify(NewView(tn.g), obj)
				if th-1 == 0 {
					wantReason(t, err, ReasonTooFewEndorsements)
				} else {
					wantReason(t, err, ReasonTooFewEndorsements, fmt.Sprintf("has %d of the %d", th-1, th))
				}
				k.endorse(obj, newTestIdentity(t, 77))
				wantReason(t, k.verify(NewView(tn.g), obj), ReasonNotAnchor)
			})
		}
	}
}

// TestByzantineMinority: in a network of 4 anchors (t=3, f=1), every
// choice of one Byzantine anchor, and every pair, signing anything
// achieves nothing.
func TestByzantineMinority(t *testing.T) {
	tn := newTestNet(t, 4, 0, "")
	victim := newTestIdentity(t, 1)
	for _, size := range []int{1, 2} {
		for _, byz := range subsets(4, size) {
			t.Run(fmt.Sprintf("byzantine=%v", byz), func(t *testing.T) {
				sign := func(obj any, k stmtKind) {
					for _, i := range byz {
						k.endorse(obj, tn.anchors[i])
					}
				}
				for _, k := range stmtKinds() {
					v := NewView(tn.g)
					obj := k.make(tn)
					sign(obj, k)
					wantReason(t, k.verify(v, obj), ReasonTooFewEndorsements)
				}
				v := NewView(tn.g)

				// Rogue certificate for an attacker, and a rogue invite
				// presented to honest anchors.
				anchors := openAnchors(t, tn)
				inv := &Invite{Genesis: tn.g, ID: [16]byte{2}, NotAfter: t0.Add(time.Hour), MaxUses: 100,
					AnchorNode: tn.anchors[byz[0]].NodeID(), AnchorWGKey: tn.anchors[byz[0]].WGPublic()}
				for _, i := range byz {
					inv.Endorse(tn.anchors[i].Sign)
				}
				req, err := NewJoinRequest(inv.Encode(), victim, "evil", t0)
				if err != nil {
					t.Fatal(err)
				}
				cert := req.Certificate()
				for _, i := range byz {
					cert.Endorse(tn.anchors[i].Sign)
				}
				for i, a := range anchors {
					if slices.Contains(byz, i) {
						continue
					}
					_, err := a.Endorse(req, t0)
					wantReason(t, err, ReasonTooFewEndorsements)
					if e, err := a.Endorse(req, t0); err == nil {
						cert.AddEndorsement(*e)
					}
				}
				wantReason(t, v.VerifyCertificate(cert, t0), ReasonTooFewEndorsements)

				// Revocation of an honest node (here: an honest anchor).
				honest := 0
				for slices.Contains(byz, honest) {
					honest++
				}
				rev, _ := NewRevocation(tn.g.ID(), tn.anchors[honest].NodeID(), "framed", t0)
				for _, i := range byz {
					rev.Endorse(tn.anchors[i].Sign)
				}
				if _, err := v.AddRevocation(rev); err == nil {
					t.Fatal("minority revoked an honest anchor")
				}
				if _, revoked := v.Revoked(tn.anchors[honest].NodeID()); revoked {
					t.Fatal("revoked")
				}

				// Forked anchor set: replace every honest anchor by attacker
				// keys, and try to get honest anchors to co-sign it after they
				// signed the real change 1.
				var evil []AnchorInfo
				for _, i := range byz {
					evil = append(evil, tn.g.Anchors[i])
				}
				for j := range 4 - size {
					id := newTestIdentity(t, byte(60+j))
					evil = append(evil, AnchorInfo{SignKey: id.SignPublic(), WGKey: id.WGPublic(), Name: fmt.Sprintf("evil-%d", j)})
				}
				fork, err := NewAnchorChange(v.Set(), evil, 0, t0)
				if err != nil {
					t.Fatal(err)
				}
				real, err := NewAnchorChange(v.Set(), tn.g.Anchors, 0, t0.Add(time.Minute))
				if err != nil {
					t.Fatal(err)
				}
				for i, a := range anchors {
					if slices.Contains(byz, i) {
						fork.Endorse(tn.anchors[i].Sign)
						real.Endorse(tn.anchors[i].Sign)
						continue
					}
					if err := a.EndorseChange(real); err != nil {
						t.Fatal(err)
					}
					wantReason(t, a.EndorseChange(fork), ReasonFork, "already endorsed a different change")
				}
				wantReason(t, v.ApplyChange(fork), ReasonTooFewEndorsements)
				if err := v.ApplyChange(real); err != nil {
					t.Fatalf("real change: %v", err)
				}
				wantReason(t, v.ApplyChange(fork), ReasonFork)

				// Rogue policy denying everything.
				pol, _ := NewPolicy(tn.g.ID(), 9, nil, t0)
				for _, i := range byz {
					pol.Endorse(tn.anchors[i].Sign)
				}
				wantReason(t, v.SetPolicy(pol), ReasonTooFewEndorsements)
				if v.Policy() != nil {
					t.Fatal("policy installed")
				}
			})
		}
	}
}

func TestMultiAnchorAdmission(t *testing.T) {
	tn := newTestNet(t, 4, 0, "")
	anchors := openAnchors(t, tn)
	inv, err := anchors[0].IssueInvite(InviteSpec{TTL: time.Hour, Uses: 2, Tags: []string{"web"}})
	if err != nil {
		t.Fatal(err)
	}
	wantReason(t, inv.Verify(t0), ReasonTooFewEndorsements)
	if err := anchors[2].CosignInvite(inv); err != nil {
		t.Fatal(err)
	}
	if err := anchors[3].CosignInvite(inv); err != nil {
		t.Fatal(err)
	}
	if err := inv.Verify(t0); err != nil {
		t.Fatal(err)
	}
	tok := inv.Encode()

	// Node A joins through anchors 0, 1, 2.
	nodeA := newTestIdentity(t, 1)
	req, err := NewJoinRequest(tok, nodeA, "web-1", t0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(req.Tags, []string{"web"}) {
		t.Fatalf("tags %v", req.Tags)
	}
	cert := req.Certificate()
	v := NewView(tn.g)
	for i, a := range anchors[:3] {
		e, err := a.Endorse(req, t0)
		if err != nil {
			t.Fatal(err)
		}
		if err := cert.AddEndorsement(*e); err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			wantReason(t, v.VerifyCertificate(cert, t0), ReasonTooFewEndorsements)
		}
	}
	if err := v.VerifyCertificate(cert, t0); err != nil {
		t.Fatal(err)
	}

	// Node B proposes A's address at every anchor: refused, then it
	// retries with the next candidate.
	nodeB := newTestIdentity(t, 2)
	reqB, _ := NewJoinRequest(tok, nodeB, "web-2", t0)
	reqB.IPv4 = cert.IPv4
	reqB.Sign(nodeB)
	_, err = anchors[1].Endorse(reqB, t0)
	wantReason(t, err, ReasonAddressTaken, "attempt+1")
	reqB, _ = NewJoinRequest(tok, nodeB, "web-1", t0)
	_, err = anchors[1].Endorse(reqB, t0)
	wantReason(t, err, ReasonNameTaken)
	// Anchor 3 never saw A, but A's name is not free there either once A
	// asked it; it did not, so B would get "web-1" there — which is why a
	// certificate needs t anchors: at most 4-3=1 anchor can be unaware.
	reqB, _ = NewJoinRequestSpec(nodeB, JoinSpec{Invite: tok, Name: "web-2", Attempt: 1}, t0)
	certB := reqB.Certificate()
	for _, a := range anchors[1:] {
		e, err := a.Endorse(reqB, t0)
		if err != nil {
			t.Fatal(err)
		}
		certB.AddEndorsement(*e)
	}
	if err := v.VerifyCertificate(certB, t0); err != nil {
		t.Fatal(err)
	}
	// An endorsement of another body cannot be merged.
	e0, _ := anchors[0].Endorse(req, t0)
	if err := certB.AddEndorsement(*e0); err == nil {
		t.Fatal("foreign endorsement merged")
	}
	// Invite uses are per anchor ledger: anchor 1 saw both nodes.
	if anchors[1].InviteUses(inv.ID) != 2 {
		t.Fatalf("uses %d", anchors[1].InviteUses(inv.ID))
	}
	_, err = anchors[1].Endorse(mustJoin(t, tok, newTestIdentity(t, 3), "web-3"), t0)
	wantReason(t, err, ReasonUseLimit)
}

func mustJoin(t *testing.T, tok string, id *Identity, name string) *JoinRequest {
	t.Helper()
	r, err := NewJoinRequest(tok, id, name, t0)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestPendingQueue(t *testing.T) {
	tn := newTestNet(t, 1, 0, "")
	dir := t.TempDir()
	a := newTestAnchor(t, tn, dir)
	node := newTestIdentity(t, 1)
	req, err := NewJoinRequestSpec(node, JoinSpec{Genesis: tn.g, Name: "laptop", Tags: []string{"dev"}}, t0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Admit(req, t0)
	wantReason(t, err, ReasonPendingApproval, "weft trust approve")
	p := a.Pending()
	if len(p) != 1 || p[0].NodeID != node.NodeID() || p[0].Name != "laptop" || p[0].State != PendingWaiting || !slices.Equal(p[0].Tags, []string{"dev"}) {
		t.Fatalf("pending %+v", p)
	}
	if err := a.Approve(newTestIdentity(t, 9).NodeID()); err == nil {
		t.Fatal("approved unknown node")
	}
	if err := a.Approve(node.NodeID()); err != nil {
		t.Fatal(err)
	}
	// Persisted: a restarted anchor endorses the approved node.
	b := newTestAnchor(t, tn, dir)
	if p := b.Pending(); len(p) != 1 || p[0].State != PendingApproved {
		t.Fatalf("after restart %+v", p)
	}
	c, err := b.Admit(req, t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Verify(tn.g, t0); err != nil || !slices.Equal(c.Tags, []string{"dev"}) {
		t.Fatalf("cert: %v %v", err, c.Tags)
	}
	if len(b.Pending()) != 0 {
		t.Fatal("approved entry kept after endorsement")
	}
	// Another node, rejected with a reason.
	other := newTestIdentity(t, 2)
	req2, _ := NewJoinRequestSpec(other, JoinSpec{Genesis: tn.g, Name: "intruder"}, t0)
	_, err = b.Admit(req2, t0)
	wantReason(t, err, ReasonPendingApproval)
	if err := b.Reject(other.NodeID(), "unknown machine"); err != nil {
		t.Fatal(err)
	}
	_, err = newTestAnchor(t, tn, dir).Admit(req2, t0)
	wantReason(t, err, ReasonDenied, "unknown machine")
}

func TestAnchorRefusesDoubleSign(t *testing.T) {
	tn := newTestNet(t, 4, 0, "")
	dir := t.TempDir()
	a := newTestAnchor(t, tn, dir)
	x := newTestIdentity(t, 40)
	y := newTestIdentity(t, 41)
	withX := append(cloneAnchors(tn.g.Anchors), AnchorInfo{SignKey: x.SignPublic(), WGKey: x.WGPublic(), Name: "x"})
	withY := append(cloneAnchors(tn.g.Anchors), AnchorInfo{SignKey: y.SignPublic(), WGKey: y.WGPublic(), Name: "y"})
	chX, _ := NewAnchorChange(tn.g.Set(), withX, 0, t0)
	chY, _ := NewAnchorChange(tn.g.Set(), withY, 0, t0)
	if err := a.EndorseChange(chX); err != nil {
		t.Fatal(err)
	}
	if err := a.EndorseChange(chX); err != nil {
		t.Fatalf("same change again: %v", err)
	}
	wantReason(t, a.EndorseChange(chY), ReasonFork)
	// The refusal survives a restart.
	wantReason(t, newTestAnchor(t, tn, dir).EndorseChange(chY), ReasonFork)
	// Wrong linkage is refused before signing.
	bad := *chY
	bad.Seq = 5
	wantReason(t, a.EndorseChange(&bad), ReasonFork)
	bad = *chY
	bad.Prev[0] ^= 1
	wantReason(t, a.EndorseChange(&bad), ReasonFork)

	// Same for policies.
	p1, _ := NewPolicy(tn.g.ID(), 1, []Rule{{From: []string{"*"}, To: []string{"*"}, Proto: "*"}}, t0)
	p2, _ := NewPolicy(tn.g.ID(), 1, nil, t0)
	if err := a.EndorsePolicy(p1); err != nil {
		t.Fatal(err)
	}
	wantReason(t, a.EndorsePolicy(p2), ReasonFork)
}

func TestAnchorChangeChain(t *testing.T) {
	tn := newTestNet(t, 4, 0, "")
	v := NewView(tn.g)
	// Rotate anchor 3's key.
	nk := newTestIdentity(t, 42)
	infos := cloneAnchors(tn.g.Anchors)
	oldIP := infos[3].IPv4
	infos[3] = AnchorInfo{SignKey: nk.SignPublic(), WGKey: nk.WGPublic(), Name: "anchor-3b"}
	ch, err := NewAnchorChange(v.Set(), infos, 0, t0)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range tn.anchors[:3] {
		ch.Endorse(a.Sign)
	}
	tok := ch.Encode()
	ch2, err := ParseAnchorChange(tok)
	if err != nil || !bytes.Equal(ch2.Marshal(), ch.Marshal()) {
		t.Fatalf("token: %v", err)
	}
	if err := v.ApplyChange(ch2); err != nil {
		t.Fatal(err)
	}
	set := v.Set()
	if set.Seq != 1 || set.Hash != ch.Hash() || len(set.Anchors) != 4 || set.Anchors[3].IPv4 == oldIP && false {
		t.Fatalf("set %+v", set)
	}
	wantReason(t, v.ApplyChange(ch), ReasonReplayed)
	if n, err := v.ApplyChain([]*AnchorChange{ch}); n != 0 || err != nil {
		t.Fatalf("ApplyChain of held change: %d %v", n, err)
	}
	// The old key of anchor 3 no longer counts; the new one does.
	c := tn.cert(newTestIdentity(t, 1), "web-1")
	for _, a := range tn.anchors[1:] {
		c.Endorse(a.Sign)
	}
	wantReason(t, v.VerifyCertificate(c, t0), ReasonNotAnchor, "not a current")
	c.Endorse(nk.Sign)
	if err := v.VerifyCertificate(c, t0); err != nil {
		t.Fatal(err)
	}
	// The genesis-only view disagrees, as it should.
	if err := c.Verify(tn.g, t0); err != nil {
		t.Fatal("genesis view: 3 genesis anchors signed, expected valid:", err)
	}
	// A gap is refused.
	next, _ := NewAnchorChange(set, infos, 0, t0)
	next.Seq = 3
	wantReason(t, v.ApplyChange(next), ReasonFork, "apply changes 2..2 first")
	// Derived anchor certificates follow the current set.
	oldCert, _ := AnchorCertificate(tn.g.Set(), tn.anchors[3].SignPublic())
	wantReason(t, v.VerifyCertificate(oldCert, t0), ReasonTooFewEndorsements)
	newCert, err := AnchorCertificate(set, nk.SignPublic())
	if err != nil {
		t.Fatal(err)
	}
	if err := v.VerifyCertificate(newCert, t0); err != nil {
		t.Fatal(err)
	}
	tampered := *newCert
	tampered.Tags = []string{"root"}
	wantReason(t, v.VerifyCertificate(&tampered, t0), ReasonInvalid)
	// An invite carrying the chain verifies from the token alone.
	inv := &Invite{Genesis: tn.g, ID: [16]byte{3}, NotAfter: t0.Add(time.Hour), MaxUses: 1,
		AnchorNode: nk.NodeID(), AnchorWGKey: nk.WGPublic(), Chain: []*AnchorChange{ch}}
	for _, a := range []*Identity{tn.anchors[0], tn.anchors[1], nk} {
		inv.Endorse(a.Sign)
	}
	inv2, err := ParseInvite(inv.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if err := inv2.Verify(t0); err != nil {
		t.Fatal(err)
	}
	inv2.Chain = nil
	wantReason(t, inv2.Verify(t0), ReasonInvalid, "not a current anchor")
}

func TestRevocation(t *testing.T) {
	tn := newTestNet(t, 4, 0, "")
	anchors := openAnchors(t, tn)
	v := NewView(tn.g)
	for _, a := range anchors {
		a.View = v // share the view, as a node would
	}
	inv, _ := anchors[0].NewInvite("", time.Hour, 5, nil)
	anchors[1].CosignInvite(inv)
	anchors[2].CosignInvite(inv)
	node := newTestIdentity(t, 1)
	req := mustJoin(t, inv.Encode(), node, "web-1")
	cert := req.Certificate()
	for _, a := range anchors[:3] {
		e, err := a.Endorse(req, t0)
		if err != nil {
			t.Fatal(err)
		}
		cert.AddEndorsement(*e)
	}
	rec := &NodeRecord{Cert: cert, Seq: 1, Expires: t0.Add(time.Hour)}
	rec.Sign(node)
	if err := v.VerifyRecord(rec, t0); err != nil {
		t.Fatal(err)
	}

	rev, err := NewRevocation(tn.g.ID(), node.NodeID(), "compromised", t0)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range anchors[1:] {
		if err := a.EndorseRevocation(rev); err != nil {
			t.Fatal(err)
		}
	}
	rev2, err := ParseRevocation(rev.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if isNew, err := v.AddRevocation(rev2); err != nil || !isNew {
		t.Fatalf("AddRevocation: %v %v", isNew, err)
	}
	if isNew, err := v.AddRevocation(rev2); err != nil || isNew {
		t.Fatalf("second AddRevocation: %v %v", isNew, err)
	}
	if r, ok := v.Revoked(node.NodeID()); !ok || r.Reason != "compromised" {
		t.Fatal("Revoked")
	}
	wantReason(t, v.VerifyCertificate(cert, t0), ReasonRevoked)
	wantReason(t, v.VerifyRecord(rec, t0), ReasonRevoked)
	// It cannot rejoin with the same key, nor renew.
	_, err = anchors[3].Endorse(mustJoin(t, inv.Encode(), node, "web-1"), t0)
	wantReason(t, err, ReasonRevoked)
	rr, _ := NewRenewRequest(node, cert, 0, t0)
	_, err = anchors[0].Renew(rr, t0)
	wantReason(t, err, ReasonRevoked)
	// The name and address are free again for another node.
	other := newTestIdentity(t, 2)
	reqO := mustJoin(t, inv.Encode(), other, "web-1")
	reqO.IPv4 = cert.IPv4
	reqO.Sign(other)
	if _, err := anchors[0].Endorse(reqO, t0); err != nil {
		t.Fatalf("reuse after revocation: %v", err)
	}

	// Revoking an anchor strips its anchor power.
	ra, _ := NewRevocation(tn.g.ID(), tn.anchors[3].NodeID(), "retired", t0)
	for _, a := range tn.anchors[:3] {
		ra.Endorse(a.Sign)
	}
	if _, err := v.AddRevocation(ra); err != nil {
		t.Fatal(err)
	}
	c := tn.cert(newTestIdentity(t, 5), "x")
	for _, a := range tn.anchors[1:] {
		c.Endorse(a.Sign)
	}
	wantReason(t, v.VerifyCertificate(c, t0), ReasonNotAnchor, "has been revoked")
	if _, err := anchors[3].NewInvite("", 0, 0, nil); err == nil {
		t.Fatal("revoked anchor issued an invite")
	}
	wrong := *rev
	wrong.Network[0] ^= 1
	_, err = v.AddRevocation(&wrong)
	wantReason(t, err, ReasonWrongNetwork)
}

func TestRenew(t *testing.T) {
	tn := newTestNet(t, 1, 0, "")
	a := newTestAnchor(t, tn, t.TempDir())
	inv, _ := a.NewInvite("", time.Hour, 1, nil)
	node := newTestIdentity(t, 1)
	c, err := join(t, a, inv.Encode(), node, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	later := t0.Add(300 * 24 * time.Hour)
	rr, err := NewRenewRequest(node, c, 0, later)
	if err != nil {
		t.Fatal(err)
	}
	rr2, err := UnmarshalRenewRequest(rr.marshal())
	if err != nil || !bytes.Equal(rr2.marshal(), rr.marshal()) {
		t.Fatal(err)
	}
	e, err := a.Renew(rr2, later)
	if err != nil {
		t.Fatal(err)
	}
	nc := rr.Certificate()
	if err := nc.AddEndorsement(*e); err != nil {
		t.Fatal(err)
	}
	if err := nc.Verify(tn.g, later.Add(200*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if nc.Serial != c.Serial+1 || nc.IPv4 != c.IPv4 || nc.Name != c.Name {
		t.Fatalf("renewed %+v", nc)
	}
	// Tampering, or another key, is refused.
	bad := *rr
	bad.NotAfter = bad.NotAfter.Add(1000 * 24 * time.Hour)
	_, err = a.Renew(&bad, later)
	wantReason(t, err, ReasonBadSignature)
	if _, err := NewRenewRequest(newTestIdentity(t, 2), c, 0, later); err == nil {
		t.Fatal("renew request for foreign cert")
	}
	long, _ := NewRenewRequest(node, c, 5*365*24*time.Hour, later)
	_, err = a.Renew(long, later)
	wantReason(t, err, ReasonInvalid, "longer than this anchor endorses")
	// An expired certificate cannot be renewed.
	_, err = a.Renew(rr, c.NotAfter.Add(time.Hour))
	if err == nil {
		t.Fatal("renewed expired certificate")
	}
}

func TestGenesisFromDescriptors(t *testing.T) {
	var descs []*AnchorDescriptor
	for i := range 4 {
		id := newTestIdentity(t, byte(100+i))
		d, err := NewAnchorDescriptor(id, fmt.Sprintf("a%d", i), []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:51820")})
		if err != nil {
			t.Fatal(err)
		}
		d2, err := ParseAnchorDescriptor(d.Encode())
		if err != nil || !bytes.Equal(d2.Marshal(), d.Marshal()) {
			t.Fatalf("descriptor token: %v", err)
		}
		descs = append(descs, d2)
	}
	g, err := NewGenesisFromDescriptors("corp", "", netip.Prefix{}, descs, 0, t0)
	if err != nil {
		t.Fatal(err)
	}
	if g.Threshold != 3 || len(g.Anchors) != 4 || g.Anchors[2].Name != "a2" {
		t.Fatalf("genesis %+v", g)
	}
	seen := map[netip.Addr]bool{}
	for _, a := range g.Anchors {
		if seen[a.IPv4] || !g.IPv4Prefix.Contains(a.IPv4) {
			t.Fatalf("anchor address %v", a.IPv4)
		}
		seen[a.IPv4] = true
	}
	g2, err := ParseGenesisToken(" " + g.Encode() + "\n")
	if err != nil || g2.ID() != g.ID() {
		t.Fatalf("genesis token: %v", err)
	}
	for _, tt := range []struct {
		name  string
		descs []*AnchorDescriptor
		th    int
		want  string
	}{
		{"t <= n/2", descs, 2, "must exceed n/2"},
		{"t > n", descs, 5, "no quorum could ever form"},
		{"duplicate key", append(slices.Clone(descs), descs[0]), 0, "twice"},
		{"duplicate name", func() []*AnchorDescriptor {
			d, _ := NewAnchorDescriptor(newTestIdentity(t, 9), "a1", nil)
			return append(slices.Clone(descs), d)
		}(), 0, "unique"},
		{"forged descriptor", func() []*AnchorDescriptor {
			d := *descs[0]
			d.Name = "mallory"
			return []*AnchorDescriptor{&d}
		}(), 0, "not signed by its key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewGenesisFromDescriptors("corp", "", netip.Prefix{}, tt.descs, tt.th, t0)
			if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tt.want)) {
				t.Fatalf("err %v, want %q", err, tt.want)
			}
		})
	}
	for _, tt := range []struct{ n, t, f int }{{1, 1, 0}, {3, 3, 0}, {4, 3, 1}, {7, 5, 2}, {10, 7, 3}, {4, 4, 0}, {5, 3, 0}} {
		if got := Tolerance(tt.n, tt.t); got != tt.f {
			t.Errorf("Tolerance(%d,%d) = %d, want %d", tt.n, tt.t, got, tt.f)
		}
	}
}

func TestAnchorCertificate(t *testing.T) {
	tn := newTestNet(t, 1, 0, "")
	a := newTestAnchor(t, tn, t.TempDir())
	c, err := a.AdmitSelf("", t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Verify(tn.g, t0); err != nil {
		t.Fatal(err)
	}
	if c.Name != "anchor-0" || c.IPv4 != tn.g.Anchors[0].IPv4 || !slices.Equal(c.Tags, []string{AnchorTag}) || len(c.Endorsements) != 0 {
		t.Fatalf("anchor cert %+v", c)
	}
	// A non-anchor certificate without endorsements is refused.
	stranger := tn.cert(newTestIdentity(t, 1), "x")
	wantReason(t, stranger.Verify(tn.g, t0), ReasonTooFewEndorsements)
	if _, err := AnchorCertificate(tn.g.Set(), newTestIdentity(t, 1).SignPublic()); err == nil {
		t.Fatal("derived certificate for a non-anchor")
	}
}

func TestPolicyAllows(t *testing.T) {
	p := &Policy{Seq: 1, Rules: []Rule{
		{From: []string{"web"}, To: []string{"db"}, Proto: "tcp", Ports: []PortRange{{5432, 5432}}},
		{From: []string{"*"}, To: []string{"web"}, Proto: "tcp", Ports: []PortRange{{80, 80}, {443, 443}}},
		{From: []string{"ops"}, To: []string{"*"}, Proto: "*"},
		{From: []string{"*"}, To: []string{"*"}, Proto: "icmp"},
	}}
	if err := p.checkContent(); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		from, to []string
		proto    string
		port     uint16
		want     bool
	}{
		{[]string{"web"}, []string{"db"}, "tcp", 5432, true},
		{[]string{"web"}, []string{"db"}, "tcp", 5433, false},
		{[]string{"web"}, []string{"db"}, "udp", 5432, false},
		{nil, []string{"web"}, "tcp", 443, true},
		{nil, []string{"web"}, "tcp", 22, false},
		{[]string{"ops"}, nil, "udp", 53, true},
		{nil, nil, "icmp", 0, true},
		{[]string{"db"}, []string{"web", "db"}, "tcp", 5432, false},
	} {
		if got := p.Allows(tt.from, tt.to, tt.proto, tt.port); got != tt.want {
			t.Errorf("Allows(%v,%v,%s,%d) = %v, want %v", tt.from, tt.to, tt.proto, tt.port, got, tt.want)
		}
	}
	var none *Policy
	if !none.Allows(nil, nil, "tcp", 1) {
		t.Fatal("nil policy must allow")
	}
	if d := p.Describe(); !bytes.Contains([]byte(d), []byte("allow web -> db tcp/5432")) || !bytes.Contains([]byte(d), []byte("80,443")) {
		t.Fatalf("Describe:\n%s", d)
	}
	for _, bad := range []Rule{
		{From: nil, To: []string{"*"}, Proto: "tcp"},
		{From: []string{"*"}, To: []string{"*"}, Proto: "sctp"},
		{From: []string{"*"}, To: []string{"*"}, Proto: "icmp", Ports: []PortRange{{1, 2}}},
		{From: []string{"*"}, To: []string{"*"}, Proto: "tcp", Ports: []PortRange{{9, 2}}},
		{From: []string{"Bad Tag"}, To: []string{"*"}, Proto: "tcp"},
	} {
		if _, err := NewPolicy(addr.NetworkID{}, 1, []Rule{bad}, t0); err == nil {
			t.Errorf("rule %v accepted", bad)
		}
	}
	// Higher seq wins; lower or conflicting is replay.
	tn := newTestNet(t, 1, 0, "")
	v := NewView(tn.g)
	mk := func(seq uint64, rules []Rule) *Policy {
		p, _ := NewPolicy(tn.g.ID(), seq, rules, t0)
		p.Endorse(tn.anchors[0].Sign)
		return p
	}
	if err := v.SetPolicy(mk(2, p.Rules)); err != nil {
		t.Fatal(err)
	}
	if err := v.SetPolicy(mk(2, p.Rules)); err != nil {
		t.Fatalf("same policy again: %v", err)
	}
	wantReason(t, v.SetPolicy(mk(2, nil)), ReasonReplayed)
	wantReason(t, v.SetPolicy(mk(1, nil)), ReasonReplayed)
	if err := v.SetPolicy(mk(3, nil)); err != nil || v.Policy().Seq != 3 {
		t.Fatal(err)
	}
	pp, err := ParsePolicy(v.Policy().Encode())
	if err != nil || !bytes.Equal(pp.Marshal(), v.Policy().Marshal()) {
		t.Fatal(err)
	}
}

func TestViewPersistence(t *testing.T) {
	tn := newTestNet(t, 4, 0, "")
	dir := t.TempDir()
	if err := SaveGenesis(dir, tn.g); err != nil {
		t.Fatal(err)
	}
	v0, err := LoadView(dir)
	if err != nil || v0.Set().Seq != 0 {
		t.Fatalf("fresh view: %v", err)
	}
	v := NewView(tn.g)
	ch, _ := NewAnchorChange(v.Set(), tn.g.Anchors[:3], 0, t0)
	for _, a := range tn.anchors[:3] {
		ch.Endorse(a.Sign)
	}
	if err := v.ApplyChange(ch); err != nil {
		t.Fatal(err)
	}
	// Revocation and policy signed by the new set (3 anchors, t=3).
	rev, _ := NewRevocation(tn.g.ID(), newTestIdentity(t, 1).NodeID(), "lost", t0)
	pol, _ := NewPolicy(tn.g.ID(), 1, []Rule{{From: []string{"*"}, To: []string{"*"}, Proto: "*"}}, t0)
	for _, a := range tn.anchors[:3] {
		rev.Endorse(a.Sign)
		pol.Endorse(a.Sign)
	}
	if _, err := v.AddRevocation(rev); err != nil {
		t.Fatal(err)
	}
	if err := v.SetPolicy(pol); err != nil {
		t.Fatal(err)
	}
	if err := SaveView(dir, v); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, ViewFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("view file: %v", err)
	}
	w, err := LoadView(dir)
	if err != nil {
		t.Fatal(err)
	}
	if w.Set().Hash != v.Set().Hash || w.Set().Threshold != 3 || len(w.Chain()) != 1 {
		t.Fatal("chain not restored")
	}
	if _, ok := w.Revoked(rev.NodeID); !ok || len(w.Revocations()) != 1 {
		t.Fatal("revocation not restored")
	}
	if w.Policy() == nil || !bytes.Equal(w.Policy().Marshal(), pol.Marshal()) {
		t.Fatal("policy not restored")
	}
	if !bytes.Equal(w.marshal(), v.marshal()) {
		t.Fatal("re-save differs")
	}
	// A corrupted file is refused, not ignored.
	b := v.marshal()
	b[len(b)-10] ^= 0xff
	os.WriteFile(filepath.Join(dir, ViewFile), b, 0o600)
	if _, err := LoadView(dir); err == nil {
		t.Fatal("corrupt view loaded")
	}
	// Another network's view is refused.
	other := newTestNet(t, 1, 0, "")
	if _, err := unmarshalView(other.g, v.marshal()); err == nil {
		t.Fatal("foreign view loaded")
	}
}

func TestKeyRotation(t *testing.T) {
	tn := newTestNet(t, 1, 0, "")
	node := newTestIdentity(t, 1)
	c := tn.cert(node, "web-1")
	c.Endorse(tn.anchors[0].Sign)
	oldPub := node.WGPublic()
	old, err := node.RotateWG()
	if err != nil || old == node.WG {
		t.Fatal(err)
	}
	if node.WGPublic() == oldPub {
		t.Fatal("key unchanged")
	}
	rec := &NodeRecord{Cert: c, Seq: 2, Expires: t0.Add(time.Hour), WGKey: node.WGPublic()}
	rec.Sign(node)
	rec2, err := UnmarshalNodeRecord(rec.marshal())
	if err != nil {
		t.Fatal(err)
	}
	if err := rec2.Verify(tn.g, t0); err != nil {
		t.Fatal(err)
	}
	if rec2.WireGuardKey() != node.WGPublic() || rec2.WireGuardKey() == c.WGKey {
		t.Fatal("WireGuardKey")
	}
	rec2.WGKey[0] ^= 1
	wantReason(t, rec2.Verify(tn.g, t0), ReasonBadSignature)
	if (&NodeRecord{Cert: c}).WireGuardKey() != c.WGKey {
		t.Fatal("zero WGKey must mean the certificate's key")
	}
}
