package nat

import (
	"crypto/subtle"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/salsa20/salsa"
)

// precompute derives the NaCl box shared key for (peer, priv), exactly as
// box.Precompute does, but refuses low-order peer keys (whose shared secret
// is all zeros and therefore known to everyone).
func precompute(peer, priv *[32]byte) (*[32]byte, error) {
	s, err := curve25519.X25519(priv[:], peer[:])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	var in [32]byte
	copy(in[:], s)
	shared := new([32]byte)
	salsa.HSalsa20(shared, &[16]byte{}, &in, &salsa.Sigma)
	return shared, nil
}

// keyCache is a bounded map from peer public key to precomputed shared key.
// When full, an arbitrary entry is evicted (Go's map iteration order), which
// is O(1) and good enough: entries are only added for keys that have sealed
// a valid packet to us or that we called.
type keyCache struct {
	max int

	mu sync.Mutex // guards m
	m  map[[32]byte]*[32]byte
}

func newKeyCache(max int) *keyCache {
	return &keyCache{max: max, m: make(map[[32]byte]*[32]byte)}
}

func (c *keyCache) get(k *[32]byte) (*[32]byte, bool) {
	c.mu.Lock()
	v, ok := c.m[*k]
	c.mu.Unlock()
	return v, ok
}

func (c *keyCache) put(k *[32]byte, v *[32]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[*k]; !ok && len(c.m) >= c.max {
		for old := range c.m {
			delete(c.m, old)
			break
		}
	}
	c.m[*k] = v
}

func (c *keyCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// keyEqual compares keys in constant time.
func keyEqual(a, b *[32]byte) bool {
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// limiter is a per-source-IP token bucket. The table is bounded: when it
// reaches max entries, entries that have refilled completely (and so carry
// no state worth keeping) are swept; if none are, the new source is refused.
type limiter struct {
	rate  float64 // tokens per second
	burst float64
	max   int

	mu sync.Mutex // guards m
	m  map[netip.Addr]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(rate, burst float64, max int) *limiter {
	return &limiter{rate: rate, burst: burst, max: max, m: make(map[netip.Addr]*bucket)}
}

// allow takes one token for src, reporting whether one was available.
func (l *limiter) allow(src netip.Addr, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.m[src]
	if !ok {
		if len(l.m) >= l.max {
			l.sweepLocked(now)
			if len(l.m) >= l.max {
				return false
			}
		}
		b = &bucket{tokens: l.burst, last: now}
		l.m[src] = b
	}
	if dt := now.Sub(b.last).Seconds(); dt > 0 {
		b.tokens = min(l.burst, b.tokens+dt*l.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// sweepLocked drops buckets that would be full by now.
func (l *limiter) sweepLocked(now time.Time) {
	for k, b := range l.m {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.m, k)
		}
	}
}

// publicKey returns the Curve25519 public key of priv.
func publicKey(priv *[32]byte) ([32]byte, error) {
	var pub [32]byte
	b, err := curve25519.X25519(priv[:], curve25519.Basepoint)
	copy(pub[:], b)
	return pub, err
}

// keySet is a private key with its public key and shared-key cache.
type keySet struct {
	priv, pub [32]byte
	keys      *keyCache
}

// SetPrivateKey switches the socket's control messages to a new private key
// (WireGuard key rotation). Packets sealed to the previous key are still
// opened until the next call, so exchanges in flight complete.
func (c *Conn) SetPrivateKey(priv [32]byte) error {
	pub, err := publicKey(&priv)
	if err != nil {
		return fmt.Errorf("nat set private key: %w", err)
	}
	if priv == ([32]byte{}) {
		return fmt.Errorf("nat set private key: key is zero: %w", ErrBadKey)
	}
	old := c.ks.Swap(&keySet{priv: priv, pub: pub, keys: newKeyCache(c.cacheSize)})
	c.prev.Store(old)
	return nil
}
