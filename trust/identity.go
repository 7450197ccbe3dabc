package trust

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/crypto/curve25519"

	"github.com/weft-net/weft/addr"
)

// Identity is a node's secret key material: an Ed25519 key that signs
// records and requests, and a Curve25519 key used by WireGuard and for
// sealing control messages.
type Identity struct {
	// Sign is the Ed25519 private key. Its public half determines the NodeID.
	Sign ed25519.PrivateKey
	// WG is the clamped Curve25519 private key.
	WG [32]byte
}

// NewIdentity generates a fresh identity from crypto/rand.
func NewIdentity() (*Identity, error) { return NewIdentityFrom(rand.Reader) }

// NewIdentityFrom generates an identity reading randomness from r
// (deterministic tests pass a seeded reader).
func NewIdentityFrom(r io.Reader) (*Identity, error) {
	var seed [ed25519.SeedSize]byte
	var wg [32]byte
	if _, err := io.ReadFull(r, seed[:]); err != nil {
		return nil, fmt.Errorf("new identity: %w", err)
	}
	if _, err := io.ReadFull(r, wg[:]); err != nil {
		return nil, fmt.Errorf("new identity: %w", err)
	}
	clamp(&wg)
	return &Identity{Sign: ed25519.NewKeyFromSeed(seed[:]), WG: wg}, nil
}

// RotateWG replaces id.WG with a fresh key from crypto/rand and returns
// the old private key, so the caller can keep it for a grace period (or
// restore it if saving the new identity fails). The NodeID does not
// change; the node announces the new key in a NodeRecord (WGKey) signed
// by its Ed25519 key, and peers re-handshake with it.
func (id *Identity) RotateWG() (old [32]byte, err error) {
	var wg [32]byte
	if _, err := io.ReadFull(rand.Reader, wg[:]); err != nil {
		return [32]byte{}, fmt.Errorf("rotate WireGuard key: %w", err)
	}
	clamp(&wg)
	old, id.WG = id.WG, wg
	return old, nil
}

func clamp(k *[32]byte) {
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
}

// NodeID returns the SHA-256 of the Ed25519 public key.
func (id *Identity) NodeID() addr.NodeID { return addr.NodeIDFromKey(id.SignPublic()) }

// SignPublic returns the Ed25519 public key.
func (id *Identity) SignPublic() ed25519.PublicKey {
	return id.Sign.Public().(ed25519.PublicKey)
}

// WGPublic returns the Curve25519 public key of WG.
func (id *Identity) WGPublic() [32]byte {
	var pub [32]byte
	curve25519.ScalarBaseMult(&pub, &id.WG)
	return pub
}

func (id *Identity) marshal() []byte {
	e := encoder{b: make([]byte, 0, 2+64)}
	e.u8(tagIdentity)
	e.u8(wireVersion)
	e.raw(id.Sign.Seed())
	e.raw(id.WG[:])
	return e.b
}

func unmarshalIdentity(b []byte) (*Identity, error) {
	d := decoder{b: b}
	d.header(tagIdentity, "identity key")
	seed := d.take(ed25519.SeedSize)
	var wg [32]byte
	d.array32(&wg)
	if d.err == nil {
		c := wg
		clamp(&c)
		if c != wg {
			d.fail("WireGuard key is not clamped")
		}
	}
	if err := d.finish("identity key"); err != nil {
		return nil, err
	}
	return &Identity{Sign: ed25519.NewKeyFromSeed(seed), WG: wg}, nil
}

// SaveIdentity writes id to dir/identity.key atomically with mode 0600,
// creating dir with mode 0700 if needed.
func SaveIdentity(dir string, id *Identity) error {
	if len(id.Sign) != ed25519.PrivateKeySize {
		return fmt.Errorf("save identity: Ed25519 key has %d bytes, want %d", len(id.Sign), ed25519.PrivateKeySize)
	}
	path := filepath.Join(dir, IdentityFile)
	if err := writeFileAtomic(path, id.marshal(), 0o600); err != nil {
		return fmt.Errorf("save identity: %w", err)
	}
	return nil
}

// LoadIdentity reads dir/identity.key. It refuses a file that group or
// others can access (the error wraps ErrKeyPermissions and says to run
// chmod 600). A missing file yields an error wrapping fs.ErrNotExist.
func LoadIdentity(dir string) (*Identity, error) {
	path := filepath.Join(dir, IdentityFile)
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("load identity: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("load identity: %w: %s has mode %04o and may be read by other users; run `chmod 600 %s` (and consider rotating the key)",
			ErrKeyPermissions, path, perm, path)
	}
	b, err := readFileLimited(path)
	if err != nil {
		return nil, fmt.Errorf("load identity: %w", err)
	}
	id, err := unmarshalIdentity(b)
	if err != nil {
		return nil, fmt.Errorf("load identity %s: %w", path, err)
	}
	return id, nil
}

// LoadOrCreateIdentity loads dir/identity.key, or generates and saves a new
// identity if the file does not exist. created reports which happened.
func LoadOrCreateIdentity(dir string) (id *Identity, created bool, err error) {
	id, err = LoadIdentity(dir)
	if err == nil {
		return id, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	id, err = NewIdentity()
	if err != nil {
		return nil, false, err
	}
	if err := SaveIdentity(dir, id); err != nil {
		return nil, false, err
	}
	return id, true, nil
}
