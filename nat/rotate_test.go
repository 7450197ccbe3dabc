package nat

import (
	"context"
	"testing"
	"time"
)

// TestSetPrivateKey: after a rotation, calls to the new key work, calls
// still sealed to the old key are answered too (exchanges in flight
// complete), and replies carry the new key.
func TestSetPrivateKey(t *testing.T) {
	a, b := listen(t), listen(t)
	b.Handle(MsgPing, func(ctx context.Context, from Peer, body []byte) ([]byte, error) { return body, nil })
	oldPeer := peerOf(b)
	if err := b.SetPrivateKey(newKey(t)); err != nil {
		t.Fatal(err)
	}
	if b.PublicKey() == oldPeer.Key {
		t.Fatal("public key unchanged")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if out, err := a.Call(ctx, peerOf(b), MsgPing, []byte("new")); err != nil || string(out) != "new" {
		t.Fatalf("call to the new key: %q, %v", out, err)
	}
	if out, err := a.Call(ctx, oldPeer, MsgPing, []byte("old")); err != nil || string(out) != "old" {
		t.Fatalf("call sealed to the previous key: %q, %v", out, err)
	}
	if err := b.SetPrivateKey([32]byte{}); err == nil {
		t.Fatal("zero key accepted")
	}
}
