package addr

import (
	"net/netip"
	"strings"
	"testing"
)

func FuzzParseNodeID(f *testing.F) {
	f.Add(testNodeID(1).String())
	f.Add(strings.ToUpper(testNodeID(2).String()))
	f.Add("")
	f.Add("xyz")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseNodeID(s)
		if err != nil {
			return
		}
		if !strings.EqualFold(id.String(), s) {
			t.Fatalf("String() = %q, input %q", id.String(), s)
		}
		var back NodeID
		txt, _ := id.MarshalText()
		if err := back.UnmarshalText(txt); err != nil || back != id {
			t.Fatalf("text round trip: %v %v", back, err)
		}
		nw, err := ParseNetworkID(s)
		if err != nil || [32]byte(nw) != [32]byte(id) {
			t.Fatalf("ParseNetworkID disagrees: %v %v", nw, err)
		}
		var nback NetworkID
		if err := nback.UnmarshalText([]byte(nw.String())); err != nil || nback != nw {
			t.Fatalf("network text round trip: %v %v", nback, err)
		}
	})
}

func FuzzParseIPv4Prefix(f *testing.F) {
	for _, s := range []string{DefaultIPv4Prefix, "10.0.0.0/8", "1.2.3.4/30", "fd00::/8", "1.2.3.4/31", "x"} {
		f.Add(s, 0)
	}
	f.Fuzz(func(t *testing.T, s string, attempt int) {
		p, err := ParseIPv4Prefix(s)
		if err != nil {
			return
		}
		if p2, err := ParseIPv4Prefix(p.String()); err != nil || p2 != p {
			t.Fatalf("round trip %q -> %v -> %v, %v", s, p, p2, err)
		}
		ip, err := IPv4(p, testNodeID(byte(attempt)), attempt)
		if attempt < 0 || uint64(attempt) > 1<<32-1 {
			if err == nil {
				t.Fatalf("attempt %d accepted", attempt)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if !p.Contains(ip) || ip == p.Addr() || ip == lastAddr(p) {
			t.Fatalf("IPv4(%v) = %v", p, ip)
		}
	})
}

func FuzzIPv6(f *testing.F) {
	f.Add(make([]byte, 32), make([]byte, 32), "fd00::1")
	f.Fuzz(func(t *testing.T, nwb, idb []byte, s string) {
		var nw NetworkID
		var id NodeID
		copy(nw[:], nwb)
		copy(id[:], idb)
		ip := IPv6(nw, id)
		if !ULAPrefix(nw).Contains(ip) {
			t.Fatalf("%v outside %v", ip, ULAPrefix(nw))
		}
		if err := CheckIPv6(nw, id, ip); err != nil {
			t.Fatal(err)
		}
		if other, err := netip.ParseAddr(s); err == nil && other != ip {
			if CheckIPv6(nw, id, other) == nil {
				t.Fatalf("CheckIPv6 accepted %v for %v", other, ip)
			}
		}
	})
}

func FuzzCheckName(f *testing.F) {
	for _, s := range []string{"web-1", "", "-a", "A", "a.b", DefaultDomain} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		nameErr := CheckName(s)
		domErr := CheckDomain(s)
		if nameErr == nil {
			if domErr != nil {
				t.Fatalf("valid name %q is not a valid domain: %v", s, domErr)
			}
			if len(s) == 0 || len(s) > 63 || strings.ContainsAny(s, ".ABCXYZ_ ") {
				t.Fatalf("CheckName accepted %q", s)
			}
		}
		if domErr == nil {
			for _, l := range strings.Split(s, ".") {
				if CheckName(l) != nil {
					t.Fatalf("domain %q has bad label %q", s, l)
				}
			}
			if len(s) > 253 {
				t.Fatalf("domain too long accepted")
			}
		}
	})
}
