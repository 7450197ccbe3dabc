package nat

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// udpClient is a plain UDP socket on IPv4 loopback.
func udpClient(t *testing.T) *net.UDPConn {
	t.Helper()
	u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return u
}

// exchange sends req from u to the Conn and returns the response, or nil
// after wait.
func exchange(t *testing.T, u *net.UDPConn, c *Conn, req []byte, wait time.Duration) *stun.Message {
	t.Helper()
	if _, err := u.WriteToUDPAddrPort(req, c.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	u.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 1500)
	n, err := u.Read(buf)
	if err != nil {
		return nil
	}
	m := &stun.Message{Raw: buf[:n]}
	if err := m.Decode(); err != nil {
		t.Fatalf("response does not decode: %v", err)
	}
	return m
}

func mustBuild(t testing.TB, setters ...stun.Setter) []byte {
	t.Helper()
	m, err := stun.Build(setters...)
	if err != nil {
		t.Fatal(err)
	}
	return m.Raw
}

// TestSTUNResponderPionClient asks a Conn for its mapping with pion's own
// STUN client, as any third-party STUN client would.
func TestSTUNResponderPionClient(t *testing.T) {
	srv := listen(t)
	u := udpClient(t)
	conn, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(srv.LocalAddr()))
	if err != nil {
		t.Fatal(err)
	}
	u.Close()
	client, err := stun.NewClient(conn)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	var got stun.XORMappedAddress
	var soft stun.Software
	var evErr error
	err = client.Do(stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint), func(e stun.Event) {
		if evErr = e.Error; evErr != nil {
			return
		}
		if err := stun.Fingerprint.Check(e.Message); err != nil {
			evErr = err
			return
		}
		if err := got.GetFrom(e.Message); err != nil {
			evErr = err
			return
		}
		if err := soft.GetFrom(e.Message); err != nil {
			evErr = err
		}
	})
	if err != nil || evErr != nil {
		t.Fatalf("pion client Do: %v, event: %v", err, evErr)
	}
	want := conn.LocalAddr().(*net.UDPAddr)
	if !got.IP.Equal(want.IP) || got.Port != want.Port {
		t.Errorf("XOR-MAPPED-ADDRESS = %v, want %v", got, want)
	}
	if soft.String() != "weft" {
		t.Errorf("SOFTWARE = %q, want weft", soft)
	}
	// The responder counts an answer after sending it: the client may
	// have it first.
	for deadline := time.Now().Add(2 * time.Second); srv.Stats().STUNAnswered != 1 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if s := srv.Stats(); s.STUNAnswered != 1 || s.STUNIn != 1 {
		t.Errorf("stats: answered %d, in %d; want 1, 1", s.STUNAnswered, s.STUNIn)
	}
}

func TestSTUNBinding(t *testing.T) {
	a, b := listen(t), listen(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := a.STUNBinding(ctx, b.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	if got != a.LocalAddr() {
		t.Errorf("mapped %v, want %v", got, a.LocalAddr())
	}
	if s := a.Stats(); s.STUNResponsesIn != 1 || s.STUNOut < 1 {
		t.Errorf("client stats %+v", s)
	}
	if s := b.Stats(); s.STUNAnswered != 1 {
		t.Errorf("server answered %d, want 1", s.STUNAnswered)
	}
}

// TestSTUNBindingNoReply: a silent server gives a clear error.
func TestSTUNBindingNoReply(t *testing.T) {
	a := listen(t)
	silent := udpClient(t) // never answers
	ctx, cancel := context.WithTimeout(context.Background(), 1200*time.Millisecond)
	defer cancel()
	_, err := a.STUNBinding(ctx, silent.LocalAddr().(*net.UDPAddr).AddrPort())
	if !errors.Is(err, ErrNoSTUNReply) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrNoSTUNReply and DeadlineExceeded", err)
	}
	if !strings.Contains(err.Error(), "UDP may be blocked outbound") || !strings.Contains(err.Error(), "within 1.2") {
		t.Errorf("error %q does not explain", err)
	}
	if s := a.Stats(); s.STUNRetransmits != 1 || s.STUNOut != 2 {
		t.Errorf("retransmits %d, out %d; want 1, 2 (500 ms, then 1 s)", s.STUNRetransmits, s.STUNOut)
	}
}

// TestSTUNBindingWrongSource: a response with our transaction ID from
// another address is not taken.
func TestSTUNBindingWrongSource(t *testing.T) {
	a := listen(t)
	server, forger := udpClient(t), udpClient(t)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		got, err := a.STUNBinding(ctx, server.LocalAddr().(*net.UDPAddr).AddrPort())
		if err == nil && got != netip.MustParseAddrPort("192.0.2.7:9") {
			err = errors.New("wrong mapping " + got.String())
		}
		done <- err
	}()
	buf := make([]byte, 1500)
	server.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, from, err := server.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatal(err)
	}
	req := &stun.Message{Raw: buf[:n]}
	if err := req.Decode(); err != nil {
		t.Fatal(err)
	}
	forged, _ := bindingSuccess(req.TransactionID, netip.MustParseAddrPort("198.51.100.1:1"))
	forger.WriteToUDPAddrPort(forged, from)
	time.Sleep(50 * time.Millisecond)
	real, _ := bindingSuccess(req.TransactionID, netip.MustParseAddrPort("192.0.2.7:9"))
	server.WriteToUDPAddrPort(real, from)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if s := a.Stats(); s.STUNUnmatched != 1 {
		t.Errorf("unmatched %d, want 1 (the forged response)", s.STUNUnmatched)
	}
}

func TestSTUNBindingErrorResponse(t *testing.T) {
	a := listen(t)
	server := udpClient(t)
	go func() {
		buf := make([]byte, 1500)
		server.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, from, err := server.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		req := &stun.Message{Raw: buf[:n]}
		if req.Decode() != nil {
			return
		}
		resp, _ := buildSTUN(req.TransactionID, stun.BindingError, stun.ErrorCodeAttribute{Code: stun.CodeServerError, Reason: []byte("busy")})
		server.WriteToUDPAddrPort(resp, from)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err := a.STUNBinding(ctx, server.LocalAddr().(*net.UDPAddr).AddrPort())
	var se *STUNError
	if !errors.As(err, &se) || se.Code != 500 || se.Reason != "busy" {
		t.Fatalf("err = %v, want STUN error 500 busy", err)
	}
}

// TestSTUNResponderRefuses: what the plain responder must not answer, or
// answers with an error.
func TestSTUNResponderRefuses(t *testing.T) {
	id := stun.NewTransactionID()
	tid := stun.NewTransactionIDSetter(id)
	badFP := mustBuild(t, tid, stun.BindingRequest, stun.Fingerprint)
	badFP[len(badFP)-1] ^= 1
	tests := []struct {
		name     string
		req      []byte
		wantCode int // 0: no answer; 200: success
		stat     func(Stats) uint64
	}{
		{"plain", mustBuild(t, tid, stun.BindingRequest), 200, func(s Stats) uint64 { return s.STUNAnswered }},
		{"fingerprint", mustBuild(t, tid, stun.BindingRequest, stun.NewSoftware("x"), stun.Fingerprint), 200, func(s Stats) uint64 { return s.STUNAnswered }},
		{"bad fingerprint", badFP, 0, func(s Stats) uint64 { return s.STUNMalformed }},
		{"ice controlling", mustBuild(t, tid, stun.BindingRequest, stun.NewUsername("a:b"), stun.Fingerprint), 0, func(s Stats) uint64 { return s.STUNDropped }},
		{"ice check", mustBuild(t, tid, stun.BindingRequest, stun.NewUsername("a:b"), stun.NewShortTermIntegrity("pw"), stun.Fingerprint), 0, func(s Stats) uint64 { return s.STUNDropped }},
		{"priority only", mustBuild(t, tid, stun.BindingRequest, stun.RawAttribute{Type: stun.AttrPriority, Value: []byte{0, 0, 0, 1}}), 0, func(s Stats) uint64 { return s.STUNDropped }},
		{"change-request", mustBuild(t, tid, stun.BindingRequest, stun.RawAttribute{Type: 0x0003, Value: []byte{0, 0, 0, 6}}), 420, func(s Stats) uint64 { return s.STUNAnswered }},
		{"indication", mustBuild(t, tid, stun.NewType(stun.MethodBinding, stun.ClassIndication)), 0, func(s Stats) uint64 { return s.STUNDropped }},
		{"allocate", mustBuild(t, tid, stun.NewType(stun.MethodAllocate, stun.ClassRequest)), 0, func(s Stats) uint64 { return s.STUNDropped }},
		{"unmatched response", mustBuild(t, tid, stun.BindingSuccess), 0, func(s Stats) uint64 { return s.STUNUnmatched }},
		{"trailing bytes", append(mustBuild(t, tid, stun.BindingRequest), 0, 0, 0, 0), 0, func(s Stats) uint64 { return s.STUNMalformed }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := listen(t)
			u := udpClient(t)
			wait := 300 * time.Millisecond
			if tt.wantCode != 0 {
				wait = 3 * time.Second
			}
			m := exchange(t, u, c, tt.req, wait)
			switch {
			case tt.wantCode == 0 && m != nil:
				t.Fatalf("answered with %v", m)
			case tt.wantCode == 200 && (m == nil || m.Type != stun.BindingSuccess):
				t.Fatalf("got %v, want a Binding success", m)
			case tt.wantCode == 420:
				var ec stun.ErrorCodeAttribute
				var ua stun.UnknownAttributes
				if m == nil || ec.GetFrom(m) != nil || ec.Code != 420 || ua.GetFrom(m) != nil || len(ua) != 1 || ua[0] != 0x0003 {
					t.Fatalf("got %v, want 420 naming 0x0003", m)
				}
			}
			if m != nil && m.TransactionID != id {
				t.Errorf("response transaction ID %x, want %x", m.TransactionID, id)
			}
			deadline := time.Now().Add(2 * time.Second)
			for tt.stat(c.Stats()) != 1 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if got := tt.stat(c.Stats()); got != 1 {
				t.Errorf("counter = %d, want 1; stats %+v", got, c.Stats())
			}
		})
	}
}

// TestSTUNHandler: the handler sees requests first; what it leaves goes
// to the responder, and responses to our own transactions never reach it.
func TestSTUNHandler(t *testing.T) {
	c := listen(t)
	srv := listen(t)
	var seen atomic.Int32
	c.SetSTUNHandler(func(pkt []byte, from netip.AddrPort) bool {
		seen.Add(1)
		m := &stun.Message{Raw: pkt}
		if m.Decode() != nil {
			return false
		}
		if !m.Contains(stun.AttrUsername) {
			return false // not an ICE check: leave it to the responder
		}
		// An ICE agent would check integrity and answer; here: echo.
		resp, _ := bindingSuccess(m.TransactionID, from)
		c.SendSTUN(resp, from)
		return true
	})
	u := udpClient(t)
	tid := stun.NewTransactionIDSetter(stun.NewTransactionID())
	if m := exchange(t, u, c, mustBuild(t, tid, stun.BindingRequest, stun.NewUsername("a:b")), 3*time.Second); m == nil || m.Type != stun.BindingSuccess {
		t.Fatalf("ICE check: got %v, want the handler's success", m)
	}
	if m := exchange(t, u, c, mustBuild(t, tid, stun.BindingRequest), 3*time.Second); m == nil || m.Type != stun.BindingSuccess {
		t.Fatalf("plain request: got %v, want the responder's success", m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := c.STUNBinding(ctx, srv.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if n := seen.Load(); n != 2 {
		t.Errorf("handler saw %d packets, want 2 (not our own transaction's response)", n)
	}
	s := c.Stats()
	if s.STUNClaimed != 1 || s.STUNAnswered != 1 || s.STUNResponsesIn != 1 {
		t.Errorf("claimed %d answered %d responses %d, want 1 each", s.STUNClaimed, s.STUNAnswered, s.STUNResponsesIn)
	}
	if err := c.SendSTUN([]byte("not stun at all, no"), srv.LocalAddr()); !errors.Is(err, ErrNotSTUN) {
		t.Errorf("SendSTUN(garbage) = %v, want ErrNotSTUN", err)
	}
	c.SetSTUNHandler(nil)
	if m := exchange(t, u, c, mustBuild(t, tid, stun.BindingRequest, stun.NewUsername("a:b")), 300*time.Millisecond); m != nil {
		t.Errorf("ICE check answered without a handler: %v", m)
	}
}

func TestSTUNRateLimit(t *testing.T) {
	c := listen(t, func(cfg *Config) { cfg.STUNRateLimit, cfg.STUNRateBurst = 0.001, 3 })
	u := udpClient(t)
	answered := 0
	for range 5 {
		req := mustBuild(t, stun.TransactionID, stun.BindingRequest)
		if m := exchange(t, u, c, req, 300*time.Millisecond); m != nil {
			answered++
		}
	}
	if answered != 3 {
		t.Errorf("answered %d of 5, want the burst of 3", answered)
	}
	if s := c.Stats(); s.STUNRateLimited != 2 {
		t.Errorf("rate limited %d, want 2", s.STUNRateLimited)
	}
}

func TestParseSTUNHeader(t *testing.T) {
	good := mustBuild(t, stun.TransactionID, stun.BindingRequest, stun.NewSoftware("abc"))
	tests := []struct {
		name string
		b    []byte
		ok   bool
	}{
		{"good", good, true},
		{"short", good[:19], false},
		{"truncated", good[:len(good)-4], false},
		{"trailing", append(append([]byte{}, good...), 0, 0, 0, 0), false},
		{"top bits", append([]byte{0x80}, good[1:]...), false},
		{"cookie", append(append([]byte{}, good[:4]...), append([]byte{0, 0, 0, 0}, good[8:]...)...), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, ok := parseSTUNHeader(tt.b); ok != tt.ok {
				t.Errorf("ok = %v, want %v", ok, tt.ok)
			}
		})
	}
}

// FuzzSTUNDecode: the header check, the decoder with its fingerprint
// check, and the Binding response parser never panic, and a success they
// accept re-encodes to the same mapped address.
func FuzzSTUNDecode(f *testing.F) {
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint).Raw)
	ok, _ := bindingSuccess(stun.NewTransactionID(), netip.MustParseAddrPort("203.0.113.5:41641"))
	f.Add(ok)
	ok6, _ := bindingSuccess(stun.NewTransactionID(), netip.MustParseAddrPort("[2001:db8::1]:1"))
	f.Add(ok6)
	e, _ := buildSTUN(stun.NewTransactionID(), stun.BindingError, stun.ErrorCodeAttribute{Code: 420})
	f.Add(e)
	f.Fuzz(func(t *testing.T, b []byte) {
		h, ok := parseSTUNHeader(b)
		if !ok {
			return
		}
		m, err := decodeSTUN(b)
		if err != nil {
			return
		}
		if m.TransactionID != h.txid {
			t.Fatalf("transaction ID %x, header %x", m.TransactionID, h.txid)
		}
		hasICEAttrs(m)
		mapped, err := parseBindingResponse(b)
		if err != nil {
			return
		}
		again, err := bindingSuccess(h.txid, mapped)
		if err != nil {
			t.Fatalf("re-encoding %v: %v", mapped, err)
		}
		if got, err := parseBindingResponse(again); err != nil || got != mapped {
			t.Fatalf("round trip %v -> %v, %v", mapped, got, err)
		}
	})
}

// FuzzHandleSTUN drives a live Conn's STUN path with arbitrary datagrams.
func FuzzHandleSTUN(f *testing.F) {
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint).Raw)
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewUsername("x"), stun.Fingerprint).Raw)
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingSuccess).Raw)
	c := listen(f)
	from := netip.MustParseAddrPort("127.0.0.1:9") // discard port
	f.Fuzz(func(t *testing.T, b []byte) {
		c.handleSTUN(b, from)
	})
}
