package addr

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testNodeID(b byte) NodeID {
	var id NodeID
	for i := range id {
		id[i] = b + byte(i)
	}
	return id
}

func TestNodeIDFromKey(t *testing.T) {
	pub := ed25519.PublicKey(make([]byte, ed25519.PublicKeySize))
	want := NodeID(sha256.Sum256(pub))
	if got := NodeIDFromKey(pub); got != want {
		t.Fatalf("NodeIDFromKey = %v, want %v", got, want)
	}
}

func TestParseNodeID(t *testing.T) {
	id := testNodeID(0xa0)
	tests := []struct {
		name    string
		in      string
		want    NodeID
		wantErr bool
	}{
		{"lower", id.String(), id, false},
		{"upper", strings.ToUpper(id.String()), id, false},
		{"zero", strings.Repeat("0", 64), NodeID{}, false},
		{"empty", "", NodeID{}, true},
		{"short", id.String()[:63], NodeID{}, true},
		{"long", id.String() + "0", NodeID{}, true},
		{"non-hex", "g" + id.String()[1:], NodeID{}, true},
		{"spaces", " " + id.String()[1:], NodeID{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseNodeID(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrInvalidID) {
				t.Fatalf("err = %v, want ErrInvalidID", err)
			}
			if got != tt.want {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			nw, err2 := ParseNetworkID(tt.in)
			if (err2 != nil) != tt.wantErr || [32]byte(nw) != [32]byte(tt.want) {
				t.Fatalf("ParseNetworkID = %v, %v", nw, err2)
			}
		})
	}
}

func TestIDPrinting(t *testing.T) {
	id := testNodeID(0x10)
	if s := id.String(); len(s) != 64 || s != strings.ToLower(s) {
		t.Fatalf("String = %q", s)
	}
	if id.Short() != id.String()[:12] {
		t.Fatalf("Short = %q", id.Short())
	}
	nw := NetworkID(id)
	if nw.Short() != id.Short() || nw.String() != id.String() {
		t.Fatal("NetworkID printing differs from NodeID printing")
	}
	if !(NodeID{}).IsZero() || id.IsZero() || !(NetworkID{}).IsZero() || nw.IsZero() {
		t.Fatal("IsZero wrong")
	}
}

func TestIDJSON(t *testing.T) {
	type doc struct {
		Node NodeID
		Net  NetworkID
		Map  map[NodeID]int
	}
	in := doc{Node: testNodeID(1), Net: NetworkID(testNodeID(2)), Map: map[NodeID]int{testNodeID(3): 7}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), in.Node.String()) {
		t.Fatalf("json %s lacks hex ID", b)
	}
	var out doc
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if out.Node != in.Node || out.Net != in.Net || out.Map[testNodeID(3)] != 7 {
		t.Fatalf("round trip: %+v", out)
	}
	if err := json.Unmarshal([]byte(`{"Node":"zz"}`), &out); err == nil {
		t.Fatal("bad ID accepted")
	}
}

func TestULAPrefix(t *testing.T) {
	var nw NetworkID
	copy(nw[:], []byte{0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde})
	got := ULAPrefix(nw)
	want := netip.MustParsePrefix("fd12:3456:789a::/48")
	if got != want {
		t.Fatalf("ULAPrefix = %v, want %v", got, want)
	}
}

func TestIPv6(t *testing.T) {
	var nw NetworkID
	copy(nw[:], []byte{0x12, 0x34, 0x56, 0x78, 0x9a})
	id := testNodeID(7)
	ip := IPv6(nw, id)
	if !ULAPrefix(nw).Contains(ip) {
		t.Fatalf("%v not in %v", ip, ULAPrefix(nw))
	}
	b := ip.As16()
	if b[6] != 0 || b[7] != 0 {
		t.Fatalf("subnet not 0: %v", ip)
	}
	sum := sha256.Sum256(append([]byte("weft-iid-v1"), id[:]...))
	if string(b[8:]) != string(sum[:8]) {
		t.Fatalf("IID mismatch: %v", ip)
	}
	if IPv6(nw, id) != ip {
		t.Fatal("not deterministic")
	}

	tests := []struct {
		name string
		nw   NetworkID
		id   NodeID
		ip   netip.Addr
		ok   bool
	}{
		{"own", nw, id, ip, true},
		{"other node", nw, testNodeID(8), ip, false},
		{"other network", NetworkID(testNodeID(9)), id, ip, false},
		{"mapped v4", nw, id, netip.MustParseAddr("::ffff:100.64.0.1"), false},
		{"zoned", nw, id, ip.WithZone("eth0"), false},
		{"invalid", nw, id, netip.Addr{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckIPv6(tt.nw, tt.id, tt.ip)
			if (err == nil) != tt.ok {
				t.Fatalf("CheckIPv6 = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrAddrMismatch) {
				t.Fatalf("err %v is not ErrAddrMismatch", err)
			}
		})
	}
}

func TestParseIPv4Prefix(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" means error
	}{
		{DefaultIPv4Prefix, "100.64.0.0/10"},
		{"10.0.0.0/8", "10.0.0.0/8"},
		{"192.168.7.0/24", "192.168.7.0/24"},
		{"192.168.7.4/30", "192.168.7.4/30"},
		{"10.0.0.0/7", ""},
		{"10.0.0.0/31", ""},
		{"10.0.0.0/32", ""},
		{"100.64.0.1/10", ""},
		{"fd00::/48", ""},
		{"::ffff:10.0.0.0/104", ""},
		{"10.0.0.0", ""},
		{"", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseIPv4Prefix(tt.in)
			if tt.want == "" {
				if err == nil || !errors.Is(err, ErrInvalidPrefix) {
					t.Fatalf("got %v, %v; want ErrInvalidPrefix", got, err)
				}
				return
			}
			if err != nil || got.String() != tt.want {
				t.Fatalf("got %v, %v; want %s", got, err, tt.want)
			}
		})
	}
	_, err := ParseIPv4Prefix("100.64.0.1/10")
	if err == nil || !strings.Contains(err.Error(), "did you mean 100.64.0.0/10") {
		t.Fatalf("unhelpful error: %v", err)
	}
}

func TestIPv4(t *testing.T) {
	tests := []struct {
		prefix string
		hosts  int
	}{
		{"100.64.0.0/10", 1<<22 - 2},
		{"10.0.0.0/8", 1<<24 - 2},
		{"192.168.1.0/24", 254},
		{"192.168.1.8/29", 6},
		{"192.168.1.4/30", 2},
	}
	for _, tt := range tests {
		t.Run(tt.prefix, func(t *testing.T) {
			p := netip.MustParsePrefix(tt.prefix)
			if got := IPv4Hosts(p); got != tt.hosts {
				t.Fatalf("IPv4Hosts = %d, want %d", got, tt.hosts)
			}
			network := p.Addr()
			seen := map[netip.Addr]bool{}
			for attempt := 0; attempt < 200; attempt++ {
				ip, err := IPv4(p, testNodeID(byte(attempt)), attempt)
				if err != nil {
					t.Fatal(err)
				}
				if !p.Contains(ip) || !ip.Is4() {
					t.Fatalf("%v outside %v", ip, p)
				}
				if ip == network || ip == lastAddr(p) {
					t.Fatalf("attempt %d gave network/broadcast %v", attempt, ip)
				}
				seen[ip] = true
			}
			if tt.hosts == 2 && len(seen) != 2 {
				t.Fatalf("/30 produced %d distinct hosts, want 2", len(seen))
			}
		})
	}

	id := testNodeID(3)
	p := netip.MustParsePrefix(DefaultIPv4Prefix)
	a0, _ := IPv4(p, id, 0)
	a0b, _ := IPv4(p, id, 0)
	a1, _ := IPv4(p, id, 1)
	if a0 != a0b {
		t.Fatal("not deterministic")
	}
	if a0 == a1 {
		t.Fatal("attempts 0 and 1 collide (unlikely; check derivation)")
	}
	for _, bad := range []struct {
		p       netip.Prefix
		attempt int
	}{
		{netip.MustParsePrefix("fd00::/48"), 0},
		{netip.MustParsePrefix("10.0.0.0/31"), 0},
		{netip.Prefix{}, 0},
		{p, -1},
	} {
		if _, err := IPv4(bad.p, id, bad.attempt); err == nil {
			t.Errorf("IPv4(%v, %d) succeeded", bad.p, bad.attempt)
		}
	}
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func TestCheckName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"web-1", true},
		{"0", true},
		{"9lives", true},
		{strings.Repeat("a", 63), true},
		{strings.Repeat("a", 64), false},
		{"", false},
		{"-a", false},
		{"a-", false},
		{"Web", false},
		{"a.b", false},
		{"a_b", false},
		{"a b", false},
		{"café", false},
		{"a\x00", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckName(tt.name)
			if (err == nil) != tt.ok {
				t.Fatalf("CheckName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidName) {
				t.Fatalf("err %v is not ErrInvalidName", err)
			}
		})
	}
	if err := CheckName("Web"); !strings.Contains(err.Error(), "lowercase") {
		t.Fatalf("unhelpful error: %v", err)
	}
}

func TestCheckDomain(t *testing.T) {
	label63 := strings.Repeat("a", 63)
	tests := []struct {
		domain string
		ok     bool
	}{
		{DefaultDomain, true},
		{"internal", true},
		{"corp.example.com", true},
		{strings.Join([]string{label63, label63, label63, strings.Repeat("b", 61)}, "."), true}, // 253
		{strings.Join([]string{label63, label63, label63, strings.Repeat("b", 62)}, "."), false},
		{"", false},
		{".", false},
		{"weft.internal.", false},
		{".weft", false},
		{"a..b", false},
		{"Weft.internal", false},
		{"weft.-internal", false},
		{"we ft.internal", false},
	}
	for _, tt := range tests {
		t.Run(tt.domain, func(t *testing.T) {
			err := CheckDomain(tt.domain)
			if (err == nil) != tt.ok {
				t.Fatalf("CheckDomain(%q) = %v, want ok=%v", tt.domain, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidDomain) {
				t.Fatalf("err %v is not ErrInvalidDomain", err)
			}
		})
	}
}
