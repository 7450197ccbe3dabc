package nat

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

func TestParseTURNURL(t *testing.T) {
	good := []struct {
		in   string
		want TURNURL
	}{
		{"turn:203.0.113.5:3478?transport=udp&user=u&pass=p",
			TURNURL{Host: "203.0.113.5", Port: 3478, Transport: "udp", Username: "u", Password: "p", Addr: netip.MustParseAddrPort("203.0.113.5:3478")}},
		{"turn:203.0.113.5?user=u&pass=p",
			TURNURL{Host: "203.0.113.5", Port: 3478, Transport: "udp", Username: "u", Password: "p", Addr: netip.MustParseAddrPort("203.0.113.5:3478")}},
		{"TURN:[2001:DB8::1]:443?transport=TCP&user=u&pass=p",
			TURNURL{Host: "2001:db8::1", Port: 443, Transport: "tcp", Username: "u", Password: "p", Addr: netip.MustParseAddrPort("[2001:db8::1]:443")}},
		{"turn:[::ffff:192.0.2.1]?pass=p&user=u",
			TURNURL{Host: "192.0.2.1", Port: 3478, Transport: "udp", Username: "u", Password: "p", Addr: netip.MustParseAddrPort("192.0.2.1:3478")}},
		{"turn:Relay.Example.COM:5000?user=alice%40example&pass=p%26q%3D%2Br",
			TURNURL{Host: "relay.example.com", Port: 5000, Transport: "udp", Username: "alice@example", Password: "p&q=+r"}},
	}
	for _, tt := range good {
		got, err := ParseTURNURL(tt.in)
		if err != nil {
			t.Errorf("ParseTURNURL(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseTURNURL(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
		if again, err := ParseTURNURL(got.withCredential()); err != nil || again != got {
			t.Errorf("round trip of %q through %q: %+v, %v", tt.in, got.withCredential(), again, err)
		}
		if strings.Contains(got.String(), "pass="+got.Password) {
			t.Errorf("String() shows the password: %s", got)
		}
	}

	bad := []struct{ in, want string }{
		{"turns:203.0.113.5:5349?user=u&pass=p", "turns: (TURN over TLS or DTLS) is not supported"},
		{"stun:203.0.113.5:3478", "configure it as a STUN server"},
		{"http://example.com", `unknown scheme "http"`},
		{"203.0.113.5:3478", `unknown scheme "203.0.113.5"`},
		{"relay.example.com", "no scheme"},
		{"turn://203.0.113.5:3478?user=u&pass=p", "without //"},
		{"turn:u:p@203.0.113.5:3478", "the credential goes in the query"},
		{"turn:203.0.113.5:3478", "no credential"},
		{"turn:203.0.113.5:3478?user=u", "no credential"},
		{"turn:203.0.113.5:3478?user=u&pass=", "no credential"},
		{"turn:203.0.113.5:3478?transport=tls&user=u&pass=p", `transport "tls"`},
		{"turn:203.0.113.5:3478?user=u&pass=p&ttl=1", `unknown parameter "ttl"`},
		{"turn:203.0.113.5:3478?user=u&user=v&pass=p", "given 2 times"},
		{"turn:203.0.113.5:0?user=u&pass=p", `port "0"`},
		{"turn:203.0.113.5:70000?user=u&pass=p", `port "70000"`},
		{"turn:203.0.113.5:+1?user=u&pass=p", `port "+1"`},
		{"turn:203.0.113.5:?user=u&pass=p", "empty port"},
		{"turn:2001:db8::1?user=u&pass=p", "need brackets"},
		{"turn:[203.0.113.5]:3478?user=u&pass=p", "need brackets"},
		{"turn:[fe80::1%25eth0]:3478?user=u&pass=p", "unexpected characters"},
		{"turn:[relay]:3478?user=u&pass=p", "not an IPv6 address"},
		{"turn:[2001:db8::1?user=u&pass=p", "unclosed ["},
		{"turn:1.2.3.256?user=u&pass=p", "neither an IP address nor a DNS name"},
		{"turn:relay_1.example?user=u&pass=p", "neither an IP address nor a DNS name"},
		{"turn:?user=u&pass=p", "no host"},
		{"turn:relay.example/path?user=u&pass=p", "unexpected characters"},
		{"turn:relay.example#x", "fragment"},
		{"turn:relay.example?user=u&pass=%zz", "malformed query"},
		{"turn:relay.example?user=%ff&pass=p", "UTF-8"},
		{"turn:relay.example?user=u&pass=" + strings.Repeat("p", 600), "at most 513"},
		{"turn:" + strings.Repeat("a", 3000), "longer than"},
	}
	for _, tt := range bad {
		_, err := ParseTURNURL(tt.in)
		if err == nil {
			t.Errorf("ParseTURNURL(%q) succeeded, want an error containing %q", tt.in, tt.want)
			continue
		}
		if !errors.Is(err, ErrBadTURNURL) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseTURNURL(%q): %q, want ErrBadTURNURL containing %q", tt.in, err, tt.want)
		}
		if _, q, _ := strings.Cut(tt.in, "?"); q != "" && strings.Contains(err.Error(), q) {
			t.Errorf("ParseTURNURL(%q): error shows the query: %q", tt.in, err)
		}
		if strings.Contains(err.Error(), "u:p@") {
			t.Errorf("ParseTURNURL(%q): error shows the credential: %q", tt.in, err)
		}
	}
}

// TestTURNURLForms: the URL forms ICE takes agree with the parsed one.
func TestTURNURLForms(t *testing.T) {
	u, err := ParseTURNURL("turn:[2001:db8::1]:3479?transport=tcp&user=u&pass=p")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := u.URL(), "turn:[2001:db8::1]:3479?transport=tcp"; got != want {
		t.Errorf("URL() = %q, want %q", got, want)
	}
	// pion's own parser reads URL() the same way.
	uri, err := stun.ParseURI(u.URL())
	if err != nil {
		t.Fatal(err)
	}
	uri.Username, uri.Password = "u", "p"
	if *uri != *u.URI() {
		t.Errorf("URI() = %+v, pion parses URL() as %+v", u.URI(), uri)
	}
	creds := newRelayCreds(netip.MustParseAddr("203.0.113.1"), 3478, 0, "1:00", "pw", time.Unix(1e9, 0))
	if got, err := ParseTURNURL(creds.TURN().withCredential()); err != nil || got != creds.TURN() {
		t.Errorf("RelayCreds.TURN() does not round-trip: %+v, %v", got, err)
	}
	if creds.URL != creds.TURN().URL() {
		t.Errorf("RelayCreds.URL %q, TURN().URL() %q", creds.URL, creds.TURN().URL())
	}
}

func FuzzParseTURNURL(f *testing.F) {
	for _, s := range []string{
		"turn:203.0.113.5:3478?transport=udp&user=u&pass=p",
		"turn:[2001:db8::1]:443?transport=tcp&user=u&pass=p",
		"turn:relay.example.com?user=a%40b&pass=%2B",
		"turns:x", "turn:u:p@x", "turn:[::1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseTURNURL(s)
		if err != nil {
			if !errors.Is(err, ErrBadTURNURL) {
				t.Fatalf("error %v does not wrap ErrBadTURNURL", err)
			}
			return
		}
		again, err := ParseTURNURL(u.withCredential())
		if err != nil || again != u {
			t.Fatalf("%q parsed as %+v; its canonical form %q parses as %+v, %v", s, u, u.withCredential(), again, err)
		}
		if _, err := stun.ParseURI(u.URL()); err != nil {
			t.Fatalf("pion cannot parse %q: %v", u.URL(), err)
		}
	})
}
