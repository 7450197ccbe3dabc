package dht_test

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/weft-net/weft/dht"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// epoch is the fake clock's start.
var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// clock is a settable clock, safe for concurrent use.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: epoch} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// testSecret stands in for a signing key: only code that knows it makes
// records testValidator accepts.
var testSecret = []byte("weft-dht-test-secret")

var errBadMAC = errors.New("bad record MAC")

// record builds a value testValidator accepts for key:
// seq(8) expires-unix-nanos(8) mac(32) payload, where mac binds the key.
func record(key dht.Key, seq uint64, expires time.Time, payload string) []byte {
	b := binary.BigEndian.AppendUint64(nil, seq)
	b = binary.BigEndian.AppendUint64(b, uint64(expires.UnixNano()))
	mac := recordMAC(key, b, []byte(payload))
	b = append(b, mac[:]...)
	return append(b, payload...)
}

func recordMAC(key dht.Key, head, payload []byte) [32]byte {
	h := sha256.New()
	h.Write(testSecret)
	h.Write(key[:])
	h.Write(head)
	h.Write(payload)
	return [32]byte(h.Sum(nil))
}

// testValidator checks records made by record.
var testValidator = dht.ValidatorFunc(func(key dht.Key, v []byte, now time.Time) (uint64, time.Time, error) {
	if len(v) < 48 {
		return 0, time.Time{}, errors.New("short record")
	}
	if recordMAC(key, v[:16], v[48:]) != [32]byte(v[16:48]) {
		return 0, time.Time{}, errBadMAC
	}
	return binary.BigEndian.Uint64(v), time.Unix(0, int64(binary.BigEndian.Uint64(v[8:]))).UTC(), nil
})

func peer(n int) dht.Peer {
	var k [32]byte
	k[0], k[1] = byte(n>>8), byte(n)
	k[31] = 0xAA
	return dht.Peer{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(n >> 8), byte(n)}), 4000), Key: k}
}

func key(s string) dht.Key { return dht.NameKey(s) }
