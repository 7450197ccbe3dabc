package sim

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"sync"
	"time"

	"github.com/weft-net/weft/dht"
)

// Records in the simulator are signed with a MAC under a secret only
// honest code knows, standing in for the owner's ed25519 signature (a MAC
// costs a hash; 10,000 nodes checking signatures would time the CPU, not
// the DHT):
//
//	seq(8) expires-unix-nanos(8) mac(32) payload
//
// where mac = SHA-256(secret || key || seq || expires || payload) binds the
// record to its key. "Forged" records carry a wrong MAC; "stale" ones are
// validly signed with an older sequence number. Revocations gossiped are
// 'R' || issued-unix-nanos(8) || node-id(32) || mac(32).

var (
	errShort  = errors.New("short record")
	errBadMAC = errors.New("bad signature")
)

// records is the simulation's record book: what honest owners published
// and the older versions stale nodes serve.
type records struct {
	secret [32]byte

	mu     sync.Mutex // guards latest and old
	latest map[dht.Key]uint64
	old    map[dht.Key][]byte
}

func newRecords() *records {
	r := &records{latest: make(map[dht.Key]uint64), old: make(map[dht.Key][]byte)}
	rand.Read(r.secret[:])
	return r
}

func (r *records) mac(key dht.Key, head, payload []byte) [32]byte {
	h := sha256.New()
	h.Write(r.secret[:])
	h.Write(key[:])
	h.Write(head)
	h.Write(payload)
	return [32]byte(h.Sum(nil))
}

// make returns a signed record.
func (r *records) make(key dht.Key, seq uint64, expires time.Time, payload []byte) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 48+len(payload)), seq)
	b = binary.BigEndian.AppendUint64(b, uint64(expires.UnixNano()))
	m := r.mac(key, b, payload)
	b = append(b, m[:]...)
	return append(b, payload...)
}

// Validate implements dht.Validator.
func (r *records) Validate(key dht.Key, v []byte, now time.Time) (uint64, time.Time, error) {
	if len(v) < 48 {
		return 0, time.Time{}, errShort
	}
	if r.mac(key, v[:16], v[48:]) != [32]byte(v[16:48]) {
		return 0, time.Time{}, errBadMAC
	}
	return binary.BigEndian.Uint64(v), time.Unix(0, int64(binary.BigEndian.Uint64(v[8:]))), nil
}

// publish records that key's owner publishes seq, and keeps the previous
// version (seq-1, validly signed) for stale nodes to serve.
func (r *records) publish(key dht.Key, seq uint64, expires time.Time, payload []byte) []byte {
	v := r.make(key, seq, expires, payload)
	old := r.make(key, seq-1, expires, payload)
	r.mu.Lock()
	r.latest[key] = seq
	r.old[key] = old
	r.mu.Unlock()
	return v
}

func (r *records) seqOf(key dht.Key) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.latest[key]
}

func (r *records) stale(key dht.Key) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.old[key]
}

// forged returns a record for key with a high sequence number and a wrong
// signature.
func (r *records) forged(key dht.Key) []byte {
	v := r.make(key, 1<<40, time.Now().Add(time.Hour), []byte("forged"))
	v[20] ^= 0xFF
	return v
}

// revocation returns a signed revocation-like gossip payload.
func (r *records) revocation(victim [32]byte, issued time.Time) []byte {
	b := append(make([]byte, 0, 1+8+32+32), 'R')
	b = binary.BigEndian.AppendUint64(b, uint64(issued.UnixNano()))
	b = append(b, victim[:]...)
	m := r.mac(dht.Key{}, b, nil)
	return append(b, m[:]...)
}

func (r *records) forgedRevocation() []byte {
	var victim [32]byte
	rand.Read(victim[:])
	v := r.revocation(victim, time.Now())
	v[len(v)-1] ^= 0xFF
	return v
}

// validateRevocation is the gossip Validate function.
func (r *records) validateRevocation(p []byte) error {
	if len(p) != 1+8+32+32 || p[0] != 'R' {
		return errShort
	}
	if r.mac(dht.Key{}, p[:41], nil) != [32]byte(p[41:]) {
		return errBadMAC
	}
	return nil
}
