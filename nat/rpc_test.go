package nat

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond until it holds or a few seconds pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestCallResponse(t *testing.T) {
	a, b := listen(t), listen(t)
	var gotFrom atomic.Pointer[Peer]
	b.Handle(MsgFindValue, func(ctx context.Context, from Peer, body []byte) ([]byte, error) {
		gotFrom.Store(&from)
		return append([]byte("value of "), body...), nil
	})
	b.Handle(MsgStore, func(ctx context.Context, from Peer, body []byte) ([]byte, error) {
		return nil, errors.New("stale sequence")
	})

	tests := []struct {
		name    string
		typ     MsgType
		body    []byte
		want    []byte
		wantErr string // RemoteError message
	}{
		{"response", MsgFindValue, []byte("k"), []byte("value of k"), ""},
		{"empty body", MsgFindValue, nil, []byte("value of "), ""},
		{"handler error", MsgStore, []byte("x"), nil, "stale sequence"},
		{"unknown type", MsgType(200), nil, nil, "no handler for message type MsgType(200)"},
		{"no handler", MsgPing, nil, nil, "no handler for message type PING"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := a.Call(ctxT(t, 5*time.Second), peerOf(b), tt.typ, tt.body)
			if tt.wantErr != "" {
				var re *RemoteError
				if !errors.As(err, &re) || re.Msg != tt.wantErr {
					t.Fatalf("err = %v, want RemoteError %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
	from := gotFrom.Load()
	if from == nil || from.Key != a.PublicKey() || from.Addr != a.LocalAddr() {
		t.Errorf("handler saw from=%v, want %v", from, peerOf(a))
	}
	if s := b.Stats(); s.ControlUnknownType != 2 {
		t.Errorf("ControlUnknownType = %d, want 2", s.ControlUnknownType)
	}
}

func TestCallWrongKeyTimesOut(t *testing.T) {
	a, b := listen(t), listen(t)
	b.Handle(MsgPing, func(context.Context, Peer, []byte) ([]byte, error) { return nil, nil })
	wrong := peerOf(b)
	wrong.Key[0] ^= 1 // b cannot open what is sealed to this key
	_, err := a.Call(ctxT(t, 700*time.Millisecond), wrong, MsgPing, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	if s := a.Stats(); s.Retransmits < 1 {
		t.Errorf("Retransmits = %d, want >= 1", s.Retransmits)
	}
	waitFor(t, "unsealable count", func() bool { return b.Stats().ControlUnsealable >= 2 })
	if s := b.Stats(); s.RequestsHandled != 0 {
		t.Errorf("RequestsHandled = %d, want 0", s.RequestsHandled)
	}
}

// sendRaw writes pkt to c from a fresh UDP socket.
func sendRaw(t *testing.T, c *Conn, pkt []byte) {
	t.Helper()
	u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if _, err := u.WriteToUDPAddrPort(pkt, c.LocalAddr()); err != nil {
		t.Fatal(err)
	}
}

func TestTamperedDropped(t *testing.T) {
	a, b := listen(t), listen(t)
	var calls atomic.Int32
	b.Handle(MsgPing, func(context.Context, Peer, []byte) ([]byte, error) { calls.Add(1); return nil, nil })
	bpub := b.PublicKey()
	shared, err := a.sharedKey(&bpub)
	if err != nil {
		t.Fatal(err)
	}
	good := a.buildPacket(&payload{typ: MsgPing, txid: 1, body: []byte("hello")}, shared, nil)
	tamper := []struct {
		name       string
		mutate     func([]byte)
		unsealable bool
	}{
		{"ciphertext", func(p []byte) { p[len(p)-1] ^= 1 }, true},
		{"tag", func(p []byte) { p[headerSize] ^= 1 }, true},
		{"nonce", func(p []byte) { p[40] ^= 1 }, true},
		{"sender key", func(p []byte) { p[6] ^= 1 }, true},
		{"truncated", nil, true},
		{"version", func(p []byte) { p[4] = 9 }, false},
		{"plain flag on sealed", func(p []byte) { p[5] = FlagPlain }, false},
	}
	var wantUnsealable, wantMalformed uint64
	for _, tt := range tamper {
		pkt := bytes.Clone(good)
		if tt.mutate == nil {
			pkt = pkt[:len(pkt)-3]
		} else {
			tt.mutate(pkt)
		}
		sendRaw(t, b, pkt)
		if tt.unsealable {
			wantUnsealable++
		} else {
			wantMalformed++
		}
	}
	waitFor(t, "drops counted", func() bool {
		s := b.Stats()
		return s.ControlUnsealable+s.ControlMalformed+s.ControlPlainRefused >= wantUnsealable+wantMalformed
	})
	s := b.Stats()
	if s.ControlUnsealable != wantUnsealable {
		t.Errorf("ControlUnsealable = %d, want %d", s.ControlUnsealable, wantUnsealable)
	}
	// The plain-flagged sealed packet parses as a plain payload of some
	// random type (refused) or fails to parse (malformed).
	if got := s.ControlMalformed + s.ControlPlainRefused; got != wantMalformed {
		t.Errorf("ControlMalformed+ControlPlainRefused = %d, want %d", got, wantMalformed)
	}
	if calls.Load() != 0 {
		t.Fatalf("handler ran %d times for tampered packets", calls.Load())
	}
	// The untampered packet still works.
	sendRaw(t, b, good)
	waitFor(t, "good packet handled", func() bool { return calls.Load() == 1 })
}

func TestPlainOnlyForHello(t *testing.T) {
	a, b := listen(t), listen(t)
	var stores atomic.Int32
	b.Handle(MsgStore, func(context.Context, Peer, []byte) ([]byte, error) { stores.Add(1); return nil, nil })
	b.Handle(MsgHello, func(ctx context.Context, from Peer, body []byte) ([]byte, error) {
		if from.Key != a.PublicKey() {
			return nil, errors.New("unexpected sender key")
		}
		return append([]byte("record:"), body...), nil
	})
	sendRaw(t, b, a.buildPacket(&payload{typ: MsgStore, txid: 1}, nil, nil))
	waitFor(t, "plain store refused", func() bool { return b.Stats().ControlPlainRefused == 1 })
	if stores.Load() != 0 {
		t.Fatal("plain STORE reached its handler")
	}

	body, peer, err := a.CallHello(ctxT(t, 5*time.Second), b.LocalAddr(), []byte("hi"))
	if err != nil {
		t.Fatal(err)
	}
	if string(body) != "record:hi" {
		t.Fatalf("hello body = %q", body)
	}
	if peer != peerOf(b) {
		t.Fatalf("hello peer = %v, want %v", peer, peerOf(b))
	}
	// Hello also works sealed, once the key is known.
	if body, err = a.Call(ctxT(t, 5*time.Second), peer, MsgHello, []byte("x")); err != nil || string(body) != "record:x" {
		t.Fatalf("sealed hello = %q, %v", body, err)
	}
}

func TestRateLimit(t *testing.T) {
	now := time.Unix(1000, 0)
	var clock atomic.Pointer[time.Time]
	clock.Store(&now)
	a := listen(t)
	b := listen(t, func(c *Config) {
		c.RateLimit = 1
		c.RateBurst = 3
		c.Now = func() time.Time { return *clock.Load() }
	})
	b.Handle(MsgPing, func(context.Context, Peer, []byte) ([]byte, error) { return []byte("pong"), nil })
	// The clock stands still, so b hands out its burst and no more. (A
	// retransmission costs a token too, hence "at most".)
	ok := 0
	for range 10 {
		if _, err := a.Call(ctxT(t, 700*time.Millisecond), peerOf(b), MsgPing, nil); err != nil {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err = %v, want rate limited (deadline exceeded)", err)
			}
			break
		}
		ok++
	}
	if s := b.Stats(); ok == 0 || ok > 3 || s.ControlRateLimited == 0 || s.RequestsHandled > 3 {
		t.Fatalf("%d calls succeeded, ControlRateLimited = %d, RequestsHandled = %d; want 1..3, >0, <=3", ok, s.ControlRateLimited, s.RequestsHandled)
	}
	later := now.Add(10 * time.Second)
	clock.Store(&later)
	if _, err := a.Call(ctxT(t, 5*time.Second), peerOf(b), MsgPing, nil); err != nil {
		t.Fatalf("call after refill: %v", err)
	}
	// Responses are never rate-limited: b calling a works though b's own
	// limiter would refuse a.
	a.Handle(MsgPing, func(context.Context, Peer, []byte) ([]byte, error) { return nil, nil })
	for i := range 5 {
		if _, err := b.Call(ctxT(t, 5*time.Second), peerOf(a), MsgPing, nil); err != nil {
			t.Fatalf("reverse call %d: %v", i, err)
		}
	}
}

func TestCallErrors(t *testing.T) {
	a, b := listen(t), listen(t)
	if _, err := a.Call(ctxT(t, time.Second), peerOf(b), MsgPing, make([]byte, MaxBodySize+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized body: err = %v, want ErrTooLarge", err)
	}
	if _, err := a.Call(ctxT(t, time.Second), Peer{Addr: b.LocalAddr()}, MsgPing, nil); !errors.Is(err, ErrBadKey) {
		t.Errorf("zero key: err = %v, want ErrBadKey", err)
	}
	if _, err := Listen(Config{}); !errors.Is(err, ErrBadKey) {
		t.Errorf("Listen with zero key: err = %v, want ErrBadKey", err)
	}
}

func TestCloseFailsPendingCalls(t *testing.T) {
	a, b := listen(t), listen(t)
	block := make(chan struct{})
	b.Handle(MsgPing, func(ctx context.Context, _ Peer, _ []byte) ([]byte, error) {
		close(block)
		<-ctx.Done() // released by b.Close
		return nil, ctx.Err()
	})
	errc := make(chan error, 1)
	go func() {
		_, err := a.Call(context.Background(), peerOf(b), MsgPing, nil)
		errc <- err
	}()
	<-block
	if err := b.Close(); err != nil {
		t.Fatalf("b.Close: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("a.Close: %v", err)
	}
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("pending call err = %v, want ErrClosed", err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close = %v, want nil", err)
	}
	if _, err := a.Call(context.Background(), peerOf(b), MsgPing, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Call after Close = %v, want ErrClosed", err)
	}
}

func TestIPv6AndDualStack(t *testing.T) {
	six := listen(t, func(c *Config) { c.Addr = netip.MustParseAddrPort("[::1]:0") })
	dual := listen(t, func(c *Config) { c.Addr = netip.AddrPort{} })
	four := listen(t)
	dual.Handle(MsgPing, func(_ context.Context, from Peer, _ []byte) ([]byte, error) {
		return []byte(from.Addr.String()), nil
	})
	port := dual.LocalAddr().Port()
	for _, tc := range []struct {
		name string
		from *Conn
		to   netip.Addr
	}{
		{"v6 to dual", six, netip.IPv6Loopback()},
		{"v4 to dual", four, netip.MustParseAddr("127.0.0.1")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.from.Call(ctxT(t, 5*time.Second), Peer{Addr: netip.AddrPortFrom(tc.to, port), Key: dual.PublicKey()}, MsgPing, nil)
			if err != nil {
				t.Fatal(err)
			}
			if want := tc.from.LocalAddr().String(); string(got) != want {
				t.Fatalf("dual saw sender %s, want %s (unmapped)", got, want)
			}
		})
	}
}
