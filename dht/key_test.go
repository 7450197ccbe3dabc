package dht_test

import (
	"crypto/sha256"
	"net/netip"
	"testing"

	"github.com/weft-net/weft/addr"
	"github.com/weft-net/weft/dht"
)

func TestKeyDerivations(t *testing.T) {
	var id addr.NodeID
	id[0] = 1
	if got, want := dht.NameKey("alice"), dht.Key(sha256.Sum256([]byte("weft/name/alice"))); got != want {
		t.Errorf("NameKey(alice) = %s, want %s", got, want)
	}
	if got, want := dht.NodeKey(id), dht.Key(sha256.Sum256(append([]byte("weft/node/"), id[:]...))); got != want {
		t.Errorf("NodeKey = %s, want %s", got, want)
	}
	v4 := netip.MustParseAddr("100.64.0.1")
	if got, want := dht.IPKey(v4), dht.Key(sha256.Sum256(append([]byte("weft/ip/"), 100, 64, 0, 1))); got != want {
		t.Errorf("IPKey(%s) = %s, want %s", v4, got, want)
	}
	if dht.IPKey(netip.MustParseAddr("::ffff:100.64.0.1")) != dht.IPKey(v4) {
		t.Error("IPKey of IPv4-mapped address differs from IPv4")
	}
	if dht.IPKey(netip.MustParseAddr("fe80::1%eth0")) != dht.IPKey(netip.MustParseAddr("fe80::1")) {
		t.Error("IPKey depends on zone")
	}
	// Kinds are domain-separated.
	keys := map[dht.Key]string{}
	for name, k := range map[string]dht.Key{
		"node": dht.NodeKey(id),
		"name": dht.NameKey(string(id[:])),
		"ip":   dht.IPKey(netip.MustParseAddr("fd00::1")),
		"ip4":  dht.IPKey(v4),
	} {
		if other, ok := keys[k]; ok {
			t.Errorf("%s and %s collide", name, other)
		}
		keys[k] = name
	}
}

func TestKeyText(t *testing.T) {
	k := dht.NameKey("bob")
	got, err := dht.ParseKey(k.String())
	if err != nil || got != k {
		t.Fatalf("ParseKey(String()) = %v, %v", got, err)
	}
	var u dht.Key
	text, _ := k.MarshalText()
	if err := u.UnmarshalText(text); err != nil || u != k {
		t.Fatalf("UnmarshalText = %v, %v", u, err)
	}
	if len(k.Short()) != 12 {
		t.Errorf("Short() = %q", k.Short())
	}
	for _, bad := range []string{"", "00", k.String() + "0", "zz" + k.String()[2:]} {
		if _, err := dht.ParseKey(bad); err == nil {
			t.Errorf("ParseKey(%q) succeeded", bad)
		}
	}
	if !(dht.Key{}).IsZero() || k.IsZero() {
		t.Error("IsZero wrong")
	}
}

func TestDistance(t *testing.T) {
	var a, b, c dht.Key
	b[0] = 0x80
	c[31] = 0x01
	tests := []struct {
		name string
		x, y dht.Key
		cpl  int
	}{
		{"equal", a, a, 256},
		{"first bit", a, b, 0},
		{"last bit", a, c, 255},
		{"middle", a, dht.Key{0, 0x10}, 11},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.x.CommonPrefixLen(tt.y); got != tt.cpl {
				t.Errorf("CommonPrefixLen = %d, want %d", got, tt.cpl)
			}
			if tt.x.Distance(tt.y) != tt.y.Distance(tt.x) {
				t.Error("Distance not symmetric")
			}
		})
	}
	if dht.CompareDistance(a, c, b) != -1 || dht.CompareDistance(a, b, c) != 1 || dht.CompareDistance(a, b, b) != 0 {
		t.Error("CompareDistance wrong")
	}
}
