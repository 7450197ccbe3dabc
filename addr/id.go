package addr

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// NodeID identifies a node: the SHA-256 of its Ed25519 public key.
// The zero value is the invalid, unset ID (see IsZero).
type NodeID [32]byte

// NetworkID identifies a network: the SHA-256 of its genesis
// (see trust.Genesis.ID). The zero value is the invalid, unset ID.
type NetworkID [32]byte

// NodeIDFromKey returns the NodeID of an Ed25519 public key.
// It does not check the key's length; trust does that before deriving IDs.
func NodeIDFromKey(pub ed25519.PublicKey) NodeID {
	return NodeID(sha256.Sum256(pub))
}

// ParseNodeID parses 64 hexadecimal digits (either case) into a NodeID.
func ParseNodeID(s string) (NodeID, error) {
	var id NodeID
	if err := parseHex32((*[32]byte)(&id), s); err != nil {
		return NodeID{}, fmt.Errorf("parse node ID: %w", err)
	}
	return id, nil
}

// ParseNetworkID parses 64 hexadecimal digits (either case) into a NetworkID.
func ParseNetworkID(s string) (NetworkID, error) {
	var id NetworkID
	if err := parseHex32((*[32]byte)(&id), s); err != nil {
		return NetworkID{}, fmt.Errorf("parse network ID: %w", err)
	}
	return id, nil
}

func parseHex32(dst *[32]byte, s string) error {
	if len(s) != 64 {
		return fmt.Errorf("%w: want 64 hex digits, got %d characters", ErrInvalidID, len(s))
	}
	if _, err := hex.Decode(dst[:], []byte(s)); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidID, err)
	}
	return nil
}

// String returns the ID as 64 lowercase hex digits.
func (id NodeID) String() string { return hex.EncodeToString(id[:]) }

// Short returns the first 12 hex digits of the ID, for logs and humans.
func (id NodeID) Short() string { return hex.EncodeToString(id[:6]) }

// IsZero reports whether id is the zero (unset) ID.
func (id NodeID) IsZero() bool { return id == NodeID{} }

// MarshalText implements encoding.TextMarshaler.
func (id NodeID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (id *NodeID) UnmarshalText(b []byte) error {
	v, err := ParseNodeID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// String returns the ID as 64 lowercase hex digits.
func (id NetworkID) String() string { return hex.EncodeToString(id[:]) }

// Short returns the first 12 hex digits of the ID, for logs and humans.
func (id NetworkID) Short() string { return hex.EncodeToString(id[:6]) }

// IsZero reports whether id is the zero (unset) ID.
func (id NetworkID) IsZero() bool { return id == NetworkID{} }

// MarshalText implements encoding.TextMarshaler.
func (id NetworkID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (id *NetworkID) UnmarshalText(b []byte) error {
	v, err := ParseNetworkID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}
