package trust

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/weft-net/weft/addr"
)

func newTestAnchor(t *testing.T, tn *testNet, dir string) *Anchor {
	t.Helper()
	a, err := OpenAnchor(dir, tn.g, tn.anchors[0])
	if err != nil {
		t.Fatal(err)
	}
	a.Now = func() time.Time { return t0 }
	return a
}

func join(t *testing.T, a *Anchor, tok string, node *Identity, name string) (*Certificate, error) {
	t.Helper()
	req, err := NewJoinRequest(tok, node, name, t0)
	if err != nil {
		t.Fatal(err)
	}
	// Exercise the wire path too.
	req, err = UnmarshalJoinRequest(req.marshal())
	if err != nil {
		t.Fatal(err)
	}
	return a.Admit(req, t0)
}

// joinRetry joins like a real client: on ReasonAddressTaken it proposes
// the next IPv4 candidate.
func joinRetry(t *testing.T, a *Anchor, tok string, node *Identity, name string) (*Certificate, error) {
	t.Helper()
	for attempt := 0; ; attempt++ {
		req, err := NewJoinRequestSpec(node, JoinSpec{Invite: tok, Name: name, Attempt: attempt}, t0)
		if err != nil {
			return nil, err
		}
		c, err := a.Admit(req, t0)
		if r, _ := ReasonOf(err); r == ReasonAddressTaken {
			continue
		}
		return c, err
	}
}

func TestAnchorAdmit(t *testing.T) {
	tn := newTestNet(t, 1, 0, "")
	dir := t.TempDir()
	a := newTestAnchor(t, tn, dir)

	inv, err := a.NewInvite("", 24*time.Hour, 1, []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:4242")})
	if err != nil {
		t.Fatal(err)
	}
	if err := inv.Verify(t0); err != nil {
		t.Fatal(err)
	}
	tok := inv.Encode()
	node := newTestIdentity(t, 1)

	c, err := join(t, a, tok, node, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Verify(tn.g, t0); err != nil {
		t.Fatal(err)
	}
	if c.Name != "web-1" || c.NodeID != node.NodeID() || c.WGKey != node.WGPublic() || !tn.g.IPv4Prefix.Contains(c.IPv4) {
		t.Fatalf("cert %+v", c)
	}
	if want, _ := addr.IPv4(tn.g.IPv4Prefix, node.NodeID(), 0); c.IPv4 != want {
		t.Fatalf("IPv4 %v, want first candidate %v", c.IPv4, want)
	}
	if got := c.NotAfter.Sub(t0); got < 364*24*time.Hour || got > 366*24*time.Hour {
		t.Fatalf("validity %v", got)
	}
	if err := addr.CheckIPv6(tn.g.ID(), node.NodeID(), c.IPv6()); err != nil {
		t.Fatal(err)
	}

	// Rejoin with the same key and invite: same certificate, no use consumed.
	c2, err := join(t, a, tok, node, "web-1")
	if err != nil {
		t.Fatalf("rejoin: %v", err)
	}
	if !bytes.Equal(c2.marshal(), c.marshal()) {
		t.Fatal("rejoin issued a different certificate")
	}
	if a.InviteUses(inv.ID) != 1 {
		t.Fatalf("uses %d", a.InviteUses(inv.ID))
	}

	// Rejoin with a rotated WireGuard key: reissued, same name and address.
	node2 := *node
	node2.WG[1] ^= 0xff
	c3, err := join(t, a, tok, &node2, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	if c3.IPv4 != c.IPv4 || c3.Name != c.Name || c3.WGKey != node2.WGPublic() {
		t.Fatalf("reissue %+v", c3)
	}

	// Another node with the exhausted single-use invite.
	_, err = join(t, a, tok, newTestIdentity(t, 2), "db")
	wantReason(t, err, ReasonUseLimit, "weft invite")

	// Restart: the ledger, names and addresses survive.
	b := newTestAnchor(t, tn, dir)
	_, err = join(t, b, tok, newTestIdentity(t, 2), "db")
	wantReason(t, err, ReasonUseLimit)
	c4, err := join(t, b, tok, &node2, "web-1")
	if err != nil || !bytes.Equal(c4.marshal(), c3.marshal()) {
		t.Fatalf("rejoin after restart: %v", err)
	}
	multi, err := b.NewInvite("", time.Hour, 5, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = join(t, b, multi.Encode(), newTestIdentity(t, 3), "web-1")
	wantReason(t, err, ReasonNameTaken, `"web-1" already belongs`)
	c5, err := join(t, b, multi.Encode(), newTestIdentity(t, 3), "")
	if err != nil {
		t.Fatal(err)
	}
	if c5.IPv4 == c.IPv4 || c5.Name != "node-"+newTestIdentity(t, 3).NodeID().Short() {
		t.Fatalf("second node %+v", c5)
	}

	fi, err := os.Stat(filepath.Join(dir, AnchorDir, anchorStateFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", fi, err)
	}
	members, err := b.Members()
	if err != nil || len(members) != 2 {
		t.Fatalf("members %d %v", len(members), err)
	}
	if m, ok := b.Member(node.NodeID()); !ok || m.Serial != c3.Serial {
		t.Fatal("Member")
	}
}

func TestAnchorRejects(t *testing.T) {
	tn := newTestNet(t, 1, 0, "")
	foreign := newTestNet(t, 1, 0, "10.0.0.0/8")
	a := newTestAnchor(t, tn, t.TempDir())
	fa := newTestAnchor(t, foreign, t.TempDir())
	node := newTestIdentity(t, 1)

	good, _ := a.NewInvite("", time.Hour, 10, nil)
	bound, _ := a.NewInvite("db", time.Hour, 10, nil)
	foreignInv, _ := fa.NewInvite("", time.Hour, 10, nil)
	a.Now = func() time.Time { return t0.Add(-48 * time.Hour) }
	old, _ := a.NewInvite("", time.Hour, 10, nil)
	a.Now = func() time.Time { return t0 }

	forged := *good
	forged.Endorsements = nil
	forged.ID[0] ^= 1
	forged.Endorse(newTestIdentity(t, 50).Sign)

	tampered := *good
	tampered.MaxUses = 1000

	tests := []struct {
		name   string
		req    func() *JoinRequest
		reason Reason
		substr string
	}{
		{"expired invite", func() *JoinRequest { r, _ := NewJoinRequest(old.Encode(), node, "", t0); return r },
			ReasonExpired, "invite expired at 2026-11-23T13:00Z; ask an anchor for a new one with `weft invite`"},
		{"foreign network", func() *JoinRequest { r, _ := NewJoinRequest(foreignInv.Encode(), node, "", t0); return r },
			ReasonWrongNetwork, "use an invite from an anchor of that network"},
		{"forged invite", func() *JoinRequest { r, _ := NewJoinRequest(forged.Encode(), node, "", t0); return r },
			ReasonNotAnchor, "not a current (unrevoked) anchor"},
		{"tampered invite", func() *JoinRequest { r, _ := NewJoinRequest(tampered.Encode(), node, "", t0); return r },
			ReasonBadSignature, "forged"},
		{"garbage invite", func() *JoinRequest {
			r, _ := NewJoinRequest(good.Encode(), node, "", t0)
			r.Invite = "weft1-AAAA"
			r.Sign(node)
			return r
		},
			ReasonMalformed, ""},
		{"bound name mismatch", func() *JoinRequest { r, _ := NewJoinRequest(bound.Encode(), node, "web", t0); return r },
			ReasonInvalid, "--name db"},
		{"bad name", func() *JoinRequest { r, _ := NewJoinRequest(good.Encode(), node, "Bad_Name", t0); return r },
			ReasonInvalid, "weft join --name"},
		{"tampered request", func() *JoinRequest {
			r, _ := NewJoinRequest(good.Encode(), node, "a", t0)
			r.Name = "b"
			return r
		}, ReasonBadSignature, ""},
		{"stale request", func() *JoinRequest { r, _ := NewJoinRequest(good.Encode(), node, "", t0.Add(-time.Hour)); return r },
			ReasonExpired, "clock"},
		{"future request", func() *JoinRequest { r, _ := NewJoinRequest(good.Encode(), node, "", t0.Add(time.Hour)); return r },
			ReasonNotYetValid, "clock"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := a.Admit(tt.req(), t0)
			wantReason(t, err, tt.reason, tt.substr)
		})
	}
	if n := a.InviteUses(good.ID); n != 0 {
		t.Fatalf("rejections consumed %d uses", n)
	}
	// The bound invite works with the bound name or no name.
	c, err := join(t, a, bound.Encode(), node, "")
	if err != nil || c.Name != "db" {
		t.Fatalf("bound invite: %v", err)
	}
	// An existing member cannot rename itself by rejoining.
	_, err = join(t, a, good.Encode(), node, "other")
	wantReason(t, err, ReasonNameTaken, "already a member")
}

func TestAnchorConfig(t *testing.T) {
	tn := newTestNet(t, 2, 0, "")
	if _, err := OpenAnchor(t.TempDir(), tn.g, newTestIdentity(t, 1)); err == nil {
		t.Fatal("non-anchor identity accepted")
	}
	if _, err := OpenAnchor(t.TempDir(), nil, tn.anchors[0]); err == nil {
		t.Fatal("nil genesis accepted")
	}
	// State of one network is refused by another.
	dir := t.TempDir()
	newTestAnchor(t, tn, dir).NewInvite("", 0, 0, nil)
	other := newTestNet(t, 3, 0, "")
	if _, err := OpenAnchor(dir, other.g, other.anchors[0]); err == nil {
		t.Fatal("foreign state accepted")
	}
	// A literal Anchor loads lazily.
	a := &Anchor{Genesis: tn.g, Identity: tn.anchors[1], Dir: t.TempDir()}
	inv, err := a.NewInvite("", 0, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if inv.MaxUses != 1 || inv.AnchorNode != tn.anchors[1].NodeID() {
		t.Fatalf("defaults %+v", inv)
	}
	// n=2, t=2: one endorsement is not enough; the second anchor co-signs.
	wantReason(t, inv.Verify(time.Now()), ReasonTooFewEndorsements)
	inv.Endorse(tn.anchors[0].Sign)
	if err := inv.Verify(time.Now()); err != nil {
		t.Fatal(err)
	}
	// Corrupt state is reported, not ignored.
	bad := t.TempDir()
	os.MkdirAll(filepath.Join(bad, AnchorDir), 0o700)
	os.WriteFile(filepath.Join(bad, AnchorDir, anchorStateFile), []byte("{nope"), 0o600)
	if _, err := OpenAnchor(bad, tn.g, tn.anchors[0]); err == nil || !errors.Is(err, ErrMalformed) {
		t.Fatalf("corrupt state: %v", err)
	}
}

func TestAnchorEnroll(t *testing.T) {
	tn := newTestNet(t, 1, 0, "")
	a := newTestAnchor(t, tn, t.TempDir())
	if _, err := a.Enroll(tn.anchors[0].SignPublic(), tn.anchors[0].WGPublic(), "", nil, t0); err == nil {
		t.Fatal("anchor enrolled itself")
	}
	self := newTestIdentity(t, 7)
	c, err := a.Enroll(self.SignPublic(), self.WGPublic(), "ops", []string{"ops"}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Verify(tn.g, t0); err != nil {
		t.Fatal(err)
	}
	c2, err := a.Enroll(self.SignPublic(), self.WGPublic(), "", nil, t0)
	if err != nil || !bytes.Equal(c2.marshal(), c.marshal()) {
		t.Fatalf("Enroll not idempotent: %v", err)
	}
	if _, err := a.Enroll(ed25519.PublicKey{1}, [32]byte{}, "x", nil, t0); err == nil {
		t.Fatal("short key")
	}
}

func TestAnchorIPv4Pool(t *testing.T) {
	tests := []struct {
		prefix string
		hosts  int
	}{
		{"192.168.50.4/30", 2},
		{"192.168.50.8/29", 6},
		{"192.168.51.0/28", 14},
	}
	for _, tt := range tests {
		t.Run(tt.prefix, func(t *testing.T) {
			tn := newTestNet(t, 1, 0, tt.prefix)
			a := newTestAnchor(t, tn, t.TempDir())
			inv, _ := a.NewInvite("", time.Hour, tt.hosts+5, nil)
			seen := map[netip.Addr]bool{}
			p := tn.g.IPv4Prefix
			for i := range tt.hosts - 1 { // the anchor holds one address
				c, err := joinRetry(t, a, inv.Encode(), newTestIdentity(t, byte(i)), "")
				if err != nil {
					t.Fatalf("node %d: %v", i, err)
				}
				if seen[c.IPv4] || !p.Contains(c.IPv4) || c.IPv4 == p.Addr() {
					t.Fatalf("bad or duplicate address %v", c.IPv4)
				}
				seen[c.IPv4] = true
			}
			_, err := joinRetry(t, a, inv.Encode(), newTestIdentity(t, 200), "")
			wantReason(t, err, ReasonPoolExhausted, "taken")
		})
	}
}

func TestAnchorConcurrent(t *testing.T) {
	tn := newTestNet(t, 1, 0, "")
	dir := t.TempDir()
	a := newTestAnchor(t, tn, dir)
	const n = 24
	inv, _ := a.NewInvite("", time.Hour, n, nil)
	tok := inv.Encode()

	var wg sync.WaitGroup
	certs := make([]*Certificate, n*2)
	errs := make([]error, n*2)
	for i := range n * 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			node := newTestIdentity(t, byte(i%n)) // every node joins twice
			req, _ := NewJoinRequest(tok, node, fmt.Sprintf("n%d", i%n), t0)
			certs[i], errs[i] = a.Admit(req, t0)
		}()
	}
	wg.Wait()
	ips := map[netip.Addr]addr.NodeID{}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("join %d: %v", i, err)
		}
		c := certs[i]
		if id, dup := ips[c.IPv4]; dup && id != c.NodeID {
			t.Fatalf("address %v given twice", c.IPv4)
		}
		ips[c.IPv4] = c.NodeID
	}
	if a.InviteUses(inv.ID) != n {
		t.Fatalf("uses %d, want %d", a.InviteUses(inv.ID), n)
	}
	// Everything is on disk.
	b := newTestAnchor(t, tn, dir)
	ms, err := b.Members()
	if err != nil || len(ms) != n {
		t.Fatalf("persisted %d members: %v", len(ms), err)
	}
	_, err = join(t, b, tok, newTestIdentity(t, 99), "")
	wantReason(t, err, ReasonUseLimit)
}

func TestAnchorAdmitSelfAndClose(t *testing.T) {
	tn := newTestNet(t, 1, 0, "")
	a := newTestAnchor(t, tn, t.TempDir())
	c, err := a.AdmitSelf("anchor", t0)
	if err != nil {
		t.Fatal(err)
	}
	if c.NodeID != tn.anchors[0].NodeID() || c.Verify(tn.g, t0) != nil {
		t.Fatal("AdmitSelf certificate")
	}
	if i, ok := tn.g.IsAnchor(tn.anchors[0].SignPublic()); !ok || i != 0 {
		t.Fatal("IsAnchor")
	}
	if _, ok := tn.g.IsAnchor(newTestIdentity(t, 1).SignPublic()); ok {
		t.Fatal("IsAnchor stranger")
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal("second Close")
	}
	if _, err := a.NewInvite("", 0, 0, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("NewInvite after Close: %v", err)
	}
}
