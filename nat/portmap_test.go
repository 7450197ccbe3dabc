package nat

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// pmpRequest is a request the fake gateway received.
type pmpRequest struct {
	Op       uint8
	Internal uint16
	External uint16
	Lifetime uint32
	At       time.Time
}

// fakePMP is a NAT-PMP gateway on loopback.
type fakePMP struct {
	t    testing.TB
	conn *net.UDPConn
	addr netip.AddrPort
	done chan struct{}

	mu        sync.Mutex // guards the fields below
	external  netip.Addr
	epochBase uint32
	startedAt time.Time
	reqs      []pmpRequest
	drop      int             // drop this many more requests
	silent    bool            // answer nothing
	result    uint16          // result code for mapping requests
	short     bool            // error responses are a bare header
	before    func() [][]byte // datagrams to send ahead of each answer
	spoofer   *net.UDPConn    // if set, sends a different answer ahead of each answer
}

func newFakePMP(t testing.TB) *fakePMP {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakePMP{
		t:         t,
		conn:      c,
		addr:      c.LocalAddr().(*net.UDPAddr).AddrPort(),
		done:      make(chan struct{}),
		external:  netip.MustParseAddr("203.0.113.5"),
		epochBase: 1000,
		startedAt: time.Now(),
	}
	go f.serve()
	t.Cleanup(func() {
		c.Close()
		<-f.done
	})
	return f
}

// reboot makes the gateway start a new epoch.
func (f *fakePMP) reboot() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.epochBase, f.startedAt = 0, time.Now()
}

func (f *fakePMP) requests() []pmpRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]pmpRequest(nil), f.reqs...)
}

// mapRequests returns the opcode 1 requests received.
func (f *fakePMP) mapRequests() []pmpRequest {
	var out []pmpRequest
	for _, r := range f.requests() {
		if r.Op == pmpOpMapUDP {
			out = append(out, r)
		}
	}
	return out
}

func (f *fakePMP) set(fn func(f *fakePMP)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakePMP) serve() {
	defer close(f.done)
	buf := make([]byte, 64)
	for {
		n, from, err := f.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		b := buf[:n]
		if len(b) < 2 || b[0] != 0 {
			continue
		}
		req := pmpRequest{Op: b[1], At: time.Now()}
		if req.Op == pmpOpMapUDP {
			if len(b) != 12 {
				continue
			}
			req.Internal = binary.BigEndian.Uint16(b[4:6])
			req.External = binary.BigEndian.Uint16(b[6:8])
			req.Lifetime = binary.BigEndian.Uint32(b[8:12])
		}
		f.mu.Lock()
		f.reqs = append(f.reqs, req)
		drop := f.drop > 0 || f.silent
		if f.drop > 0 {
			f.drop--
		}
		r := pmpResponse{
			Opcode: pmpOpReply + req.Op,
			Epoch:  f.epochBase + uint32(time.Since(f.startedAt)/time.Second),
		}
		switch req.Op {
		case pmpOpPublicAddr:
			r.External = f.external
		case pmpOpMapUDP:
			r.Result, r.Short = f.result, f.result != 0 && f.short
			r.Internal, r.Mapped, r.Lifetime = req.Internal, req.External, req.Lifetime
			if req.Lifetime == 0 {
				r.Mapped = 0
			}
		}
		var junk [][]byte
		if f.before != nil {
			junk = f.before()
		}
		spoofer := f.spoofer
		f.mu.Unlock()
		if drop {
			continue
		}
		if spoofer != nil {
			s := r
			s.External, s.Mapped = netip.MustParseAddr("198.51.100.66"), 9
			spoofer.WriteToUDPAddrPort(appendPMPResponse(nil, s), from)
		}
		for _, j := range junk {
			f.conn.WriteToUDPAddrPort(j, from)
		}
		f.conn.WriteToUDPAddrPort(appendPMPResponse(nil, r), from)
	}
}

func TestMapUDP(t *testing.T) {
	f := newFakePMP(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	m, _, err := mapUDP(ctx, f.addr, 41641, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	want := PortMapping{
		Protocol: "NAT-PMP",
		Gateway:  f.addr.Addr(),
		Internal: 41641,
		External: netip.MustParseAddrPort("203.0.113.5:41641"),
		Lifetime: 2 * time.Hour,
	}
	if exp := m.Expires; exp.Before(start.Add(2*time.Hour)) || exp.After(time.Now().Add(2*time.Hour)) {
		t.Errorf("Expires = %v, want about now + 2h", exp)
	}
	m.Expires = time.Time{}
	if m != want {
		t.Errorf("mapping = %+v, want %+v", m, want)
	}
	if got, want := m.String(), "NAT-PMP 203.0.113.5:41641 -> :41641 via 127.0.0.1, 2h0m0s"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if m.IsZero() || !(PortMapping{}).IsZero() {
		t.Error("IsZero wrong")
	}
	reqs := f.requests()
	if len(reqs) != 2 || reqs[0].Op != pmpOpPublicAddr || reqs[1].Op != pmpOpMapUDP {
		t.Fatalf("requests = %+v, want public address then map", reqs)
	}
	if r := reqs[1]; r.Internal != 41641 || r.External != 41641 || r.Lifetime != 7200 {
		t.Errorf("map request = %+v, want 41641 -> 41641 for 7200 s", r)
	}
}

func TestMapUDPRetransmits(t *testing.T) {
	f := newFakePMP(t)
	f.set(func(f *fakePMP) { f.drop = 2 }) // the first request, and its first retransmission
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if _, _, err := mapUDP(ctx, f.addr, 1000, time.Hour); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 750*time.Millisecond {
		t.Errorf("answered after %v; retransmissions at 250 ms and 750 ms should come first", d)
	}
	if n := len(f.requests()); n != 4 {
		t.Errorf("gateway saw %d requests, want 4 (3 public address, 1 map)", n)
	}
}

func TestMapUDPResultCodes(t *testing.T) {
	tests := []struct {
		name  string
		code  uint16
		short bool
		want  string
	}{
		{"unsupported version", 1, true, "unsupported version"},
		{"refused", 2, false, "enable NAT-PMP"},
		{"refused short", 2, true, "not authorized or refused"},
		{"network failure", 3, false, "network failure"},
		{"out of resources", 4, false, "out of resources"},
		{"unsupported opcode", 5, false, "unsupported opcode"},
		{"unknown", 77, false, "result code 77"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakePMP(t)
			f.set(func(f *fakePMP) { f.result, f.short = tt.code, tt.short })
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, _, err := mapUDP(ctx, f.addr, 1000, time.Hour)
			var re *PMPResultError
			if !errors.As(err, &re) || re.Code != tt.code {
				t.Fatalf("err = %v, want a PMPResultError with code %d", err, tt.code)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), f.addr.String()) {
				t.Errorf("err = %q, want it to name the gateway and say %q", err, tt.want)
			}
		})
	}
}

func TestMapUDPIgnoresJunk(t *testing.T) {
	f := newFakePMP(t)
	other, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	bogus := netip.MustParseAddr("198.51.100.66")
	f.set(func(f *fakePMP) {
		f.before = func() [][]byte {
			return [][]byte{
				{},
				{0, 128},
				[]byte("hello, this is not NAT-PMP"),
				appendPMPResponse([]byte(nil), pmpResponse{Opcode: 130, Epoch: 1}),                                // unknown opcode
				append([]byte{1}, appendPMPResponse(nil, pmpResponse{Opcode: 128, External: bogus})[1:]...),       // version 1
				appendPMPResponse(nil, pmpResponse{Opcode: 129, Internal: 9, Mapped: 9, Lifetime: 60}),            // another port's mapping (or a reply to the wrong opcode)
				appendPMPResponse(nil, pmpResponse{Opcode: 129, Internal: 1000, Mapped: 9, Lifetime: 60})[:12],    // truncated
				append(appendPMPResponse(nil, pmpResponse{Opcode: 128, External: bogus}), 0),                      // too long
				appendPMPResponse(nil, pmpResponse{Opcode: 129, Result: 2, Internal: 9, Mapped: 9, Lifetime: 60}), // an error about another port
			}
		}
	})
	mapPort1000(t, f)
	if n := len(f.requests()); n != 2 {
		t.Errorf("gateway saw %d requests, want 2 (no retransmission needed)", n)
	}
}

// TestMapUDPIgnoresOtherSources checks that an answer from an address
// other than the gateway's is not taken.
func TestMapUDPIgnoresOtherSources(t *testing.T) {
	f := newFakePMP(t)
	other, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	f.set(func(f *fakePMP) { f.spoofer = other })
	mapPort1000(t, f)
}

// mapPort1000 maps port 1000 on f and checks that the answer is the fake
// gateway's own: 203.0.113.5:1000.
func mapPort1000(t *testing.T, f *fakePMP) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, _, err := mapUDP(ctx, f.addr, 1000, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if want := netip.MustParseAddrPort("203.0.113.5:1000"); m.External != want {
		t.Errorf("External = %v, want %v", m.External, want)
	}
}

func TestMapUDPNoAnswer(t *testing.T) {
	f := newFakePMP(t)
	f.set(func(f *fakePMP) { f.silent = true })
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err := mapUDP(ctx, f.addr, 1000, time.Hour)
	if !errors.Is(err, ErrNoPMPAnswer) {
		t.Fatalf("err = %v, want ErrNoPMPAnswer", err)
	}
	want := "no NAT-PMP answer from " + f.addr.String() + " (the gateway does not offer port mapping, or it is off)"
	if !strings.Contains(err.Error(), want) {
		t.Errorf("err = %q, want it to contain %q", err, want)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("returned after %v, want soon after ctx's 600 ms deadline", d)
	}
	// 0 ms, 250 ms: two sends before the deadline (the next is at 750 ms).
	if n := len(f.requests()); n != 2 {
		t.Errorf("gateway saw %d requests, want 2", n)
	}
}

func TestMapUDPPortClosed(t *testing.T) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	closed := c.LocalAddr().(*net.UDPAddr).AddrPort()
	c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	_, _, err = mapUDP(ctx, closed, 1000, time.Hour)
	if !errors.Is(err, ErrNoPMPAnswer) {
		t.Fatalf("err = %v, want ErrNoPMPAnswer", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("returned after %v; port unreachable should end the exchange early", d)
	}
}

func TestMapUDPArgs(t *testing.T) {
	ctx := context.Background()
	gw := netip.MustParseAddrPort("127.0.0.1:9")
	if _, _, err := mapUDP(ctx, gw, 0, time.Hour); err == nil {
		t.Error("internal port 0: no error")
	}
	if _, _, err := mapUDP(ctx, gw, 1000, 0); err == nil {
		t.Error("lifetime 0: no error")
	}
	if _, err := MapUDP(ctx, netip.MustParseAddr("::1"), 1000, time.Hour); err == nil {
		t.Error("IPv6 gateway: no error")
	}
}

func TestUnmapUDP(t *testing.T) {
	f := newFakePMP(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := unmapUDP(ctx, f.addr, 41641); err != nil {
		t.Fatal(err)
	}
	reqs := f.mapRequests()
	if len(reqs) != 1 {
		t.Fatalf("map requests = %+v, want 1", reqs)
	}
	if r := reqs[0]; r.Internal != 41641 || r.External != 0 || r.Lifetime != 0 {
		t.Errorf("request = %+v, want internal 41641, external 0, lifetime 0", r)
	}
}

// newTestMapper returns a started PortMapper for f's gateway and a channel of
// its OnChange calls.
func newTestMapper(t *testing.T, f *fakePMP, lifetime time.Duration) (*PortMapper, <-chan PortMapping) {
	t.Helper()
	changes := make(chan PortMapping, 16)
	p, err := NewPortMapper(PortMapperConfig{
		Port:     41641,
		Gateway:  func() (netip.Addr, error) { return f.addr.Addr(), nil },
		Lifetime: lifetime,
		OnChange: func(m PortMapping) { changes <- m },
		Log:      slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	p.gwPort = f.addr.Port()
	p.retryMin, p.retryMax = 50*time.Millisecond, 200*time.Millisecond
	p.Start()
	t.Cleanup(func() { p.Close() })
	return p, changes
}

func nextChange(t *testing.T, changes <-chan PortMapping) PortMapping {
	t.Helper()
	select {
	case m := <-changes:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no OnChange call")
		return PortMapping{}
	}
}

func TestPortMapper(t *testing.T) {
	f := newFakePMP(t)
	p, changes := newTestMapper(t, f, 2*time.Second)

	m := nextChange(t, changes)
	if want := netip.MustParseAddrPort("203.0.113.5:41641"); m.External != want || m.Lifetime != 2*time.Second {
		t.Fatalf("OnChange(%v), want %v for 2s", m, want)
	}
	if got, ok := p.Mapping(); !ok || got != m {
		t.Errorf("Mapping() = %v, %v; want %v, true", got, ok, m)
	}
	if err := p.Err(); err != nil {
		t.Errorf("Err() = %v", err)
	}

	// Renewal at half the lifetime: the same mapping, so no OnChange.
	waitFor(t, "a renewal", func() bool { return len(f.mapRequests()) >= 2 })
	reqs := f.mapRequests()
	if d := reqs[1].At.Sub(reqs[0].At); d < 900*time.Millisecond || d > 2*time.Second {
		t.Errorf("renewed after %v, want about 1 s (half the lifetime)", d)
	}
	if r := reqs[1]; r.Lifetime != 2 || r.Internal != 41641 {
		t.Errorf("renewal = %+v", r)
	}
	select {
	case m := <-changes:
		t.Errorf("OnChange(%v) on an unchanged renewal", m)
	default:
	}

	// Close deletes the mapping and reports it gone.
	p.Close()
	reqs = f.mapRequests()
	if r := reqs[len(reqs)-1]; r.Lifetime != 0 || r.External != 0 || r.Internal != 41641 {
		t.Errorf("last request = %+v, want a deletion of 41641", r)
	}
	if m := nextChange(t, changes); !m.IsZero() {
		t.Errorf("OnChange(%v) at Close, want the zero mapping", m)
	}
	if _, ok := p.Mapping(); ok {
		t.Error("Mapping() after Close reports a mapping")
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestPortMapperGatewayReboot(t *testing.T) {
	f := newFakePMP(t)
	_, changes := newTestMapper(t, f, 2*time.Second)
	nextChange(t, changes)
	f.reboot()
	// The renewal (at 1 s) sees the epoch gone back and maps again at once.
	waitFor(t, "a re-mapping", func() bool { return len(f.mapRequests()) >= 3 })
	reqs := f.mapRequests()
	if d := reqs[2].At.Sub(reqs[1].At); d > 500*time.Millisecond {
		t.Errorf("mapped again %v after the renewal that saw the reboot, want at once", d)
	}
}

func TestPortMapperExternalChange(t *testing.T) {
	f := newFakePMP(t)
	p, changes := newTestMapper(t, f, time.Hour)
	nextChange(t, changes)
	newAddr := netip.MustParseAddr("203.0.113.77")
	f.set(func(f *fakePMP) { f.external = newAddr })
	p.Refresh()
	if m := nextChange(t, changes); m.External != netip.AddrPortFrom(newAddr, 41641) {
		t.Errorf("OnChange(%v), want external %v", m, newAddr)
	}
}

func TestPortMapperRetries(t *testing.T) {
	f := newFakePMP(t)
	f.set(func(f *fakePMP) { f.result = 2 })
	p, changes := newTestMapper(t, f, time.Hour)
	waitFor(t, "an error", func() bool { return p.Err() != nil })
	var re *PMPResultError
	if err := p.Err(); !errors.As(err, &re) || re.Code != 2 {
		t.Errorf("Err() = %v, want result code 2", err)
	}
	f.set(func(f *fakePMP) { f.result = 0 })
	if m := nextChange(t, changes); m.IsZero() {
		t.Error("OnChange with the zero mapping, want a mapping")
	}
	if err := p.Err(); err != nil {
		t.Errorf("Err() = %v after a success", err)
	}
	reqs := f.mapRequests()
	if d := reqs[1].At.Sub(reqs[0].At); d < 50*time.Millisecond {
		t.Errorf("retried after %v, want the backoff (50 ms in this test) first", d)
	}
}

func TestPortMapperGatewayError(t *testing.T) {
	p, err := NewPortMapper(PortMapperConfig{
		Port:    41641,
		Gateway: func() (netip.Addr, error) { return netip.Addr{}, errors.New("no route") },
		Log:     slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	p.retryMin = 10 * time.Millisecond
	p.Start()
	defer p.Close()
	waitFor(t, "an error", func() bool { return p.Err() != nil })
	if !strings.Contains(p.Err().Error(), "no route") {
		t.Errorf("Err() = %v", p.Err())
	}
}

func TestNewPortMapper(t *testing.T) {
	if _, err := NewPortMapper(PortMapperConfig{}); err == nil {
		t.Error("port 0: no error")
	}
	p, err := NewPortMapper(PortMapperConfig{Port: 1})
	if err != nil {
		t.Fatal(err)
	}
	// Close before Start, and Start after Close, are fine and start nothing.
	if err := p.Close(); err != nil {
		t.Error(err)
	}
	p.Start()
	p.Close()
}

func TestParsePMPResponse(t *testing.T) {
	ext := netip.MustParseAddr("203.0.113.5")
	tests := []struct {
		name    string
		in      []byte
		want    pmpResponse
		wantErr bool
	}{
		{"public address", []byte{0, 128, 0, 0, 0, 0, 1, 2, 203, 0, 113, 5}, pmpResponse{Opcode: 128, Epoch: 258, External: ext}, false},
		{"mapping", []byte{0, 129, 0, 0, 0, 0, 0, 9, 0xa2, 0xa9, 0xa2, 0xaa, 0, 0, 0x1c, 0x20}, pmpResponse{Opcode: 129, Epoch: 9, Internal: 41641, Mapped: 41642, Lifetime: 7200}, false},
		{"error header only", []byte{0, 129, 0, 2}, pmpResponse{Opcode: 129, Result: 2, Short: true}, false},
		{"error with epoch", []byte{0, 128, 0, 1, 0, 0, 0, 9}, pmpResponse{Opcode: 128, Result: 1, Short: true}, false},
		{"empty", nil, pmpResponse{}, true},
		{"short header", []byte{0, 128, 0}, pmpResponse{}, true},
		{"version 2 (PCP)", []byte{2, 128, 0, 0, 0, 0, 1, 2, 203, 0, 113, 5}, pmpResponse{}, true},
		{"request", []byte{0, 0}, pmpResponse{}, true},
		{"request opcode", []byte{0, 1, 0, 0, 0, 0, 0, 9, 0xa2, 0xa9, 0xa2, 0xaa, 0, 0, 0x1c, 0x20}, pmpResponse{}, true},
		{"success short", []byte{0, 129, 0, 0, 0, 0, 0, 9}, pmpResponse{}, true},
		{"too long", []byte{0, 128, 0, 0, 0, 0, 1, 2, 203, 0, 113, 5, 0}, pmpResponse{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parsePMPResponse(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				if !errors.Is(err, ErrMalformedPMP) {
					t.Errorf("err = %v, want ErrMalformedPMP", err)
				}
				return
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func FuzzParsePMPResponse(f *testing.F) {
	f.Add([]byte{0, 128, 0, 0, 0, 0, 1, 2, 203, 0, 113, 5})
	f.Add([]byte{0, 129, 0, 0, 0, 0, 0, 9, 0xa2, 0xa9, 0xa2, 0xaa, 0, 0, 0x1c, 0x20})
	f.Add([]byte{0, 129, 0, 3})
	f.Add([]byte{0, 129, 0, 5, 0xa2, 0xa9, 0xa2, 0xaa, 0, 0, 0x1c, 0x20})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parsePMPResponse(b)
		if err != nil {
			return
		}
		enc := appendPMPResponse(nil, r)
		if r.Short {
			// Only the header of a short error response is decoded.
			if !bytes.Equal(enc, b[:pmpHeaderLen]) || r.Result == 0 {
				t.Fatalf("short response %x re-encodes as %x", b, enc)
			}
			return
		}
		if !bytes.Equal(enc, b) {
			t.Fatalf("%x decodes to %+v, which re-encodes as %x", b, r, enc)
		}
	})
}
