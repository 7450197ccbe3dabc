package ice

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pion "github.com/pion/ice/v4"
	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"

	"github.com/weft-net/weft/nat/internal/pionlog"
)

// testLogger logs to stderr with -v and WEFT_ICE_DEBUG=1, else nowhere.
func testLogger() *slog.Logger {
	if os.Getenv("WEFT_ICE_DEBUG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug - 4}))
}

// node is one test node: a real UDP socket on 127.0.0.1, a demux loop
// that hands STUN to the Mux and everything else to a "WireGuard" channel,
// as nat.Conn will.
type node struct {
	udp  *net.UDPConn
	addr netip.AddrPort
	mux  *Mux
	wg   chan []byte // non-STUN datagrams ("WireGuard")

	stunClaimed  atomic.Int64 // STUN packets Deliver took
	stunDeclined atomic.Int64 // STUN packets Deliver left to us
	wgDropped    atomic.Int64
	done         chan struct{}
}

// looksLikeSTUN is the demux test the socket owner uses: magic cookie at
// bytes 4..8 and the first two bits zero.
func looksLikeSTUN(b []byte) bool {
	return len(b) >= 20 && b[0]&0xC0 == 0 && binary.BigEndian.Uint32(b[4:8]) == 0x2112A442
}

func newNode(t *testing.T, mod ...func(*Config)) *node {
	t.Helper()
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	n := &node{
		udp:  udp,
		addr: udp.LocalAddr().(*net.UDPAddr).AddrPort(),
		wg:   make(chan []byte, 8192),
		done: make(chan struct{}),
	}
	cfg := Config{
		Send: func(b []byte, to netip.AddrPort) error {
			_, err := udp.WriteToUDPAddrPort(b, to)
			return err
		},
		LocalAddr: n.addr,
		Logger:    testLogger(),
	}
	for _, f := range mod {
		f(&cfg)
	}
	n.mux, err = NewMux(cfg)
	if err != nil {
		udp.Close()
		t.Fatal(err)
	}
	go n.readLoop()
	t.Cleanup(func() {
		n.mux.Close()
		udp.Close()
		<-n.done
	})
	return n
}

func (n *node) readLoop() {
	defer close(n.done)
	buf := make([]byte, 65536)
	for {
		k, from, err := n.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		pkt := buf[:k]
		if looksLikeSTUN(pkt) {
			if n.mux.Deliver(pkt, from) {
				n.stunClaimed.Add(1)
			} else {
				n.stunDeclined.Add(1)
			}
			continue
		}
		select {
		case n.wg <- append([]byte(nil), pkt...):
		default:
			n.wgDropped.Add(1)
		}
	}
}

// recv waits for the next "WireGuard" datagram on n.
func (n *node) recv(t *testing.T) []byte {
	t.Helper()
	select {
	case b := <-n.wg:
		return b
	case <-time.After(5 * time.Second):
		t.Fatal("no WireGuard datagram arrived within 5 s")
		return nil
	}
}

// wgPacket returns a datagram shaped like a WireGuard transport message.
func wgPacket(i int) []byte {
	b := make([]byte, 64)
	b[0] = 4
	binary.BigEndian.PutUint64(b[8:], uint64(i))
	return b
}

// pair is two connected sessions.
type pair struct {
	a, b   *Session
	pa, pb Path
	inA    chan []byte // OnPacket of a
	inB    chan []byte // OnPacket of b
}

// connect runs the offer/answer exchange between a session on na
// (controlling) and one on nb, with signalling through Go channels, as the
// sealed control messages will carry it.
func connect(t *testing.T, na, nb *node) *pair {
	t.Helper()
	return connectWith(t, na, nb, SessionConfig{}, SessionConfig{})
}

// connectWith is connect with session configurations of its own (their
// Controlling and OnPacket fields are set here).
func connectWith(t *testing.T, na, nb *node, ca, cb SessionConfig) *pair {
	t.Helper()
	p := &pair{inA: make(chan []byte, 1024), inB: make(chan []byte, 1024)}
	onPacket := func(ch chan []byte) func([]byte) {
		return func(b []byte) {
			select {
			case ch <- append([]byte(nil), b...):
			default:
			}
		}
	}
	var err error
	ca.Controlling, ca.OnPacket = true, onPacket(p.inA)
	cb.Controlling, cb.OnPacket = false, onPacket(p.inB)
	p.a, err = na.mux.NewSession(ca)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.a.Close() })
	p.b, err = nb.mux.NewSession(cb)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.b.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	offer, answer := make(chan []byte, 1), make(chan []byte, 1)
	type result struct {
		p   Path
		err error
	}
	resB := make(chan result, 1)
	go func() { // B: the answering side
		var remote Description
		if err := remote.UnmarshalBinary(<-offer); err != nil {
			resB <- result{err: err}
			answer <- nil
			return
		}
		d, err := p.b.LocalDescription()
		if err != nil {
			resB <- result{err: err}
			answer <- nil
			return
		}
		enc, err := d.MarshalBinary()
		answer <- enc
		if err != nil {
			resB <- result{err: err}
			return
		}
		path, err := p.b.Connect(ctx, remote)
		resB <- result{path, err}
	}()
	d, err := p.a.LocalDescription()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("offer: %v", d)
	enc, err := d.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	offer <- enc
	var remote Description
	if err := remote.UnmarshalBinary(<-answer); err != nil {
		t.Fatalf("answer: %v", err)
	}
	t.Logf("answer: %v", remote)
	p.pa, err = p.a.Connect(ctx, remote)
	if err != nil {
		t.Fatalf("A connect: %v", err)
	}
	rb := <-resB
	if rb.err != nil {
		t.Fatalf("B connect: %v", rb.err)
	}
	p.pb = rb.p
	t.Logf("A path: %v", p.pa)
	t.Logf("B path: %v", p.pb)
	return p
}

func TestConnectHost(t *testing.T) {
	a, b := newNode(t), newNode(t)
	p := connect(t, a, b)
	for _, c := range []struct {
		name     string
		path     Path
		from, to *node
	}{
		{"A", p.pa, a, b},
		{"B", p.pb, b, a},
	} {
		if c.path.LocalType != TypeHost || c.path.RemoteType != TypeHost || c.path.Relayed || !c.path.SharedSocket() {
			t.Errorf("%s path = %v, want host to host on the shared socket", c.name, c.path)
		}
		if c.path.Local != c.from.addr || c.path.Remote != c.to.addr {
			t.Errorf("%s path = %v, want %v -> %v", c.name, c.path, c.from.addr, c.to.addr)
		}
	}

	// WireGuard sends from the shared socket to Path.Remote: nothing else.
	want := wgPacket(1)
	if _, err := a.udp.WriteToUDPAddrPort(want, p.pa.Remote); err != nil {
		t.Fatal(err)
	}
	if got := b.recv(t); !bytes.Equal(got, want) {
		t.Fatalf("B got %x, want %x", got, want)
	}
	want = wgPacket(2)
	if _, err := b.udp.WriteToUDPAddrPort(want, p.pb.Remote); err != nil {
		t.Fatal(err)
	}
	if got := a.recv(t); !bytes.Equal(got, want) {
		t.Fatalf("A got %x, want %x", got, want)
	}
	// Session.Write works on a direct path too: it goes out of the shared
	// socket, so it arrives as WireGuard, not through pion.
	want = wgPacket(3)
	if err := p.a.Write(want); err != nil {
		t.Fatal(err)
	}
	if got := b.recv(t); !bytes.Equal(got, want) {
		t.Fatalf("B got %x, want %x", got, want)
	}
	if got := p.a.Path(); got.Local != p.pa.Local || got.Remote != p.pa.Remote {
		t.Errorf("Session.Path() = %v, want %v", got, p.pa)
	}
}

// startTURN runs a pion/turn server on loopback with one static
// credential, closed when the test ends.
func startTURN(t *testing.T) TURNServer {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const realm, user, pass = "weft.test", "weft", "not-a-secret"
	key := turn.GenerateAuthKey(user, realm, pass)
	srv, err := turn.NewServer(turn.ServerConfig{
		Realm: realm,
		AuthHandler: func(ra *turn.RequestAttributes) (string, []byte, bool) {
			if ra.Username != user {
				return "", nil, false
			}
			return user, key, true
		},
		PacketConnConfigs: []turn.PacketConnConfig{{
			PacketConn: pc,
			RelayAddressGenerator: &turn.RelayAddressGeneratorStatic{
				RelayAddress: net.IPv4(127, 0, 0, 1),
				Address:      "127.0.0.1",
			},
		}},
		LoggerFactory: pionlog.Factory{Log: slog.New(slog.DiscardHandler)},
	})
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return TURNServer{Addr: pc.LocalAddr().(*net.UDPAddr).AddrPort(), Username: user, Password: pass}
}

func TestConnectRelay(t *testing.T) {
	ts := startTURN(t)
	relayOnly := func(c *Config) {
		c.TURN = []TURNServer{ts}
		c.RelayOnly = true
	}
	a, b := newNode(t, relayOnly), newNode(t, relayOnly)
	p := connect(t, a, b)
	for name, path := range map[string]Path{"A": p.pa, "B": p.pb} {
		if path.LocalType != TypeRelay || path.RemoteType != TypeRelay || !path.Relayed || path.SharedSocket() {
			t.Errorf("%s path = %v, want relay to relay", name, path)
		}
		if path.Local.Addr() != ts.Addr.Addr() || path.Local.Port() == ts.Addr.Port() {
			t.Errorf("%s path = %v, want a local relayed address on the TURN server %s", name, path, ts.Addr.Addr())
		}
	}
	if p.pa.Local != p.pb.Remote || p.pb.Local != p.pa.Remote {
		t.Errorf("paths do not mirror each other: %v and %v", p.pa, p.pb)
	}

	// Datagrams go through the TURN allocation, both ways, in order.
	const count = 50
	p.exchange(t, count, 0, 1000, "through the relay")
	if len(a.wg)+len(b.wg) != 0 {
		t.Errorf("relayed datagrams leaked onto the shared sockets: %d, %d", len(a.wg), len(b.wg))
	}

	// Once pion has bound a channel to the peer's relayed address (after
	// the first datagrams, which go as Send indications), datagrams skip
	// pion both ways: framed as ChannelData by Write, handed from the
	// allocation's socket to OnPacket (turnfast.go).
	for _, s := range []*Session{p.a, p.b} {
		deadline := time.Now().Add(5 * time.Second)
		for {
			f := s.fast.Load()
			if f != nil {
				if _, _, ok := f.conn.ch.route(f.peer); ok {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no channel bound on the selected relay pair after 5 s (route %+v)", f)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	outA0, inA0 := p.a.fastPathCounts()
	outB0, inB0 := p.b.fastPathCounts()
	p.exchange(t, count, 2000, 3000, "on the fast path")
	outA, inA := p.a.fastPathCounts()
	outB, inB := p.b.fastPathCounts()
	if outA-outA0 != count || inA-inA0 != count || outB-outB0 != count || inB-inB0 != count {
		t.Errorf("fast path counts: A out %d in %d, B out %d in %d; want %d each", outA-outA0, inA-inA0, outB-outB0, inB-inB0, count)
	}
}

// exchange writes count datagrams each way, numbered from fromA and fromB,
// and checks that each side's OnPacket gets the other's, in order.
func (p *pair) exchange(t *testing.T, count, fromA, fromB int, how string) {
	t.Helper()
	for i := range count {
		if err := p.a.Write(wgPacket(fromA + i)); err != nil {
			t.Fatal(err)
		}
		if err := p.b.Write(wgPacket(fromB + i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range count {
		for _, c := range []struct {
			name string
			in   chan []byte
			want []byte
		}{{"B", p.inB, wgPacket(fromA + i)}, {"A", p.inA, wgPacket(fromB + i)}} {
			select {
			case got := <-c.in:
				if !bytes.Equal(got, c.want) {
					t.Fatalf("%s OnPacket got %x %s, want %x", c.name, got, how, c.want)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("%s: datagram %d did not arrive %s", c.name, i, how)
			}
		}
	}
}

// TestInterleave checks that WireGuard traffic and ICE (checks, then
// consent keepalives) share one socket without loss either way.
func TestInterleave(t *testing.T) {
	a, b := newNode(t), newNode(t)
	p := connect(t, a, b)
	changes := make(chan Path, 10)
	p.a.OnPathChange(func(np Path) { changes <- np })

	claimedBefore := b.stunClaimed.Load()
	const count = 3000
	deadline := time.Now().Add(5 * time.Second) // spans two keepalive rounds
	sent := 0
	for i := 0; sent < count || time.Now().Before(deadline); i++ {
		if sent < count {
			if _, err := a.udp.WriteToUDPAddrPort(wgPacket(sent), p.pa.Remote); err != nil {
				t.Fatal(err)
			}
			sent++
		}
		if i%50 == 49 {
			time.Sleep(20 * time.Millisecond) // let the reader keep up with loopback
		}
	}
	for i := range count {
		got := b.recv(t)
		if want := wgPacket(i); !bytes.Equal(got, want) {
			t.Fatalf("datagram %d: got %x, want %x", i, got, want)
		}
	}
	if d := b.wgDropped.Load(); d != 0 {
		t.Fatalf("%d WireGuard datagrams dropped by the test reader", d)
	}
	if claimed := b.stunClaimed.Load() - claimedBefore; claimed == 0 {
		t.Errorf("no ICE keepalive reached B's Mux in 5 s")
	}
	if d := a.mux.Dropped() + b.mux.Dropped(); d != 0 {
		t.Errorf("muxes dropped %d ICE packets", d)
	}
	if n := a.stunDeclined.Load() + b.stunDeclined.Load(); n != 0 {
		t.Errorf("%d ICE packets were not claimed by Deliver", n)
	}
	select {
	case np := <-changes:
		t.Errorf("path changed to %v during the test", np)
	default:
	}
	if got := p.a.Path(); got.IsZero() {
		t.Error("A lost its path")
	}
}

func TestConnectBadDescription(t *testing.T) {
	a := newNode(t)
	good, err := sampleDescription().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var decoded Description
	garbageErr := decoded.UnmarshalBinary(append(good[:10:10], "garbage"...))
	if !errors.Is(garbageErr, ErrBadDescription) {
		t.Fatalf("decoding garbage: %v, want ErrBadDescription", garbageErr)
	}
	for _, tc := range []struct {
		name string
		d    Description
		want string
	}{
		{"empty", Description{}, "ufrag is 0 characters"},
		{"no candidates", Description{Ufrag: "abcd", Pwd: strings.Repeat("p", 22)}, "no candidates"},
		{"bad candidate", Description{Ufrag: "abcd", Pwd: strings.Repeat("p", 22), Candidates: []Candidate{{Type: "carrier-pigeon", Addr: netip.MustParseAddrPort("1.2.3.4:5"), Priority: 1}}}, "carrier-pigeon"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := a.mux.NewSession(SessionConfig{Controlling: true})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			_, err = s.Connect(context.Background(), tc.d)
			if !errors.Is(err, ErrBadDescription) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Connect = %v, want ErrBadDescription mentioning %q", err, tc.want)
			}
			t.Logf("error: %v", err)
		})
	}
}

// TestConnectNoAnswer points a session at a peer that never answers.
func TestConnectNoAnswer(t *testing.T) {
	a := newNode(t)
	hole, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	for _, controlling := range []bool{true, false} {
		t.Run(fmt.Sprintf("controlling=%v", controlling), func(t *testing.T) {
			s, err := a.mux.NewSession(SessionConfig{Controlling: controlling})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			remote := Description{
				Ufrag: "silentpeer", Pwd: strings.Repeat("s", 24),
				Candidates: []Candidate{{Type: TypeHost, Addr: hole.LocalAddr().(*net.UDPAddr).AddrPort(), Priority: 2130706431}},
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			start := time.Now()
			_, err = s.Connect(ctx, remote)
			if !errors.Is(err, ErrNoPath) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Connect = %v, want ErrNoPath and DeadlineExceeded", err)
			}
			const want = "ICE checks failed: no candidate pair worked (tried 1 pairs)"
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("Connect = %q, want it to contain %q", err, want)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("Connect took %v to give up after a 2 s deadline", d)
			}
			if err := s.Write(wgPacket(0)); !errors.Is(err, ErrNotConnected) {
				t.Errorf("Write on a failed session = %v, want ErrNotConnected", err)
			}
			if _, err := s.Connect(ctx, remote); !errors.Is(err, ErrConnectCalled) {
				t.Errorf("second Connect = %v, want ErrConnectCalled", err)
			}
		})
	}
}

// startSTUN runs a minimal STUN server answering binding requests with
// XOR-MAPPED-ADDRESS, as every weft node will.
func startSTUN(t *testing.T) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFromUDP(buf)
			if err != nil {
				return
			}
			req := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if req.Decode() != nil || req.Type != stun.BindingRequest {
				continue
			}
			resp, err := stun.Build(req, stun.BindingSuccess,
				&stun.XORMappedAddress{IP: from.IP, Port: from.Port}, stun.Fingerprint)
			if err != nil {
				continue
			}
			pc.WriteToUDP(resp.Raw, from)
		}
	}()
	t.Cleanup(func() {
		pc.Close()
		wg.Wait()
	})
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

// TestSrflxOverSharedSocket checks that server-reflexive candidates are
// learnt through the shared socket (so they are WireGuard's NAT mapping),
// and that the node's own STUN traffic that is not ICE's is left alone.
func TestSrflxOverSharedSocket(t *testing.T) {
	stunAddr := startSTUN(t)
	a := newNode(t, func(c *Config) { c.STUNServers = []netip.AddrPort{stunAddr} })
	s, err := a.mux.NewSession(SessionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d, err := s.LocalDescription()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("description: %v", d)
	var srflx []Candidate
	for _, c := range d.Candidates {
		if c.Type == TypeSrflx {
			srflx = append(srflx, c)
		}
	}
	if len(srflx) != 1 || srflx[0].Addr != a.addr {
		t.Fatalf("srflx candidates %v, want one at the shared socket's address %v", srflx, a.addr)
	}

	// A plain binding request (someone using this node as a STUN server)
	// and a stray response are not ICE's.
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	resp := stun.MustBuild(stun.TransactionID, stun.BindingSuccess)
	for _, m := range []*stun.Message{req, resp} {
		if a.mux.Deliver(m.Raw, stunAddr) {
			t.Errorf("Deliver claimed %v", m)
		}
	}
}

func TestDeliver(t *testing.T) {
	a := newNode(t)
	s, err := a.mux.NewSession(SessionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	peer := netip.MustParseAddrPort("127.0.0.1:9")

	ourCheck := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewUsername(s.ufrag+":remote"))
	otherCheck := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewUsername("someoneelse:remote"))
	sentReq := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	a.mux.pc.WriteToAddrPort(sentReq.Raw, peer) // as pion would, to record it
	answer := stun.MustBuild(stun.NewTransactionIDSetter(sentReq.TransactionID), stun.BindingSuccess)
	stray := stun.MustBuild(stun.TransactionID, stun.BindingSuccess)
	indication := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodBinding, stun.ClassIndication))
	for _, tc := range []struct {
		name string
		pkt  []byte
		from netip.AddrPort
		want bool
	}{
		{"wireguard", wgPacket(0), peer, false},
		{"short", []byte{0, 1, 0, 0, 0x21, 0x12, 0xA4, 0x42}, peer, false},
		{"bad length", append(append([]byte{}, ourCheck.Raw...), 0, 0, 0, 0), peer, false},
		{"check for our session", ourCheck.Raw, peer, true},
		{"check for another ufrag", otherCheck.Raw, peer, false},
		{"plain binding request", sentReq.Raw, peer, false},
		{"answer to our request", answer.Raw, peer, true},
		{"stray response", stray.Raw, peer, false},
		{"indication from a peer we talk to", indication.Raw, peer, true},
		{"indication from a stranger", indication.Raw, netip.MustParseAddrPort("127.0.0.2:9"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := a.mux.Deliver(tc.pkt, tc.from); got != tc.want {
				t.Errorf("Deliver = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestNewMuxConfig(t *testing.T) {
	send := func([]byte, netip.AddrPort) error { return nil }
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no send", Config{LocalAddr: netip.MustParseAddrPort("127.0.0.1:1")}, "Send is nil"},
		{"no port", Config{Send: send, LocalAddr: netip.MustParseAddrPort("127.0.0.1:0")}, "needs an address and a port"},
		{"local addrs with specific", Config{Send: send, LocalAddr: netip.MustParseAddrPort("127.0.0.1:1"), LocalAddrs: []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:0")}}, "only for a socket bound to the unspecified"},
		{"v6 on v4 socket", Config{Send: send, LocalAddr: netip.MustParseAddrPort("0.0.0.0:1"), LocalAddrs: []netip.AddrPort{netip.MustParseAddrPort("[2001:db8::1]:0")}}, "IPv4-only"},
		{"turn without password", Config{Send: send, LocalAddr: netip.MustParseAddrPort("127.0.0.1:1"), TURN: []TURNServer{{Addr: netip.MustParseAddrPort("127.0.0.1:3478"), Username: "u"}}}, "needs a username and a password"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := NewMux(tc.cfg)
			if err == nil {
				m.Close()
				t.Fatal("NewMux succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewMux = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

// TestUnspecifiedLocalAddrs checks that a socket bound to the unspecified
// address advertises exactly Config.LocalAddrs as host candidates.
func TestUnspecifiedLocalAddrs(t *testing.T) {
	m, err := NewMux(Config{
		Send:       func([]byte, netip.AddrPort) error { return nil },
		LocalAddr:  netip.MustParseAddrPort("[::]:4242"),
		LocalAddrs: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:0"), netip.MustParseAddrPort("[2001:db8::1]:0")},
		Logger:     testLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	s, err := m.NewSession(SessionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	d, err := s.LocalDescription()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range d.Candidates {
		got = append(got, c.Type+" "+c.Addr.String())
	}
	want := []string{"host 192.0.2.1:4242", "host [2001:db8::1]:4242"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("candidates %v, want %v", got, want)
	}
}

func TestClosed(t *testing.T) {
	a := newNode(t)
	s, err := a.mux.NewSession(SessionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	a.mux.Close()
	if _, err := s.LocalDescription(); !errors.Is(err, ErrClosed) {
		t.Errorf("LocalDescription after Mux.Close = %v, want ErrClosed", err)
	}
	if _, err := a.mux.NewSession(SessionConfig{}); !errors.Is(err, ErrClosed) {
		t.Errorf("NewSession after Mux.Close = %v, want ErrClosed", err)
	}
	s.Close()
	a.mux.Close()
}

// TestPathLost checks that OnPathChange hears about a path that stops
// working (consent lost), with pion's timeouts shortened.
func TestPathLost(t *testing.T) {
	a, b := newNode(t), newNode(t)
	for _, n := range []*node{a, b} {
		n.mux.testAgentOptions = []pion.AgentOption{
			pion.WithKeepaliveInterval(100 * time.Millisecond),
			pion.WithDisconnectedTimeout(300 * time.Millisecond),
			pion.WithFailedTimeout(300 * time.Millisecond),
		}
	}
	p := connect(t, a, b)
	changes := make(chan Path, 10)
	p.a.OnPathChange(func(np Path) { changes <- np })
	p.b.Close()
	select {
	case np := <-changes:
		if !np.IsZero() {
			t.Fatalf("OnPathChange(%v), want the zero Path", np)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("OnPathChange not called within 5 s of the peer going away")
	}
	if got := p.a.Path(); !got.IsZero() {
		t.Errorf("Path() = %v after the path was lost", got)
	}
	if err := p.a.Write(wgPacket(0)); !errors.Is(err, ErrNotConnected) {
		t.Errorf("Write after the path was lost = %v, want ErrNotConnected", err)
	}
}

// TestConnectPrefersDirect: with a TURN server configured on both sides,
// the direct pair wins and no traffic needs the relay.
func TestConnectPrefersDirect(t *testing.T) {
	ts := startTURN(t)
	withTURN := func(c *Config) { c.TURN = []TURNServer{ts} }
	a, b := newNode(t, withTURN), newNode(t, withTURN)
	p := connect(t, a, b)
	if p.pa.LocalType != TypeHost || p.pa.RemoteType != TypeHost || p.pa.Relayed {
		t.Fatalf("A path = %v, want host to host", p.pa)
	}
}

// TestSessionTURN: TURN servers given per session (SessionConfig.TURN)
// allocate relay candidates for that session only, and carry a relayed
// path on a RelayOnly Mux that has no TURN server of its own.
func TestSessionTURN(t *testing.T) {
	ts := startTURN(t)
	relayOnly := func(c *Config) { c.RelayOnly = true }
	a, b := newNode(t, relayOnly), newNode(t, relayOnly)
	if _, err := a.mux.NewSession(SessionConfig{}); err == nil || !strings.Contains(err.Error(), "RelayOnly") {
		t.Fatalf("session without TURN on a RelayOnly mux: %v, want a RelayOnly error", err)
	}
	if _, err := a.mux.NewSession(SessionConfig{TURN: []TURNServer{{Addr: ts.Addr}}}); err == nil {
		t.Fatal("session with a TURN server without credential: no error")
	}
	if _, err := a.mux.NewSession(SessionConfig{TURN: []TURNServer{{Addr: ts.Addr, Username: "u", Password: "p", Transport: "sctp"}}}); err == nil {
		t.Fatal("session with TURN transport sctp: no error")
	}
	sc := SessionConfig{TURN: []TURNServer{ts}}
	p := connectWith(t, a, b, sc, sc)
	if p.pa.LocalType != TypeRelay || !p.pa.Relayed || p.pa.Local.Addr() != ts.Addr.Addr() {
		t.Errorf("A path = %v, want a relayed one on %s", p.pa, ts.Addr)
	}
	if err := p.a.Write(wgPacket(1)); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-p.inB:
		if !bytes.Equal(got, wgPacket(1)) {
			t.Fatalf("B got %x", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("datagram did not arrive through the relay")
	}

	// On an ordinary Mux, a session's own TURN server adds a relay
	// candidate to its description; a session without one has none.
	c := newNode(t)
	for _, tc := range []struct {
		name  string
		cfg   SessionConfig
		relay bool
	}{{"with TURN", sc, true}, {"without", SessionConfig{}, false}} {
		s, err := c.mux.NewSession(tc.cfg)
		if err != nil {
			t.Fatal(err)
		}
		d, err := s.LocalDescription()
		s.Close()
		if err != nil {
			t.Fatal(err)
		}
		has := slices.ContainsFunc(d.Candidates, func(c Candidate) bool { return c.Type == TypeRelay })
		if has != tc.relay {
			t.Errorf("%s: relay candidate %v, want %v (%v)", tc.name, has, tc.relay, d)
		}
	}
}
