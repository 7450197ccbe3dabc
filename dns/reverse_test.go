package dns

import (
	"net/netip"
	"strings"
	"testing"
)

func TestReverseName(t *testing.T) {
	tests := []struct {
		name string
		ip   string // "" → not a complete reverse name
	}{
		{"10.0.64.100.in-addr.arpa.", "100.64.0.10"},
		{"10.0.64.100.IN-ADDR.ARPA", "100.64.0.10"},
		{"0.0.0.0.in-addr.arpa.", "0.0.0.0"},
		{"255.255.255.255.in-addr.arpa.", "255.255.255.255"},
		{"b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.0.0.0.0.1.2.3.4.ip6.arpa.", "4321:0:1:2:3:4:567:89ab"},
		{"B.A.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.0.0.0.0.1.2.3.4.IP6.ARPA", "4321:0:1:2:3:4:567:89ab"},
		{"64.100.in-addr.arpa.", ""},
		{"1.10.0.64.100.in-addr.arpa.", ""},
		{"010.0.64.100.in-addr.arpa.", ""},
		{"256.0.64.100.in-addr.arpa.", ""},
		{"-1.0.64.100.in-addr.arpa.", ""},
		{"a.0.64.100.in-addr.arpa.", ""},
		{"in-addr.arpa.", ""},
		{".in-addr.arpa.", ""},
		{"10.0.64.100xin-addr.arpa.", ""},
		{"ab.a.9.8.7.6.5.4.3.2.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.", ""},
		{"g.a.9.8.7.6.5.4.3.2.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.", ""},
		{"8.b.d.0.1.0.0.2.ip6.arpa.", ""},
		{"example.com.", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ip, ok := parseReverseName(tt.name)
			if ok != (tt.ip != "") {
				t.Fatalf("parse ok = %v (%v)", ok, ip)
			}
			if !ok {
				return
			}
			if want := netip.MustParseAddr(tt.ip); ip != want {
				t.Fatalf("parsed %v, want %v", ip, want)
			}
			if got, want := reverseName(ip), strings.ToLower(strings.TrimSuffix(tt.name, "."))+"."; got != want {
				t.Errorf("reverseName = %q, want %q", got, want)
			}
		})
	}
	for p, want := range map[string]string{
		"100.64.0.0/10":       "100.in-addr.arpa.",
		"10.1.0.0/16":         "1.10.in-addr.arpa.",
		"0.0.0.0/0":           "in-addr.arpa.",
		"fd12:3456:789a::/48": "a.9.8.7.6.5.4.3.2.1.d.f.ip6.arpa.",
		"fd00::/7":            "f.ip6.arpa.",
	} {
		if got := reverseZone(netip.MustParsePrefix(p)); got != want {
			t.Errorf("reverseZone(%s) = %q, want %q", p, got, want)
		}
	}
}

// FuzzReverseName checks that parsing a reverse name and printing the
// address again gives the name back, lowercased and fully qualified.
func FuzzReverseName(f *testing.F) {
	f.Add("10.0.64.100.in-addr.arpa.")
	f.Add("b.a.9.8.7.6.5.4.3.2.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa")
	f.Add("1.2.3.in-addr.arpa.")
	f.Fuzz(func(t *testing.T, name string) {
		ip, ok := parseReverseName(name)
		if !ok {
			return
		}
		want := strings.ToLower(name)
		if !strings.HasSuffix(want, ".") {
			want += "."
		}
		if got := reverseName(ip); got != want {
			t.Fatalf("parse(%q) = %v, printed back as %q", name, ip, got)
		}
	})
}

// FuzzReverseAddr checks that every address survives printing as a
// reverse name and parsing back.
func FuzzReverseAddr(f *testing.F) {
	f.Add([]byte{100, 64, 0, 10})
	f.Add(netip.MustParseAddr("fd12:3456:789a::a").AsSlice())
	f.Add(netip.MustParseAddr("::ffff:1.2.3.4").AsSlice())
	f.Fuzz(func(t *testing.T, b []byte) {
		ip, ok := netip.AddrFromSlice(b)
		if !ok {
			return
		}
		name := reverseName(ip)
		got, ok := parseReverseName(name)
		if !ok || got != ip {
			t.Fatalf("%v → %q → %v, %v", ip, name, got, ok)
		}
		if !isReverseName(name) {
			t.Fatalf("%q not recognised as a reverse name", name)
		}
	})
}
