package nat

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"

	"github.com/weft-net/weft/nat/internal/pionlog"
)

// allowAnyPeer lets loopback tests relay to loopback sockets, which the
// default AllowPeer refuses.
func allowAnyPeer(netip.Addr) bool { return true }

// newTestRelay starts a relay on IPv4 loopback that admits everyone and
// relays to anything, closed when the test ends.
func newTestRelay(tb testing.TB, mod ...func(*RelayConfig)) *Relay {
	tb.Helper()
	cfg := RelayConfig{
		Listen:    netip.MustParseAddrPort("127.0.0.1:0"),
		Authorize: func(Peer) bool { return true },
		AllowPeer: allowAnyPeer,
	}
	if os.Getenv("NAT_TEST_VERBOSE") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	for _, f := range mod {
		f(&cfg)
	}
	r, err := NewRelay(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { r.Close() })
	return r
}

// allocation is a pion/turn client with one allocation.
type allocation struct {
	client  *turn.Client
	relayed net.PacketConn // the allocation: writes go to peers through the relay
	conn    net.PacketConn // the client's socket to the server
}

// allocate runs a pion/turn client over transport ("udp" or "tcp") to
// creds' relay and allocates. The allocation is released when the test
// ends.
func allocate(tb testing.TB, server netip.AddrPort, user, pass, transport string) (*allocation, error) {
	tb.Helper()
	return allocateFrom(tb, func() (net.PacketConn, error) {
		if transport == "tcp" {
			c, err := net.Dial("tcp", server.String())
			if err != nil {
				return nil, err
			}
			return turn.NewSTUNConn(c), nil
		}
		return net.ListenPacket("udp4", "127.0.0.1:0")
	}, server, user, pass)
}

// allocateFrom is allocate with a socket of the caller's making (in a lab
// namespace, say).
func allocateFrom(tb testing.TB, dial func() (net.PacketConn, error), server netip.AddrPort, user, pass string) (*allocation, error) {
	tb.Helper()
	conn, err := dial()
	if err != nil {
		return nil, err
	}
	client, err := turn.NewClient(&turn.ClientConfig{
		TURNServerAddr: server.String(),
		Username:       user,
		Password:       pass,
		Conn:           conn,
		LoggerFactory:  pionlog.Factory{Log: slog.New(slog.DiscardHandler)},
	})
	if err != nil {
		conn.Close()
		return nil, err
	}
	if err := client.Listen(); err != nil {
		client.Close()
		conn.Close()
		return nil, err
	}
	a := &allocation{client: client, conn: conn}
	tb.Cleanup(a.close)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if a.relayed, err = client.AllocateWithContext(ctx); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *allocation) close() {
	if a.relayed != nil {
		a.relayed.Close()
	}
	a.client.Close()
	a.conn.Close()
}

func (a *allocation) relayedAddr() netip.AddrPort {
	return a.relayed.LocalAddr().(*net.UDPAddr).AddrPort()
}

// turnErrorCode returns the STUN error code in a pion/turn client error, 0
// if there is none.
func turnErrorCode(err error) stun.ErrorCode {
	var te *stun.TurnError
	if errors.As(err, &te) {
		return te.ErrorCodeAttr.Code
	}
	return 0
}

// readFrom reads one datagram with a timeout.
func readFrom(tb testing.TB, pc net.PacketConn) ([]byte, net.Addr) {
	tb.Helper()
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	n, from, err := pc.ReadFrom(buf)
	if err != nil {
		tb.Fatalf("read on %v: %v", pc.LocalAddr(), err)
	}
	return buf[:n], from
}

// relayNode is a node serving a relay's credentials on its Conn.
func relayNode(t *testing.T, mod ...func(*RelayConfig)) (*Conn, *Relay) {
	t.Helper()
	c := listen(t)
	r := newTestRelay(t, mod...)
	c.ServeRelay(r)
	return c, r
}

// TestRelayAllocate: a member gets credentials from the relay's node over
// the control RPC, a pion/turn client allocates with them (over UDP and
// over TCP) and UDP flows both ways between the allocation and a plain
// socket.
func TestRelayAllocate(t *testing.T) {
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			rc, relay := relayNode(t)
			member := listen(t)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			before := time.Now()
			creds, err := member.RelayCredentials(ctx, peerOf(rc))
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("credentials: %v", creds)
			port := relay.Addr().Port()
			if want := "turn:127.0.0.1:" + itoa(port) + "?transport=udp"; creds.URL != want {
				t.Errorf("URL %q, want %q", creds.URL, want)
			}
			if want := "turn:127.0.0.1:" + itoa(port) + "?transport=tcp"; creds.TCPURL != want {
				t.Errorf("TCPURL %q, want %q", creds.TCPURL, want)
			}
			if creds.Addr != relay.Addr() {
				t.Errorf("Addr %v, want %v", creds.Addr, relay.Addr())
			}
			if ttl := creds.Expires.Sub(before); ttl < defaultCredentialTTL-2*time.Second || ttl > defaultCredentialTTL+time.Second {
				t.Errorf("credentials expire in %v, want about %v", ttl, defaultCredentialTTL)
			}
			key := member.PublicKey()
			if _, id, ok := parseRelayUsername(creds.Username); !ok || id != hexString(key[:relayKeyIDBytes]) {
				t.Errorf("username %q does not name the member's key", creds.Username)
			}
			if strings.Contains(creds.String(), creds.Password) {
				t.Errorf("String() shows the password: %s", creds)
			}

			a, err := allocate(t, creds.Addr, creds.Username, creds.Password, transport)
			if err != nil {
				t.Fatalf("allocate over %s: %v", transport, err)
			}
			if got := a.relayedAddr(); got.Addr() != relay.Addr().Addr() {
				t.Errorf("relayed address %v, want one on %v", got, relay.Addr().Addr())
			}
			peer, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()

			if _, err := a.relayed.WriteTo([]byte("to the peer"), peer.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			got, from := readFrom(t, peer)
			if string(got) != "to the peer" || from.(*net.UDPAddr).AddrPort() != a.relayedAddr() {
				t.Fatalf("peer got %q from %v, want %q from %v", got, from, "to the peer", a.relayedAddr())
			}
			if _, err := peer.WriteTo([]byte("to the member"), net.UDPAddrFromAddrPort(a.relayedAddr())); err != nil {
				t.Fatal(err)
			}
			got, from = readFrom(t, a.relayed)
			if string(got) != "to the member" || from.String() != peer.LocalAddr().String() {
				t.Fatalf("member got %q from %v, want %q from %v", got, from, "to the member", peer.LocalAddr())
			}

			// The relay counts a datagram after passing it on.
			waitFor(t, "the relay to count both datagrams", func() bool {
				s := relay.Stats()
				return s.PacketsToPeers == 1 && s.PacketsFromPeers == 1
			})
			if s := relay.Stats(); s.Allocations != 1 || s.AllocationsTotal != 1 || s.CredentialsIssued != 1 {
				t.Errorf("stats %+v", s)
			}
			a.relayed.Close() // deallocates (Refresh with lifetime 0)
			a.relayed = nil
			waitFor(t, "the allocation to go", func() bool { return relay.Stats().Allocations == 0 })
		})
	}
}

// TestRelayRefused: what the relay must not allow, and the errors the
// member sees.
func TestRelayRefused(t *testing.T) {
	t.Run("unauthorized", func(t *testing.T) {
		rc, relay := relayNode(t, func(c *RelayConfig) { c.Authorize = func(Peer) bool { return false } })
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := listen(t).RelayCredentials(ctx, peerOf(rc))
		if !errors.Is(err, ErrRelayUnauthorized) {
			t.Fatalf("got %v, want ErrRelayUnauthorized", err)
		}
		t.Logf("error: %v", err)
		if s := relay.Stats(); s.CredentialsRefused != 1 || s.CredentialsIssued != 0 {
			t.Errorf("stats %+v", s)
		}
	})

	t.Run("authorize-sees-authenticated-key", func(t *testing.T) {
		member := listen(t)
		var seen atomic.Pointer[Peer]
		rc, _ := relayNode(t, func(c *RelayConfig) {
			c.Authorize = func(p Peer) bool { seen.Store(&p); return p.Key == member.PublicKey() }
		})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := member.RelayCredentials(ctx, peerOf(rc)); err != nil {
			t.Fatal(err)
		}
		if p := seen.Load(); p == nil || p.Addr != member.LocalAddr() {
			t.Errorf("Authorize saw %v, want the member at %v", p, member.LocalAddr())
		}
		if _, err := listen(t).RelayCredentials(ctx, peerOf(rc)); !errors.Is(err, ErrRelayUnauthorized) {
			t.Errorf("another node: got %v, want ErrRelayUnauthorized", err)
		}
	})

	t.Run("expired", func(t *testing.T) {
		var now atomic.Int64
		now.Store(time.Now().UnixNano())
		rc, relay := relayNode(t, func(c *RelayConfig) {
			c.CredentialTTL = time.Minute
			c.Now = func() time.Time { return time.Unix(0, now.Load()) }
		})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		creds, err := listen(t).RelayCredentials(ctx, peerOf(rc))
		if err != nil {
			t.Fatal(err)
		}
		now.Add(int64(time.Minute + time.Second))
		_, err = allocate(t, creds.Addr, creds.Username, creds.Password, "udp")
		if turnErrorCode(err) != stun.CodeBadRequest {
			t.Fatalf("allocate with expired credentials: got %v, want a 400 error", err)
		}
		t.Logf("error: %v", err)
		if s := relay.Stats(); s.AuthFailures == 0 || s.Allocations != 0 {
			t.Errorf("stats %+v", s)
		}
	})

	forged := []struct {
		name       string
		user, pass func(RelayCreds) string
	}{
		{"forged-password", func(c RelayCreds) string { return c.Username }, func(c RelayCreds) string { return c.Password[:10] + "AAAA" + c.Password[14:] }},
		{"other-relays-password", func(c RelayCreds) string { return c.Username }, func(c RelayCreds) string {
			return otherRelayPassword(c)
		}},
		{"later-expiry", func(c RelayCreds) string {
			exp, id, _ := parseRelayUsername(c.Username)
			return itoa64(exp+3600) + ":" + id
		}, func(c RelayCreds) string { return c.Password }},
		{"other-node", func(c RelayCreds) string {
			exp, id, _ := parseRelayUsername(c.Username)
			return itoa64(exp) + ":" + strings.Repeat("0", len(id))
		}, func(c RelayCreds) string { return c.Password }},
		{"malformed-username", func(c RelayCreds) string { return "weft" }, func(c RelayCreds) string { return c.Password }},
	}
	for _, tt := range forged {
		t.Run(tt.name, func(t *testing.T) {
			relay := newTestRelay(t)
			creds, err := relay.Credentials(newKey(t))
			if err != nil {
				t.Fatal(err)
			}
			_, err = allocate(t, creds.Addr, tt.user(creds), tt.pass(creds), "udp")
			if turnErrorCode(err) != stun.CodeBadRequest {
				t.Fatalf("got %v, want a 400 error", err)
			}
			if s := relay.Stats(); s.AuthFailures == 0 || s.Allocations != 0 {
				t.Errorf("stats %+v", s)
			}
		})
	}

	t.Run("user-quota", func(t *testing.T) {
		relay := newTestRelay(t, func(c *RelayConfig) { c.MaxUserAllocations = 2 })
		key := newKey(t)
		creds, _ := relay.Credentials(key)
		for i := range 2 {
			if _, err := allocate(t, creds.Addr, creds.Username, creds.Password, "udp"); err != nil {
				t.Fatalf("allocation %d: %v", i, err)
			}
		}
		// A fresh credential of the same node counts against the same quota.
		again, _ := relay.Credentials(key)
		_, err := allocate(t, again.Addr, again.Username, again.Password, "tcp")
		if turnErrorCode(err) != stun.CodeAllocQuotaReached {
			t.Fatalf("third allocation: got %v, want 486 Allocation Quota Reached", err)
		}
		other, _ := relay.Credentials(newKey(t))
		if _, err := allocate(t, other.Addr, other.Username, other.Password, "udp"); err != nil {
			t.Fatalf("another node: %v", err)
		}
		if s := relay.Stats(); s.Allocations != 3 || s.QuotaRefused != 1 {
			t.Errorf("stats %+v", s)
		}
	})

	t.Run("total-quota", func(t *testing.T) {
		relay := newTestRelay(t, func(c *RelayConfig) { c.MaxAllocations = 2 })
		for i := range 3 {
			creds, _ := relay.Credentials(newKey(t))
			_, err := allocate(t, creds.Addr, creds.Username, creds.Password, "udp")
			switch {
			case i < 2 && err != nil:
				t.Fatalf("allocation %d: %v", i, err)
			case i == 2 && turnErrorCode(err) != stun.CodeInsufficientCapacity:
				t.Fatalf("allocation %d: got %v, want 508 Insufficient Capacity", i, err)
			}
		}
		if s := relay.Stats(); s.Allocations != 2 || s.QuotaRefused != 1 {
			t.Errorf("stats %+v", s)
		}
	})

	t.Run("loopback-peer", func(t *testing.T) {
		relay := newTestRelay(t, func(c *RelayConfig) { c.AllowPeer = nil })
		creds, _ := relay.Credentials(newKey(t))
		a, err := allocate(t, creds.Addr, creds.Username, creds.Password, "udp")
		if err != nil {
			t.Fatal(err)
		}
		_, err = a.relayed.WriteTo([]byte("x"), net.UDPAddrFromAddrPort(relay.LocalAddr()))
		if turnErrorCode(err) != stun.CodeForbidden {
			t.Fatalf("relaying to loopback: got %v, want 403 Forbidden", err)
		}
		if s := relay.Stats(); s.PermissionsRefused == 0 {
			t.Errorf("stats %+v", s)
		}
	})

	t.Run("closed", func(t *testing.T) {
		rc, relay := relayNode(t)
		relay.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := listen(t).RelayCredentials(ctx, peerOf(rc))
		var re *RemoteError
		if !errors.As(err, &re) || !strings.Contains(re.Msg, "relay closed") {
			t.Fatalf("got %v, want a remote error saying the relay is closed", err)
		}
		if _, err := relay.Credentials(newKey(t)); !errors.Is(err, ErrRelayClosed) {
			t.Fatalf("Credentials after Close: %v", err)
		}
	})
}

// otherRelayPassword returns the password another relay (another secret)
// gives c's username.
func otherRelayPassword(c RelayCreds) string {
	r := &Relay{secret: bytes.Repeat([]byte{7}, 32)}
	return r.password(c.Username)
}

// TestRelayBandwidth: a per-node cap drops what exceeds it.
func TestRelayBandwidth(t *testing.T) {
	relay := newTestRelay(t, func(c *RelayConfig) { c.MaxUserBandwidth = 100 << 10 })
	creds, _ := relay.Credentials(newKey(t))
	a, err := allocate(t, creds.Addr, creds.Username, creds.Password, "udp")
	if err != nil {
		t.Fatal(err)
	}
	peer, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	pkt := make([]byte, 1000)
	for range 200 { // 200 kB at once: the 64 KiB burst passes, the rest is dropped
		if _, err := a.relayed.WriteTo(pkt, peer.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	// Some may be lost on the way to the relay: wait until the counts
	// settle.
	var s RelayStats
	for last := -1; ; {
		time.Sleep(50 * time.Millisecond)
		s = relay.Stats()
		n := int(s.PacketsToPeers + s.BandwidthDropped)
		if n == last {
			break
		}
		last = n
	}
	if s.PacketsToPeers < 60 || s.PacketsToPeers > 80 || s.BandwidthDropped < 60 {
		t.Errorf("relayed %d, dropped %d of 200 1000-byte packets; want about 65 relayed", s.PacketsToPeers, s.BandwidthDropped)
	}
}

// TestNewRelayConfig: configurations NewRelay refuses, with errors that say
// what to fix.
func TestNewRelayConfig(t *testing.T) {
	ok := func(Peer) bool { return true }
	tests := []struct {
		name string
		cfg  RelayConfig
		want string
	}{
		{"no-authorize", RelayConfig{Listen: netip.MustParseAddrPort("127.0.0.1:0")}, "Authorize is nil"},
		{"wildcard-no-public", RelayConfig{Listen: netip.MustParseAddrPort("0.0.0.0:0"), Authorize: ok}, "set RelayConfig.PublicIP"},
		{"zero-listen-no-public", RelayConfig{Authorize: ok}, "set RelayConfig.PublicIP"},
		{"families", RelayConfig{Listen: netip.MustParseAddrPort("127.0.0.1:0"), PublicIP: netip.MustParseAddr("2001:db8::1"), Authorize: ok}, "different address families"},
		{"short-secret", RelayConfig{Listen: netip.MustParseAddrPort("127.0.0.1:0"), Secret: []byte("short"), Authorize: ok}, "at least 16"},
		{"long-ttl", RelayConfig{Listen: netip.MustParseAddrPort("127.0.0.1:0"), CredentialTTL: 30 * 24 * time.Hour, Authorize: ok}, "out of range"},
		{"multicast-public", RelayConfig{Listen: netip.MustParseAddrPort("0.0.0.0:0"), PublicIP: netip.MustParseAddr("224.0.0.1"), Authorize: ok}, "not a unicast"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := NewRelay(tt.cfg)
			if err == nil {
				r.Close()
				t.Fatalf("NewRelay succeeded, want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want one containing %q", err, tt.want)
			}
		})
	}
	// A wildcard listener with a public address works, and so does UDP only.
	r, err := NewRelay(RelayConfig{Listen: netip.MustParseAddrPort("0.0.0.0:0"), PublicIP: netip.MustParseAddr("192.0.2.1"), UDPOnly: true, Authorize: ok})
	if err != nil {
		t.Fatal(err)
	}
	creds, _ := r.Credentials(newKey(t))
	if creds.TCPURL != "" || !strings.HasPrefix(creds.URL, "turn:192.0.2.1:") {
		t.Errorf("credentials %+v", creds)
	}
	if err := r.Close(); err != nil {
		t.Error(err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestRelaySharedSecret: relays configured with one secret and realm accept
// each other's credentials.
func TestRelaySharedSecret(t *testing.T) {
	secret := bytes.Repeat([]byte{1}, 32)
	r1 := newTestRelay(t, func(c *RelayConfig) { c.Secret = secret })
	r2 := newTestRelay(t, func(c *RelayConfig) { c.Secret = secret })
	creds, _ := r1.Credentials(newKey(t))
	if _, err := allocate(t, r2.Addr(), creds.Username, creds.Password, "udp"); err != nil {
		t.Fatal(err)
	}
}

// TestRelayCloseWithClients: Close ends allocations and TCP connections
// (goleak, in TestMain, checks that nothing is left running).
func TestRelayCloseWithClients(t *testing.T) {
	relay := newTestRelay(t)
	for _, tr := range []string{"udp", "tcp"} {
		creds, _ := relay.Credentials(newKey(t))
		if _, err := allocate(t, creds.Addr, creds.Username, creds.Password, tr); err != nil {
			t.Fatal(err)
		}
	}
	if n := relay.Stats().Allocations; n != 2 {
		t.Fatalf("%d allocations, want 2", n)
	}
	if err := relay.Close(); err != nil {
		t.Fatal(err)
	}
	if n := relay.Stats().Allocations; n != 0 {
		t.Errorf("%d allocations after Close", n)
	}
}

func TestRelayCredsMessage(t *testing.T) {
	ok := relayCredsResponse{status: relayCredsOK, ttl: 3600, udpPort: 3478, tcpPort: 3478,
		host: netip.MustParseAddr("203.0.113.1"), user: "1700000000:00112233445566778899aabbccddeeff", pass: "secret"}
	for _, r := range []relayCredsResponse{ok, {status: relayCredsUnauthorized}} {
		got, err := parseRelayCredsResponse(r.marshal())
		if err != nil || got != r {
			t.Errorf("round trip of %+v: %+v, %v", r, got, err)
		}
	}
	bad := map[string][]byte{
		"empty":        nil,
		"version":      {2, 0},
		"status":       {1, 9},
		"refusal-tail": {1, 1, 0},
		"truncated":    ok.marshal()[:12],
		"tail":         append(ok.marshal(), 0),
	}
	for name, b := range bad {
		if _, err := parseRelayCredsResponse(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", name, err)
		}
	}
	if err := parseRelayCredsRequest(marshalRelayCredsRequest()); err != nil {
		t.Error(err)
	}
	for _, b := range [][]byte{nil, {2}, {1, 0}} {
		if err := parseRelayCredsRequest(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("request %x: got %v, want ErrMalformed", b, err)
		}
	}
}

func FuzzRelayCredsResponse(f *testing.F) {
	f.Add((&relayCredsResponse{status: relayCredsOK, ttl: 60, udpPort: 1, host: netip.MustParseAddr("::1"), user: "u", pass: "p"}).marshal())
	f.Add((&relayCredsResponse{status: relayCredsUnauthorized}).marshal())
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseRelayCredsResponse(b)
		if err != nil {
			return
		}
		if out := r.marshal(); !bytes.Equal(out, b) {
			t.Fatalf("re-encoding %x gives %x", b, out)
		}
	})
}

func FuzzRelayCredsRequest(f *testing.F) {
	f.Add(marshalRelayCredsRequest())
	f.Fuzz(func(t *testing.T, b []byte) {
		if parseRelayCredsRequest(b) == nil && !bytes.Equal(b, marshalRelayCredsRequest()) {
			t.Fatalf("accepted %x", b)
		}
	})
}

func FuzzRelayUsername(f *testing.F) {
	f.Add("1700000000:00112233445566778899aabbccddeeff")
	f.Add("0:00")
	f.Add("+1:00112233445566778899aabbccddeeff")
	f.Fuzz(func(t *testing.T, s string) {
		exp, id, ok := parseRelayUsername(s)
		if ok && itoa64(exp)+":"+id != s {
			t.Fatalf("%q parsed as %d, %q", s, exp, id)
		}
	})
}

func itoa(p uint16) string      { return strconv.Itoa(int(p)) }
func itoa64(n int64) string     { return strconv.FormatInt(n, 10) }
func hexString(b []byte) string { return hex.EncodeToString(b) }

// BenchmarkRelayThroughput sends WireGuard-sized datagrams one way over
// loopback, directly between two sockets and through the relay (a pion/turn
// client's allocation to a plain socket, the client reaching the relay
// over UDP or TCP). The sender keeps at most 256 datagrams in flight, so
// the rate is what the path sustains rather than what the kernel drops.
// It reports the received rate (Mbit/s) and the share lost (loss%).
func BenchmarkRelayThroughput(b *testing.B) {
	const size = 1420 + 32
	newPeer := func(b *testing.B) *net.UDPConn {
		peer, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
		if err != nil {
			b.Fatal(err)
		}
		peer.SetReadBuffer(socketBufferSize)
		b.Cleanup(func() { peer.Close() })
		return peer
	}
	b.Run("direct", func(b *testing.B) {
		peer := newPeer(b)
		src, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
		if err != nil {
			b.Fatal(err)
		}
		defer src.Close()
		dst := peer.LocalAddr()
		pumpDatagrams(b, size, peer, func(p []byte) error { _, err := src.WriteTo(p, dst); return err })
	})
	for _, transport := range []string{"udp", "tcp"} {
		b.Run("relay-"+transport, func(b *testing.B) {
			relay := newTestRelay(b)
			creds, _ := relay.Credentials(newKey(b))
			a, err := allocate(b, creds.Addr, creds.Username, creds.Password, transport)
			if err != nil {
				b.Fatal(err)
			}
			peer := newPeer(b)
			dst := peer.LocalAddr()
			pumpDatagrams(b, size, peer, func(p []byte) error { _, err := a.relayed.WriteTo(p, dst); return err })
		})
	}
}

// pumpDatagrams sends b.N datagrams of size bytes with send, at most 256
// unreceived at a time (a window that waits 20 ms at most for the receiver
// before counting the rest as lost), and reports what rx received.
func pumpDatagrams(b *testing.B, size int, rx net.PacketConn, send func([]byte) error) {
	const window = 256
	var received atomic.Int64
	progress := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			if _, _, err := rx.ReadFrom(buf); err != nil {
				return
			}
			received.Add(1)
			select {
			case progress <- struct{}{}:
			default:
			}
		}
	}()
	pkt := make([]byte, size)
	b.SetBytes(int64(size))
	b.ResetTimer()
	start := time.Now()
	var written int64
	for range b.N {
		for written-received.Load() >= window {
			select {
			case <-progress:
			case <-time.After(20 * time.Millisecond):
				written = received.Load() // the rest of the window is lost
			}
		}
		if err := send(pkt); err != nil {
			b.Fatal(err)
		}
		written++
	}
	for last := int64(-1); ; {
		n := received.Load()
		if n == written || n == last {
			break
		}
		last = n
		time.Sleep(20 * time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	got := received.Load()
	b.ReportMetric(float64(got)*float64(size)*8/elapsed.Seconds()/1e6, "Mbit/s")
	b.ReportMetric(100*float64(int64(b.N)-got)/float64(b.N), "loss%")
	rx.SetReadDeadline(time.Now())
	<-done
}
