package nat

import (
	"crypto/rand"
	"net/netip"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func newKey(tb testing.TB) [32]byte {
	tb.Helper()
	var k [32]byte
	rand.Read(k[:])
	return k
}

// listen opens a Conn on IPv4 loopback, closed when the test ends.
func listen(tb testing.TB, mod ...func(*Config)) *Conn {
	tb.Helper()
	cfg := Config{Addr: netip.MustParseAddrPort("127.0.0.1:0"), PrivateKey: newKey(tb)}
	for _, f := range mod {
		f(&cfg)
	}
	c, err := Listen(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

func peerOf(c *Conn) Peer { return Peer{Addr: c.LocalAddr(), Key: c.PublicKey()} }
