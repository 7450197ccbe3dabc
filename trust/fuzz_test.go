package trust

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// seeds returns valid encodings of every object for the fuzz corpora.
type fuzzSeeds struct {
	tn      *testNet
	genesis []byte
	cert    []byte
	invite  *Invite
	join    []byte
	resp    [][]byte
	record  []byte
	record2 []byte // version 2: with rendezvous and relays
	ident   []byte
}

func newFuzzSeeds(f *testing.F) *fuzzSeeds {
	tn := newTestNet(f, 4, 0, "")
	node := newTestIdentity(f, 1)
	c := tn.cert(node, "web-1")
	for _, a := range tn.anchors[:3] {
		c.Endorse(a.Sign)
	}
	ch, _ := NewAnchorChange(tn.g.Set(), tn.g.Anchors[:3], 0, t0)
	for _, a := range tn.anchors[:3] {
		ch.Endorse(a.Sign)
	}
	inv := &Invite{Genesis: tn.g, ID: [16]byte{9}, Name: "db", Tags: []string{"db", "prod"}, NotAfter: t0.Add(time.Hour), MaxUses: 2,
		Chain:      []*AnchorChange{ch},
		Bootstrap:  []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:1"), netip.MustParseAddrPort("[::1]:2")},
		AnchorNode: tn.anchors[0].NodeID(), AnchorWGKey: tn.anchors[0].WGPublic()}
	for _, a := range tn.anchors {
		inv.Endorse(a.Sign)
	}
	req, _ := NewJoinRequest(inv.Encode(), node, "web-1", t0)
	rec := &NodeRecord{Cert: c, Seq: 3, Expires: t0.Add(time.Hour), Endpoints: []netip.AddrPort{netip.MustParseAddrPort("198.51.100.1:51820")},
		WGKey: [32]byte{7}}
	rec.Sign(node)
	rec2 := &NodeRecord{Cert: c, Seq: 4, Expires: t0.Add(time.Hour), Endpoints: []netip.AddrPort{netip.MustParseAddrPort("10.0.0.2:51820")},
		Rendezvous: []netip.AddrPort{netip.MustParseAddrPort("198.51.100.1:51820"), netip.MustParseAddrPort("[2001:db8::1]:41641")},
		Relays:     []netip.AddrPort{netip.MustParseAddrPort("203.0.113.9:3478")}}
	rec2.Sign(node)
	return &fuzzSeeds{
		tn:      tn,
		genesis: tn.g.Marshal(),
		cert:    c.marshal(),
		invite:  inv,
		join:    req.marshal(),
		resp: [][]byte{
			NewJoinResponse(c, nil).marshal(),
			NewJoinResponse(nil, reject(ReasonExpired, "expired")).marshal(),
		},
		record:  rec.marshal(),
		record2: rec2.marshal(),
		ident:   node.marshal(),
	}
}

// mutations adds a few corrupted variants of b.
func addMutations(f *testing.F, b []byte) {
	f.Add(b)
	f.Add([]byte{})
	f.Add(b[:len(b)/2])
	f.Add(append(bytes.Clone(b), 0))
	c := bytes.Clone(b)
	c[len(c)/3] ^= 0x80
	f.Add(c)
}

func FuzzUnmarshalGenesis(f *testing.F) {
	s := newFuzzSeeds(f)
	addMutations(f, s.genesis)
	f.Fuzz(func(t *testing.T, b []byte) {
		g, err := UnmarshalGenesis(b)
		if err != nil {
			if _, ok := ReasonOf(err); !ok {
				t.Fatalf("error %v is not a *RejectError", err)
			}
			return
		}
		if !bytes.Equal(g.Marshal(), b) {
			t.Fatal("non-canonical: Marshal(Unmarshal(b)) != b")
		}
		if err := g.Check(); err != nil {
			t.Fatalf("decoded genesis fails Check: %v", err)
		}
		_ = g.ID()
	})
}

func FuzzUnmarshalCertificate(f *testing.F) {
	s := newFuzzSeeds(f)
	addMutations(f, s.cert)
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := UnmarshalCertificate(b)
		if err != nil {
			if _, ok := ReasonOf(err); !ok {
				t.Fatalf("error %v is not a *RejectError", err)
			}
			return
		}
		if !bytes.Equal(c.marshal(), b) {
			t.Fatal("non-canonical: Marshal(Unmarshal(b)) != b")
		}
		if err := c.Verify(s.tn.g, t0); err == nil && !bytes.Equal(b, s.cert) {
			// Anything else that verifies must at least be endorsed by t anchors
			// over the same body, which only the seed is.
			c0, _ := UnmarshalCertificate(s.cert)
			if !bytes.Equal(c.signedBody(), c0.signedBody()) {
				t.Fatal("forged certificate verified")
			}
		}
		_ = c.IPv6()
	})
}

func FuzzParseInvite(f *testing.F) {
	s := newFuzzSeeds(f)
	tok := s.invite.Encode()
	f.Add(tok)
	f.Add(" " + tok + "\n")
	f.Add(tok[:len(tok)/2])
	f.Add(InvitePrefix)
	f.Add("weft1-AAAA")
	f.Add("")
	f.Fuzz(func(t *testing.T, tok string) {
		inv, err := ParseInvite(tok)
		if err != nil {
			if _, ok := ReasonOf(err); !ok {
				t.Fatalf("error %v is not a *RejectError", err)
			}
			return
		}
		if inv.Encode() != strings.TrimSpace(tok) {
			t.Fatalf("non-canonical: %q -> %q", tok, inv.Encode())
		}
		inv2, err := UnmarshalInvite(inv.Marshal())
		if err != nil || !bytes.Equal(inv2.Marshal(), inv.Marshal()) {
			t.Fatalf("binary round trip: %v", err)
		}
		_ = inv.Verify(t0)
	})
}

func FuzzUnmarshalInvite(f *testing.F) {
	s := newFuzzSeeds(f)
	addMutations(f, s.invite.Marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		inv, err := UnmarshalInvite(b)
		if err != nil {
			return
		}
		if !bytes.Equal(inv.Marshal(), b) {
			t.Fatal("non-canonical: Marshal(Unmarshal(b)) != b")
		}
		if inv2, err := ParseInvite(inv.Encode()); err != nil || !bytes.Equal(inv2.Marshal(), b) {
			t.Fatalf("token round trip: %v", err)
		}
		_ = inv.Verify(t0)
	})
}

func FuzzUnmarshalJoinRequest(f *testing.F) {
	s := newFuzzSeeds(f)
	addMutations(f, s.join)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := UnmarshalJoinRequest(b)
		if err != nil {
			return
		}
		if !bytes.Equal(r.marshal(), b) {
			t.Fatal("non-canonical: Marshal(Unmarshal(b)) != b")
		}
		_ = r.Verify()
	})
}

func FuzzUnmarshalJoinResponse(f *testing.F) {
	s := newFuzzSeeds(f)
	for _, b := range s.resp {
		addMutations(f, b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := UnmarshalJoinResponse(b)
		if err != nil {
			return
		}
		if !bytes.Equal(r.marshal(), b) {
			t.Fatal("non-canonical: Marshal(Unmarshal(b)) != b")
		}
		_, _ = r.Certificate()
	})
}

func FuzzUnmarshalNodeRecord(f *testing.F) {
	s := newFuzzSeeds(f)
	addMutations(f, s.record)
	addMutations(f, s.record2)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := UnmarshalNodeRecord(b)
		if err != nil {
			if _, ok := ReasonOf(err); !ok {
				t.Fatalf("error %v is not a *RejectError", err)
			}
			return
		}
		if !bytes.Equal(r.marshal(), b) {
			t.Fatal("non-canonical: Marshal(Unmarshal(b)) != b")
		}
		if err := r.Verify(s.tn.g, t0); err == nil && !bytes.Equal(b, s.record) && !bytes.Equal(b, s.record2) {
			t.Fatal("modified record verified")
		}
		_, _ = r.Supersedes(r)
	})
}

func FuzzUnmarshalIdentity(f *testing.F) {
	s := newFuzzSeeds(f)
	addMutations(f, s.ident)
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := unmarshalIdentity(b)
		if err != nil {
			return
		}
		if !bytes.Equal(id.marshal(), b) {
			t.Fatal("non-canonical: marshal(unmarshal(b)) != b")
		}
		_ = id.WGPublic()
		_ = id.NodeID()
	})
}

func FuzzDecodeAnchorState(f *testing.F) {
	s := newFuzzSeeds(f)
	c, _ := UnmarshalCertificate(s.cert)
	doc := map[string]any{
		"version": 1, "network": s.tn.g.ID(), "next_serial": 2,
		"invites": map[string]any{"09000000000000000000000000000000": map[string]any{"not_after": t0, "max_uses": 2, "used": []any{c.NodeID}}},
		"members": map[string]any{c.NodeID.String(): map[string]any{"name": c.Name, "ipv4": c.IPv4, "admitted": t0, "cert": s.cert}},
	}
	b, _ := json.Marshal(doc)
	f.Add(b)
	f.Add([]byte("{}"))
	f.Add([]byte(`{"version":1,"members":{"zz":null}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := decodeAnchorState(b)
		if err != nil {
			return
		}
		out, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decodeAnchorState(out); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
	})
}
