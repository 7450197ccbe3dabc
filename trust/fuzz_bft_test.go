package trust

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
)

// bftSeeds returns valid encodings of the BFT statements.
type bftSeeds struct {
	tn     *testNet
	desc   *AnchorDescriptor
	change *AnchorChange
	rev    *Revocation
	policy *Policy
	renew  []byte
	view   []byte
}

func newBFTSeeds(f *testing.F) *bftSeeds {
	tn := newTestNet(f, 4, 0, "")
	d, err := NewAnchorDescriptor(tn.anchors[0], "a0", []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:51820"), netip.MustParseAddrPort("[2001:db8::1]:1")})
	if err != nil {
		f.Fatal(err)
	}
	v := NewView(tn.g)
	ch, _ := NewAnchorChange(v.Set(), tn.g.Anchors[1:], 0, t0)
	for _, a := range tn.anchors[:3] {
		ch.Endorse(a.Sign)
	}
	if err := v.ApplyChange(ch); err != nil {
		f.Fatal(err)
	}
	node := newTestIdentity(f, 1)
	rev, _ := NewRevocation(tn.g.ID(), node.NodeID(), "lost laptop — ünïcode", t0)
	pol, _ := NewPolicy(tn.g.ID(), 4, []Rule{
		{From: []string{"web"}, To: []string{"db", "cache"}, Proto: "tcp", Ports: []PortRange{{5432, 5432}, {6379, 6380}}},
		{From: []string{"*"}, To: []string{"*"}, Proto: "icmp"},
	}, t0)
	for _, a := range tn.anchors[1:] {
		rev.Endorse(a.Sign)
		pol.Endorse(a.Sign)
	}
	if _, err := v.AddRevocation(rev); err != nil {
		f.Fatal(err)
	}
	if err := v.SetPolicy(pol); err != nil {
		f.Fatal(err)
	}
	c := tn.cert(node, "web-1")
	for _, a := range tn.anchors[:3] {
		c.Endorse(a.Sign)
	}
	rr, _ := NewRenewRequest(node, c, 0, t0)
	return &bftSeeds{tn: tn, desc: d, change: ch, rev: rev, policy: pol, renew: rr.marshal(), view: v.marshal()}
}

// fuzzToken checks a token parser: errors are *RejectError, and whatever
// parses re-encodes to the same token (trimmed) and the same bytes.
func fuzzToken[T any](f *testing.F, seed string, parse func(string) (T, error), encode func(T) string, marshal func(T) []byte, unmarshal func([]byte) (T, error)) {
	f.Add(seed)
	f.Add(" " + seed + "\n")
	f.Add(seed[:len(seed)/2])
	f.Add(seed[:strings.Index(seed, "1-")+2])
	f.Add("")
	f.Fuzz(func(t *testing.T, tok string) {
		v, err := parse(tok)
		if err != nil {
			if _, ok := ReasonOf(err); !ok {
				t.Fatalf("error %v is not a *RejectError", err)
			}
			return
		}
		if encode(v) != strings.TrimSpace(tok) {
			t.Fatalf("non-canonical token: %q -> %q", tok, encode(v))
		}
		b := marshal(v)
		v2, err := unmarshal(b)
		if err != nil || !bytes.Equal(marshal(v2), b) {
			t.Fatalf("binary round trip: %v", err)
		}
	})
}

// fuzzBinary checks a binary decoder the same way.
func fuzzBinary[T any](f *testing.F, seed []byte, unmarshal func([]byte) (T, error), marshal func(T) []byte, check func(*testing.T, T)) {
	addMutations(f, seed)
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := unmarshal(b)
		if err != nil {
			if _, ok := ReasonOf(err); !ok {
				t.Fatalf("error %v is not a *RejectError", err)
			}
			return
		}
		if !bytes.Equal(marshal(v), b) {
			t.Fatal("non-canonical: Marshal(Unmarshal(b)) != b")
		}
		if check != nil {
			check(t, v)
		}
	})
}

func FuzzParseGenesisToken(f *testing.F) {
	s := newBFTSeeds(f)
	fuzzToken(f, s.tn.g.Encode(), ParseGenesisToken, (*Genesis).Encode, (*Genesis).Marshal, UnmarshalGenesis)
}

func FuzzParseAnchorDescriptor(f *testing.F) {
	s := newBFTSeeds(f)
	fuzzToken(f, s.desc.Encode(), ParseAnchorDescriptor, (*AnchorDescriptor).Encode, (*AnchorDescriptor).Marshal, UnmarshalAnchorDescriptor)
}

func FuzzUnmarshalAnchorDescriptor(f *testing.F) {
	s := newBFTSeeds(f)
	fuzzBinary(f, s.desc.Marshal(), UnmarshalAnchorDescriptor, (*AnchorDescriptor).Marshal, func(t *testing.T, d *AnchorDescriptor) {
		if d.Verify() == nil && !bytes.Equal(d.Marshal(), s.desc.Marshal()) {
			t.Fatal("forged descriptor verified")
		}
	})
}

func FuzzParseAnchorChange(f *testing.F) {
	s := newBFTSeeds(f)
	fuzzToken(f, s.change.Encode(), ParseAnchorChange, (*AnchorChange).Encode, (*AnchorChange).Marshal, UnmarshalAnchorChange)
}

func FuzzUnmarshalAnchorChange(f *testing.F) {
	s := newBFTSeeds(f)
	fuzzBinary(f, s.change.Marshal(), UnmarshalAnchorChange, (*AnchorChange).Marshal, func(t *testing.T, ch *AnchorChange) {
		v := NewView(s.tn.g)
		if v.ApplyChange(ch) == nil && ch.Hash() != s.change.Hash() {
			t.Fatal("forged change applied")
		}
	})
}

func FuzzParseRevocation(f *testing.F) {
	s := newBFTSeeds(f)
	fuzzToken(f, s.rev.Encode(), ParseRevocation, (*Revocation).Encode, (*Revocation).Marshal, UnmarshalRevocation)
}

func FuzzUnmarshalRevocation(f *testing.F) {
	s := newBFTSeeds(f)
	fuzzBinary(f, s.rev.Marshal(), UnmarshalRevocation, (*Revocation).Marshal, func(t *testing.T, r *Revocation) {
		v := NewView(s.tn.g)
		if _, err := v.AddRevocation(r); err == nil && !bytes.Equal(r.message(), s.rev.message()) {
			t.Fatal("forged revocation accepted")
		}
	})
}

func FuzzParsePolicy(f *testing.F) {
	s := newBFTSeeds(f)
	fuzzToken(f, s.policy.Encode(), ParsePolicy, (*Policy).Encode, (*Policy).Marshal, UnmarshalPolicy)
}

func FuzzUnmarshalPolicy(f *testing.F) {
	s := newBFTSeeds(f)
	fuzzBinary(f, s.policy.Marshal(), UnmarshalPolicy, (*Policy).Marshal, func(t *testing.T, p *Policy) {
		_ = p.Describe()
		_ = p.Allows([]string{"web"}, []string{"db"}, "tcp", 5432)
	})
}

func FuzzUnmarshalRenewRequest(f *testing.F) {
	s := newBFTSeeds(f)
	fuzzBinary(f, s.renew, UnmarshalRenewRequest, (*RenewRequest).marshal, func(t *testing.T, r *RenewRequest) {
		if r.Verify() == nil && !bytes.Equal(r.marshal(), s.renew) {
			t.Fatal("forged renew request verified")
		}
		if r.Cert != nil {
			_ = r.Certificate()
		}
	})
}

func FuzzUnmarshalView(f *testing.F) {
	s := newBFTSeeds(f)
	addMutations(f, s.view)
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := unmarshalView(s.tn.g, b)
		if err != nil {
			return
		}
		if !bytes.Equal(v.marshal(), b) {
			t.Fatal("non-canonical view")
		}
	})
}
