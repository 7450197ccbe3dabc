package trust

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// t0 is the fixed "now" of the tests.
var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

type seededReader struct{ r *rand.ChaCha8 }

func (s seededReader) Read(p []byte) (int, error) { return s.r.Read(p) }

func newTestIdentity(t testing.TB, seed byte) *Identity {
	t.Helper()
	var s [32]byte
	s[0] = seed
	id, err := NewIdentityFrom(seededReader{rand.NewChaCha8(s)})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// testNet is a network of n anchors with threshold th (0 = default).
type testNet struct {
	anchors []*Identity
	g       *Genesis
}

func newTestNet(t testing.TB, n, th int, prefix string) *testNet {
	t.Helper()
	tn := &testNet{}
	var infos []AnchorInfo
	for i := range n {
		id := newTestIdentity(t, byte(100+i))
		tn.anchors = append(tn.anchors, id)
		infos = append(infos, AnchorInfo{SignKey: id.SignPublic(), WGKey: id.WGPublic(), Name: fmt.Sprintf("anchor-%d", i)})
	}
	var p netip.Prefix
	if prefix != "" {
		p = netip.MustParsePrefix(prefix)
	}
	g, err := NewGenesis("testnet", "", p, infos, th)
	if err != nil {
		t.Fatal(err)
	}
	g.Created = t0.Add(-time.Hour) // deterministic network ID
	tn.g = g
	return tn
}

// cert returns an unendorsed certificate for id in tn.
func (tn *testNet) cert(id *Identity, name string) *Certificate {
	return &Certificate{
		Network:   tn.g.ID(),
		NodeID:    id.NodeID(),
		SignKey:   id.SignPublic(),
		WGKey:     id.WGPublic(),
		Name:      name,
		IPv4:      netip.MustParseAddr("100.64.1.2"),
		Tags:      []string{"web"},
		NotBefore: t0.Add(-time.Hour),
		NotAfter:  t0.Add(24 * time.Hour),
		Serial:    7,
	}
}

func wantReason(t testing.TB, err error, r Reason, substr ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got nil error, want reason %v", r)
	}
	var re *RejectError
	if !errors.As(err, &re) {
		t.Fatalf("error %q (%T) is not a *RejectError", err, err)
	}
	if re.Reason != r {
		t.Fatalf("reason = %v, want %v (err: %v)", re.Reason, r, err)
	}
	if !errors.Is(err, r.Sentinel()) {
		t.Fatalf("errors.Is(err, %v) = false", r.Sentinel())
	}
	for _, s := range substr {
		if !strings.Contains(err.Error(), s) {
			t.Fatalf("error %q does not contain %q", err, s)
		}
	}
}

func encodeB64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
