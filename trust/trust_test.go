package trust

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/addr"
)

func TestRejectError(t *testing.T) {
	for r := Reason(0); r < numReasons; r++ {
		t.Run(r.String(), func(t *testing.T) {
			err := fmt.Errorf("wrapped: %w", reject(r, "detail %d", r))
			if !errors.Is(err, r.Sentinel()) {
				t.Fatalf("errors.Is(%v) false", r.Sentinel())
			}
			for o := Reason(0); o < numReasons; o++ {
				if o != r && errors.Is(err, o.Sentinel()) {
					t.Fatalf("also matches %v", o)
				}
			}
			if got, ok := ReasonOf(err); !ok || got != r {
				t.Fatalf("ReasonOf = %v %v", got, ok)
			}
		})
	}
	if (&RejectError{Reason: ReasonExpired}).Error() != "expired" {
		t.Fatal("empty detail should print reason")
	}
	if _, ok := ReasonOf(errors.New("x")); ok {
		t.Fatal("ReasonOf plain error")
	}
}

func TestIdentity(t *testing.T) {
	id, err := NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	if id.NodeID() != addr.NodeIDFromKey(id.SignPublic()) {
		t.Fatal("NodeID")
	}
	if id.WG[0]&7 != 0 || id.WG[31]&128 != 0 || id.WG[31]&64 == 0 {
		t.Fatal("WG key not clamped")
	}
	if id.WGPublic() == ([32]byte{}) || id.WGPublic() == id.WG {
		t.Fatal("WGPublic")
	}

	dir := filepath.Join(t.TempDir(), "state")
	if _, err := LoadIdentity(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing: %v", err)
	}
	if err := SaveIdentity(dir, id); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, IdentityFile)
	fi, _ := os.Stat(path)
	di, _ := os.Stat(dir)
	if fi.Mode().Perm() != 0o600 || di.Mode().Perm() != 0o700 {
		t.Fatalf("modes file %v dir %v", fi.Mode(), di.Mode())
	}
	got, err := LoadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Sign.Equal(id.Sign) || got.WG != id.WG {
		t.Fatal("round trip")
	}

	os.Chmod(path, 0o644)
	_, err = LoadIdentity(dir)
	if !errors.Is(err, ErrKeyPermissions) || !strings.Contains(err.Error(), "chmod 600 "+path) {
		t.Fatalf("insecure key accepted or unhelpful error: %v", err)
	}
	os.Chmod(path, 0o600)

	got2, created, err := LoadOrCreateIdentity(dir)
	if err != nil || created || !got2.Sign.Equal(id.Sign) {
		t.Fatalf("LoadOrCreate existing: %v %v", created, err)
	}
	_, created, err = LoadOrCreateIdentity(t.TempDir())
	if err != nil || !created {
		t.Fatalf("LoadOrCreate new: %v %v", created, err)
	}

	os.WriteFile(path, []byte("garbage"), 0o600)
	if _, err := LoadIdentity(dir); !errors.Is(err, ErrMalformed) {
		t.Fatalf("garbage: %v", err)
	}
}

func TestDefaultThreshold(t *testing.T) {
	for _, tt := range []struct{ n, t int }{{1, 1}, {2, 2}, {3, 3}, {4, 3}, {5, 4}, {7, 5}, {10, 7}} {
		if got := DefaultThreshold(tt.n); got != tt.t {
			t.Errorf("DefaultThreshold(%d) = %d, want %d", tt.n, got, tt.t)
		}
	}
}

func TestGenesis(t *testing.T) {
	tn := newTestNet(t, 4, 0, "")
	g := tn.g
	if g.Threshold != 3 || g.Domain != addr.DefaultDomain || g.IPv4Prefix.String() != addr.DefaultIPv4Prefix {
		t.Fatalf("defaults: %+v", g)
	}
	b := g.Marshal()
	g2, err := UnmarshalGenesis(b)
	if err != nil {
		t.Fatal(err)
	}
	if g2.ID() != g.ID() || !bytes.Equal(g2.Marshal(), b) {
		t.Fatal("round trip changes ID")
	}

	dir := t.TempDir()
	if err := SaveGenesis(dir, g); err != nil {
		t.Fatal(err)
	}
	g3, err := LoadGenesis(dir)
	if err != nil || g3.ID() != g.ID() {
		t.Fatalf("load: %v", err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, GenesisFile)); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}

	first := g.Anchors[0]
	bad := []struct {
		name string
		mod  func(g *Genesis)
	}{
		{"bad name", func(g *Genesis) { g.Name = "Bad Name" }},
		{"bad domain", func(g *Genesis) { g.Domain = "x..y" }},
		{"v6 prefix", func(g *Genesis) { g.IPv4Prefix = netip.MustParsePrefix("fd00::/48") }},
		{"no anchors", func(g *Genesis) { g.Anchors = nil; g.Threshold = 1 }},
		{"dup anchor", func(g *Genesis) { g.Anchors = append(g.Anchors, first) }},
		{"short key", func(g *Genesis) { g.Anchors[1].SignKey = first.SignKey[:31] }},
		{"dup name", func(g *Genesis) { g.Anchors[1].Name = first.Name }},
		{"dup ipv4", func(g *Genesis) { g.Anchors[1].IPv4 = first.IPv4 }},
		{"ipv4 outside", func(g *Genesis) { g.Anchors[1].IPv4 = netip.MustParseAddr("10.0.0.1") }},
		{"no wg key", func(g *Genesis) { g.Anchors[1].WGKey = [32]byte{} }},
		{"bad anchor name", func(g *Genesis) { g.Anchors[1].Name = "A B" }},
		{"threshold 0", func(g *Genesis) { g.Threshold = 0 }},
		{"threshold n/2", func(g *Genesis) { g.Threshold = 2 }},
		{"threshold > n", func(g *Genesis) { g.Threshold = 5 }},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			c := *g
			c.Anchors = cloneAnchors(g.Anchors)
			tt.mod(&c)
			wantReason(t, c.Check(), ReasonInvalid)
			if _, err := UnmarshalGenesis(c.Marshal()); err == nil {
				t.Fatal("UnmarshalGenesis accepted invalid genesis")
			}
		})
	}
	if _, err := NewGenesis("x", "", netip.Prefix{}, nil, 0); err == nil {
		t.Fatal("NewGenesis without anchors")
	}
}

func TestCertificateVerify(t *testing.T) {
	tn := newTestNet(t, 1, 0, "")
	other := newTestNet(t, 1, 0, "10.0.0.0/8") // different genesis, same anchor key
	node := newTestIdentity(t, 1)
	stranger := newTestIdentity(t, 2)

	tests := []struct {
		name   string
		mod    func(c *Certificate) // applied before endorsing
		after  func(c *Certificate) // applied after endorsing
		now    time.Time
		g      *Genesis
		reason Reason // numReasons = valid
		substr string
	}{
		{name: "valid", reason: numReasons},
		{name: "expired", now: t0.Add(25 * time.Hour), reason: ReasonExpired, substr: "expired at 2026-11-26T12:00Z"},
		{name: "not yet valid", now: t0.Add(-2 * time.Hour), reason: ReasonNotYetValid},
		{name: "foreign network", g: other.g, reason: ReasonWrongNetwork, substr: "belongs to network"},
		{name: "tampered name", after: func(c *Certificate) { c.Name = "admin" }, reason: ReasonBadSignature, substr: "altered after signing or forged"},
		{name: "tampered ip", after: func(c *Certificate) { c.IPv4 = netip.MustParseAddr("100.64.9.9") }, reason: ReasonBadSignature},
		{name: "bad sig bytes", after: func(c *Certificate) { c.Endorsements[0].Sig = bytes.Repeat([]byte{1}, 64) }, reason: ReasonBadSignature},
		{name: "node id mismatch", mod: func(c *Certificate) { c.NodeID = stranger.NodeID() }, reason: ReasonInvalid, substr: "forged"},
		{name: "ip outside prefix", mod: func(c *Certificate) { c.IPv4 = netip.MustParseAddr("10.1.2.3") }, reason: ReasonInvalid},
		{name: "bad tag", mod: func(c *Certificate) { c.Tags = []string{"Bad"} }, reason: ReasonInvalid},
		{name: "no endorsements", after: func(c *Certificate) { c.Endorsements = nil }, reason: ReasonTooFewEndorsements},
		{name: "forged by stranger", after: func(c *Certificate) {
			c.Endorsements = nil
			c.Endorse(stranger.Sign)
		}, reason: ReasonNotAnchor, substr: "not a current"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tn.cert(node, "web-1")
			if tt.mod != nil {
				tt.mod(c)
			}
			if err := c.Endorse(tn.anchors[0].Sign); err != nil {
				t.Fatal(err)
			}
			if tt.after != nil {
				tt.after(c)
			}
			now, g := t0, tn.g
			if !tt.now.IsZero() {
				now = tt.now
			}
			if tt.g != nil {
				g = tt.g
			}
			err := c.Verify(g, now)
			if tt.reason == numReasons {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantReason(t, err, tt.reason, tt.substr)
		})
	}
	c := tn.cert(node, "web-1")
	if c.IPv6() != addr.IPv6(tn.g.ID(), node.NodeID()) {
		t.Fatal("IPv6")
	}
	if err := c.Endorse(ed25519.PrivateKey{1, 2}); err == nil {
		t.Fatal("Endorse with short key")
	}
}

// TestEndorsementThreshold exercises n=4, t=3.
func TestEndorsementThreshold(t *testing.T) {
	tn := newTestNet(t, 4, 0, "")
	if tn.g.Threshold != 3 {
		t.Fatalf("threshold %d", tn.g.Threshold)
	}
	node := newTestIdentity(t, 1)
	stranger := newTestIdentity(t, 2)
	A := tn.anchors

	tests := []struct {
		name    string
		endorse func(c *Certificate)
		reason  Reason // numReasons = valid
	}{
		{"t-1 anchors", func(c *Certificate) { c.Endorse(A[0].Sign); c.Endorse(A[1].Sign) }, ReasonTooFewEndorsements},
		{"t anchors", func(c *Certificate) { c.Endorse(A[0].Sign); c.Endorse(A[1].Sign); c.Endorse(A[2].Sign) }, numReasons},
		{"n anchors", func(c *Certificate) {
			for _, a := range A {
				c.Endorse(a.Sign)
			}
		}, numReasons},
		{"duplicate counts once", func(c *Certificate) {
			c.Endorse(A[0].Sign)
			c.Endorse(A[1].Sign)
			c.Endorsements = append(c.Endorsements, c.Endorsements[1], c.Endorsements[0], c.Endorsements[1])
		}, ReasonTooFewEndorsements},
		{"Endorse twice by same anchor", func(c *Certificate) {
			c.Endorse(A[0].Sign)
			c.Endorse(A[0].Sign)
			c.Endorse(A[1].Sign)
			if len(c.Endorsements) != 2 {
				panic("Endorse did not replace")
			}
		}, ReasonTooFewEndorsements},
		{"t-1 anchors plus non-anchor", func(c *Certificate) {
			c.Endorse(A[0].Sign)
			c.Endorse(A[1].Sign)
			c.Endorse(stranger.Sign)
		}, ReasonNotAnchor},
		{"t anchors plus non-anchor", func(c *Certificate) {
			c.Endorse(stranger.Sign)
			c.Endorse(A[0].Sign)
			c.Endorse(A[1].Sign)
			c.Endorse(A[3].Sign)
		}, numReasons},
		{"t-1 anchors plus bad anchor sig", func(c *Certificate) {
			c.Endorse(A[0].Sign)
			c.Endorse(A[1].Sign)
			c.Endorse(A[2].Sign)
			c.Endorsements[2].Sig = append([]byte(nil), c.Endorsements[0].Sig...)
		}, ReasonBadSignature},
		{"bad sig then good sig from same anchor", func(c *Certificate) {
			c.Endorse(A[0].Sign)
			c.Endorse(A[1].Sign)
			c.Endorse(A[2].Sign)
			bad := Endorsement{Anchor: A[2].SignPublic(), Sig: make([]byte, 64)}
			c.Endorsements = append([]Endorsement{bad}, c.Endorsements...)
		}, numReasons},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tn.cert(node, "web-1")
			tt.endorse(c)
			// Survives encoding.
			c2, err := UnmarshalCertificate(c.marshal())
			if err != nil {
				t.Fatal(err)
			}
			err = c2.Verify(tn.g, t0)
			if tt.reason == numReasons {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantReason(t, err, tt.reason)
			if tt.reason == ReasonTooFewEndorsements && !strings.Contains(err.Error(), "2 of the 3") {
				t.Fatalf("message does not count: %v", err)
			}
		})
	}

	// Invites count the same way.
	inv := &Invite{Genesis: tn.g, NotAfter: t0.Add(time.Hour), MaxUses: 1, AnchorNode: A[0].NodeID()}
	inv.Endorse(A[0].Sign)
	inv.Endorse(A[1].Sign)
	wantReason(t, inv.Verify(t0), ReasonTooFewEndorsements)
	inv.Endorse(A[1].Sign)
	wantReason(t, inv.Verify(t0), ReasonTooFewEndorsements)
	inv.Endorse(stranger.Sign)
	wantReason(t, inv.Verify(t0), ReasonNotAnchor)
	inv.Endorse(A[3].Sign)
	if err := inv.Verify(t0); err != nil {
		t.Fatal(err)
	}
}

func TestCertificateFiles(t *testing.T) {
	tn := newTestNet(t, 1, 0, "")
	c := tn.cert(newTestIdentity(t, 1), "db")
	c.Endorse(tn.anchors[0].Sign)
	dir := t.TempDir()
	if _, err := LoadCertificate(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	if err := SaveCertificate(dir, c); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, CertificateFile)); fi.Mode().Perm() != 0o600 {
		t.Fatal("mode")
	}
	got, err := LoadCertificate(dir)
	if err != nil || !bytes.Equal(got.marshal(), c.marshal()) {
		t.Fatal(err)
	}
	if err := got.Verify(tn.g, t0); err != nil {
		t.Fatal(err)
	}
	var c2 Certificate
	if err := c2.Unmarshal(c.marshal()); err != nil || c2.Name != "db" {
		t.Fatal(err)
	}
	// No temp files left behind.
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("dir has %d entries", len(ents))
	}
}

func TestInvite(t *testing.T) {
	tn := newTestNet(t, 1, 0, "")
	mk := func() *Invite {
		inv := &Invite{
			Genesis:     tn.g,
			ID:          [16]byte{1, 2, 3},
			Name:        "web-1",
			NotAfter:    time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC),
			MaxUses:     3,
			Bootstrap:   []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:4242"), netip.MustParseAddrPort("[2001:db8::1]:4242")},
			AnchorNode:  tn.anchors[0].NodeID(),
			AnchorWGKey: tn.anchors[0].WGPublic(),
		}
		inv.Endorse(tn.anchors[0].Sign)
		return inv
	}
	inv := mk()
	tok := inv.Encode()
	if !strings.HasPrefix(tok, InvitePrefix) || strings.ContainsAny(tok, "\n =+/") {
		t.Fatalf("token %q", tok)
	}
	got, err := ParseInvite("  " + tok + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if got.Encode() != tok || got.Genesis.ID() != tn.g.ID() {
		t.Fatal("round trip")
	}
	if err := got.Verify(t0); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		tok    func() string
		now    time.Time
		reason Reason
		substr string
	}{
		{"expired", func() string { return tok }, t0.Add(48 * time.Hour), ReasonExpired,
			"invite expired at 2026-11-26T12:00Z; ask an anchor for a new one with `weft invite`"},
		{"no prefix", func() string { return tok[len(InvitePrefix):] }, t0, ReasonMalformed, "starts with"},
		{"truncated", func() string { return tok[:len(tok)-10] }, t0, ReasonMalformed, "weft invite"},
		{"bad base64", func() string { return tok + "!" }, t0, ReasonMalformed, ""},
		{"tampered uses", func() string {
			i := mk()
			sig := i.Endorsements
			i.MaxUses = 1000
			i.Endorsements = sig
			return i.Encode()
		}, t0, ReasonBadSignature, "forged"},
		{"tampered byte", func() string {
			b := inv.Marshal()
			b[len(inv.signedBody())-10] ^= 1 // inside AnchorWGKey
			return InvitePrefix + encodeB64(b)
		}, t0, ReasonBadSignature, ""},
		{"foreign anchor node", func() string {
			i := mk()
			i.AnchorNode = newTestIdentity(t, 9).NodeID()
			i.Endorsements = nil
			i.Endorse(tn.anchors[0].Sign)
			return i.Encode()
		}, t0, ReasonInvalid, "not a current"},
		{"endorsed by non-anchor", func() string {
			i := mk()
			i.Endorsements = nil
			i.Endorse(newTestIdentity(t, 9).Sign)
			return i.Encode()
		}, t0, ReasonNotAnchor, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv, err := ParseInvite(tt.tok())
			if err == nil {
				err = inv.Verify(tt.now)
			}
			wantReason(t, err, tt.reason, tt.substr)
		})
	}
}

func TestJoinRequest(t *testing.T) {
	node := newTestIdentity(t, 1)
	tn := newTestNet(t, 1, 0, "")
	r, err := NewJoinRequestSpec(node, JoinSpec{Genesis: tn.g, Name: "web-1"}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Verify(); err != nil {
		t.Fatal(err)
	}
	r2, err := UnmarshalJoinRequest(r.marshal())
	if err != nil || !bytes.Equal(r2.marshal(), r.marshal()) {
		t.Fatal(err)
	}
	if err := r2.Verify(); err != nil {
		t.Fatal(err)
	}
	r2.Name = "admin"
	wantReason(t, r2.Verify(), ReasonBadSignature)
	r3 := *r
	r3.SignKey = newTestIdentity(t, 2).SignPublic()
	wantReason(t, r3.Verify(), ReasonBadSignature)
	r3.SignKey = nil
	wantReason(t, r3.Verify(), ReasonMalformed)
	if r.NodeID() != node.NodeID() {
		t.Fatal("NodeID")
	}
}

func TestJoinResponse(t *testing.T) {
	tn := newTestNet(t, 1, 0, "")
	c := tn.cert(newTestIdentity(t, 1), "web-1")
	c.Endorse(tn.anchors[0].Sign)
	ok := NewJoinResponse(c, nil)
	b := ok.marshal()
	got, err := UnmarshalJoinResponse(b)
	if err != nil || !bytes.Equal(got.marshal(), b) {
		t.Fatal(err)
	}
	gc, err := got.Certificate()
	if err != nil || !bytes.Equal(gc.marshal(), c.marshal()) {
		t.Fatal(err)
	}

	fail := NewJoinResponse(nil, reject(ReasonUseLimit, "invite used up; ask for another"))
	got, err = UnmarshalJoinResponse(fail.marshal())
	if err != nil {
		t.Fatal(err)
	}
	_, err = got.Certificate()
	wantReason(t, err, ReasonUseLimit, "invite used up")
	wantReason(t, (&JoinResponse{}).Err(), ReasonMalformed)
}

func TestNodeRecord(t *testing.T) {
	tn := newTestNet(t, 1, 0, "")
	node := newTestIdentity(t, 1)
	c := tn.cert(node, "web-1")
	c.Endorse(tn.anchors[0].Sign)
	mk := func(seq uint64) *NodeRecord {
		r := &NodeRecord{Cert: c, Seq: seq, Expires: t0.Add(time.Hour),
			Endpoints: []netip.AddrPort{netip.MustParseAddrPort("198.51.100.7:51820")}}
		if err := r.Sign(node); err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := mk(5)
	if err := r.Verify(tn.g, t0); err != nil {
		t.Fatal(err)
	}
	r2, err := UnmarshalNodeRecord(r.marshal())
	if err != nil || !bytes.Equal(r2.marshal(), r.marshal()) {
		t.Fatal(err)
	}
	if err := r2.Verify(tn.g, t0); err != nil {
		t.Fatal(err)
	}
	if err := (&NodeRecord{Cert: c}).Sign(newTestIdentity(t, 2)); err == nil {
		t.Fatal("signed with someone else's identity")
	}

	tests := []struct {
		name   string
		rec    func() *NodeRecord
		now    time.Time
		reason Reason
	}{
		{"expired", func() *NodeRecord { return mk(1) }, t0.Add(2 * time.Hour), ReasonExpired},
		{"cert expired", func() *NodeRecord { return mk(1) }, t0.Add(48 * time.Hour), ReasonExpired},
		{"tampered endpoint", func() *NodeRecord {
			r := mk(1)
			r.Endpoints[0] = netip.MustParseAddrPort("203.0.113.66:1")
			return r
		}, t0, ReasonBadSignature},
		{"tampered seq", func() *NodeRecord { r := mk(1); r.Seq = 99; return r }, t0, ReasonBadSignature},
		{"outlives cert", func() *NodeRecord {
			r := mk(1)
			r.Expires = c.NotAfter.Add(time.Hour)
			r.Sign(node)
			return r
		}, t0, ReasonInvalid},
		{"no cert", func() *NodeRecord { return &NodeRecord{} }, t0, ReasonMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantReason(t, tt.rec().Verify(tn.g, tt.now), tt.reason)
		})
	}

	// Rendezvous and relays: version 2 when present, version 1 (the
	// encoding of builds without them) otherwise.
	if r.marshal()[1] != recordV1 {
		t.Fatalf("record without rendezvous encoded as version %d, want %d", r.marshal()[1], recordV1)
	}
	rv := mk(7)
	rv.Rendezvous = []netip.AddrPort{netip.MustParseAddrPort("198.51.100.1:41641")}
	rv.Relays = []netip.AddrPort{netip.MustParseAddrPort("[2001:db8::3]:3478")}
	if err := rv.Sign(node); err != nil {
		t.Fatal(err)
	}
	b := rv.marshal()
	if b[1] != recordV2 {
		t.Fatalf("record with rendezvous encoded as version %d, want %d", b[1], recordV2)
	}
	rv2, err := UnmarshalNodeRecord(b)
	if err != nil || !bytes.Equal(rv2.marshal(), b) || len(rv2.Rendezvous) != 1 || len(rv2.Relays) != 1 {
		t.Fatalf("version 2 round trip: %+v, %v", rv2, err)
	}
	if err := rv2.Verify(tn.g, t0); err != nil {
		t.Fatal(err)
	}
	rv2.Rendezvous[0] = netip.MustParseAddrPort("203.0.113.66:1")
	wantReason(t, rv2.Verify(tn.g, t0), ReasonBadSignature)
	// Version 2 with both lists empty is not canonical.
	var e encoder
	rv.Rendezvous, rv.Relays = nil, nil
	rv.encodeBody(&e)
	e.b[1] = recordV2
	e.uvarint(0)
	e.uvarint(0)
	e.bytes(rv.Sig)
	_, err = UnmarshalNodeRecord(e.b)
	wantReason(t, err, ReasonMalformed)
	// An unknown version says to upgrade.
	b[1] = 9
	_, err = UnmarshalNodeRecord(b)
	if err == nil || !strings.Contains(err.Error(), "upgrade weft") {
		t.Fatalf("version 9 record: %v, want an upgrade hint", err)
	}

	// Supersedes.
	r5, r6 := mk(5), mk(6)
	r5b := mk(5)
	r5b.Endpoints = nil
	r5b.Sign(node)
	otherCert := tn.cert(newTestIdentity(t, 3), "x")
	seqTests := []struct {
		name    string
		new     *NodeRecord
		old     *NodeRecord
		replace bool
		reason  Reason // numReasons = no error
	}{
		{"no old", r5, nil, true, numReasons},
		{"higher", r6, r5, true, numReasons},
		{"same", mk(5), r5, false, numReasons},
		{"lower", r5, r6, false, ReasonReplayed},
		{"equivocation", r5b, r5, false, ReasonReplayed},
		{"other node", &NodeRecord{Cert: otherCert, Seq: 9}, r5, false, ReasonInvalid},
	}
	for _, tt := range seqTests {
		t.Run("supersedes/"+tt.name, func(t *testing.T) {
			replace, err := tt.new.Supersedes(tt.old)
			if replace != tt.replace {
				t.Fatalf("replace = %v", replace)
			}
			if tt.reason == numReasons {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantReason(t, err, tt.reason)
		})
	}
}

func TestMarshalRefusesUndecodable(t *testing.T) {
	tn := newTestNet(t, 1, 0, "")
	node := newTestIdentity(t, 1)
	c := tn.cert(node, "web-1")
	c.Endorse(tn.anchors[0].Sign)
	if _, err := c.Marshal(); err != nil {
		t.Fatal(err)
	}
	c.Tags = make([]string, MaxTags+1)
	if _, err := c.Marshal(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("too many tags: %v", err)
	}
	if err := SaveCertificate(t.TempDir(), c); err == nil {
		t.Fatal("saved undecodable certificate")
	}
	if _, err := (&NodeRecord{}).Marshal(); err == nil {
		t.Fatal("record without certificate encoded")
	}
	if _, err := (&JoinRequest{Name: strings.Repeat("a", 300)}).Marshal(); err == nil {
		t.Fatal("oversized join request encoded")
	}
	if b, err := (&JoinResponse{Error: "x", Reason: ReasonExpired}).Marshal(); err != nil || len(b) == 0 {
		t.Fatal(err)
	}
}
