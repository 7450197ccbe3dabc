package weft

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/weft-net/weft/nat"
	"github.com/weft-net/weft/trust"
)

// TestRelayCredentialsMembersOnly: a node started with Config.Relay names
// its relay in its record and hands TURN credentials to a member (whose
// record it fetches with a hello, not knowing it yet) but not to a
// stranger with a key of its own.
func TestRelayCredentialsMembersOnly(t *testing.T) {
	base := t.TempDir()
	adir, mdir := filepath.Join(base, "anchor"), filepath.Join(base, "member")
	if _, err := Init(InitOptions{StateDir: adir, Network: "test", Name: "anchor"}); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lo := netip.MustParseAddrPort("127.0.0.1:0")
	relayNode, err := Start(ctx, Config{StateDir: adir, Listen: lo, Logger: log,
		Relay: true, RelayListen: netip.MustParseAddrPort("127.0.0.1:0")})
	if err != nil {
		t.Fatal(err)
	}
	defer relayNode.Close()

	st, err := relayNode.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Relay == nil || !st.Relay.Addr.IsValid() || st.Relay.Addr.Port() == 0 {
		t.Fatalf("status: want the relay, got %+v", st.Relay)
	}
	rec, err := trust.UnmarshalNodeRecord(relayNode.ownRecord())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rec.Relays, []netip.AddrPort{st.Relay.Addr}) {
		t.Errorf("record relays %v, want [%s]", rec.Relays, st.Relay.Addr)
	}

	tok, err := relayNode.Invite(InviteOptions{Name: "member"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Join(ctx, JoinOptions{StateDir: mdir, Token: tok, Logger: log}); err != nil {
		t.Fatal(err)
	}
	member, err := Start(ctx, Config{StateDir: mdir, Listen: lo, Logger: log, DHTRole: DHTRoleServer})
	if err != nil {
		t.Fatal(err)
	}
	defer member.Close()

	relayPeer := nat.Peer{Addr: relayNode.LocalAddr(), Key: relayNode.WGPublicKey()}
	creds, err := member.conn.RelayCredentials(ctx, relayPeer)
	if err != nil {
		t.Fatalf("member's credentials: %v", err)
	}
	if creds.Addr != st.Relay.Addr || creds.Username == "" || creds.Password == "" || !creds.Expires.After(time.Now()) {
		t.Errorf("member's credentials: %s (addr %s)", creds, creds.Addr)
	}

	// A stranger: a socket with a key no member record names.
	var key [32]byte
	rand.Read(key[:])
	stranger, err := nat.Listen(nat.Config{Addr: lo, PrivateKey: key, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	_, err = stranger.RelayCredentials(ctx, relayPeer)
	if !errors.Is(err, nat.ErrRelayUnauthorized) {
		t.Fatalf("stranger's credentials: %v, want %v", err, nat.ErrRelayUnauthorized)
	}
	if st, _ := relayNode.Status(); st.Relay.CredentialsIssued != 1 || st.Relay.CredentialsRefused != 1 {
		t.Errorf("relay status: %+v, want 1 issued and 1 refused", st.Relay)
	}
}
