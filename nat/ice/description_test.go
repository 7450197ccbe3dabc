package ice

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func sampleDescription() Description {
	return Description{
		Ufrag: "abcdEFGH1234+/xy",
		Pwd:   "0123456789abcdefABCDEF+/0123456789",
		Candidates: []Candidate{
			{Type: TypeHost, Addr: netip.MustParseAddrPort("192.168.1.10:51820"), Priority: 2130706431},
			{Type: TypeHost, Addr: netip.MustParseAddrPort("[2001:db8::1]:51820"), Priority: 2130706430},
			{Type: TypeSrflx, Addr: netip.MustParseAddrPort("203.0.113.7:40000"), Priority: 1694498815},
			{Type: TypeRelay, Addr: netip.MustParseAddrPort("198.51.100.2:50000"), Priority: 16777215},
		},
	}
}

func TestDescriptionRoundTrip(t *testing.T) {
	full := Description{Ufrag: "uuuu", Pwd: strings.Repeat("p", 64)}
	for i := range MaxCandidates {
		full.Candidates = append(full.Candidates, Candidate{
			Type: TypeHost, Addr: netip.AddrPortFrom(netip.AddrFrom16([16]byte{0x20, 1, 15: byte(i + 1)}), 1), Priority: 1,
		})
	}
	full.Ufrag = strings.Repeat("u", 64)
	for _, tc := range []struct {
		name string
		d    Description
	}{
		{"sample", sampleDescription()},
		{"no candidates", Description{Ufrag: "abcd", Pwd: strings.Repeat("x", 22)}},
		{"largest", full},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.d.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			var got Description
			if err := got.UnmarshalBinary(b); err != nil {
				t.Fatal(err)
			}
			b2, err := got.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, b2) || got.String() != tc.d.String() || got.Pwd != tc.d.Pwd {
				t.Fatalf("round trip changed the description:\n got %v\nwant %v", got, tc.d)
			}
			t.Logf("%d bytes", len(b))
			if len(b) > 600 {
				t.Errorf("encoding is %d bytes; it must stay well under a control message", len(b))
			}
		})
	}
}

func TestDescriptionRejects(t *testing.T) {
	good, err := sampleDescription().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	mutate := func(f func(d *Description)) Description {
		d := sampleDescription()
		f(&d)
		return d
	}
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"garbage", []byte("hello, this is not a description")},
		{"bad version", append([]byte{2}, good[1:]...)},
		{"truncated", good[:len(good)-1]},
		{"trailing", append(append([]byte{}, good...), 0)},
		{"short ufrag", []byte{1, 3, 'a', 'b', 'c'}},
		{"too many candidates", append(append([]byte{1, 4, 'a', 'b', 'c', 'd', 22}, bytes.Repeat([]byte{'p'}, 22)...), MaxCandidates+1)},
		{"unknown kind", func() []byte {
			b := append([]byte{}, good...)
			b[2+16+1+34+1] = 4 // first candidate's kind
			return b
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d Description
			err := d.UnmarshalBinary(tc.b)
			if !errors.Is(err, ErrBadDescription) {
				t.Fatalf("UnmarshalBinary = %v, want ErrBadDescription", err)
			}
		})
	}
	for _, tc := range []struct {
		name string
		d    Description
	}{
		{"zero", Description{}},
		{"ufrag with colon", mutate(func(d *Description) { d.Ufrag = "ab:cd" })},
		{"short pwd", mutate(func(d *Description) { d.Pwd = "short" })},
		{"prflx", mutate(func(d *Description) { d.Candidates[0].Type = TypePrflx })},
		{"mapped v4", mutate(func(d *Description) { d.Candidates[0].Addr = netip.MustParseAddrPort("[::ffff:1.2.3.4]:5") })},
		{"zone", mutate(func(d *Description) { d.Candidates[0].Addr = netip.MustParseAddrPort("[fe80::1%eth0]:5") })},
		{"unspecified", mutate(func(d *Description) { d.Candidates[0].Addr = netip.MustParseAddrPort("0.0.0.0:5") })},
		{"port zero", mutate(func(d *Description) { d.Candidates[0].Addr = netip.MustParseAddrPort("1.2.3.4:0") })},
		{"priority zero", mutate(func(d *Description) { d.Candidates[0].Priority = 0 })},
		{"duplicate", mutate(func(d *Description) { d.Candidates[1] = d.Candidates[0] })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.d.MarshalBinary(); !errors.Is(err, ErrBadDescription) {
				t.Fatalf("MarshalBinary = %v, want ErrBadDescription", err)
			}
		})
	}
}

// FuzzDescription checks that the decoder never panics and that it only
// accepts canonical encodings: whatever decodes re-encodes to the same
// bytes.
func FuzzDescription(f *testing.F) {
	good, _ := sampleDescription().MarshalBinary()
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{1, 4, 'a', 'b', 'c', 'd'})
	f.Fuzz(func(t *testing.T, b []byte) {
		var d Description
		if err := d.UnmarshalBinary(b); err != nil {
			if !errors.Is(err, ErrBadDescription) {
				t.Fatalf("error %v does not wrap ErrBadDescription", err)
			}
			return
		}
		out, err := d.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded %v does not encode: %v", d, err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", b, out)
		}
	})
}

// TestAddCandidate: a mapped candidate joins a description in priority
// order, once, within MaxCandidates; a bad one is refused.
func TestAddCandidate(t *testing.T) {
	mapped := netip.MustParseAddrPort("203.0.113.5:41641")
	d := Description{Ufrag: "abcd", Pwd: "0123456789abcdefghijkl", Candidates: []Candidate{
		{Type: TypeHost, Addr: netip.MustParseAddrPort("10.0.0.2:41641"), Priority: 2130706431},
		{Type: TypeRelay, Addr: netip.MustParseAddrPort("198.51.100.1:50000"), Priority: 16777215},
	}}
	if err := d.AddCandidate(MappedCandidate(mapped)); err != nil {
		t.Fatal(err)
	}
	if err := d.AddCandidate(MappedCandidate(mapped)); err != nil {
		t.Fatal(err)
	}
	if len(d.Candidates) != 3 || d.Candidates[1].Addr != mapped || d.Candidates[1].Type != TypeSrflx {
		t.Fatalf("candidates = %v; want the mapped srflx between host and relay, once", d.Candidates)
	}
	if err := d.Validate(); err != nil {
		t.Fatalf("description with a mapped candidate: %v", err)
	}
	if err := d.AddCandidate(Candidate{Type: TypeSrflx, Addr: netip.MustParseAddrPort("0.0.0.0:1"), Priority: 1}); err == nil {
		t.Error("unspecified address accepted")
	}
	for i := range MaxCandidates {
		d.AddCandidate(Candidate{Type: TypeHost, Addr: netip.AddrPortFrom(netip.MustParseAddr("10.1.0.1"), uint16(1000+i)), Priority: 1000})
	}
	if len(d.Candidates) != MaxCandidates || d.Candidates[1].Addr != mapped {
		t.Errorf("after filling up: %d candidates, second %v; want %d with the mapped one kept", len(d.Candidates), d.Candidates[1], MaxCandidates)
	}
}
