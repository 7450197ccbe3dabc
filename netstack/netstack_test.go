package netstack

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestNewConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"no addrs", Config{}, false},
		{"unspecified", Config{Addrs: []netip.Addr{netip.IPv4Unspecified()}}, false},
		{"v4 default mtu", Config{Addrs: []netip.Addr{addrA4}}, true},
		{"v6 mtu too small", Config{Addrs: []netip.Addr{addrA6}, MTU: 1000}, false},
		{"v4 mtu 1000", Config{Addrs: []netip.Addr{addrA4}, MTU: 1000}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(tt.cfg)
			if (err == nil) != tt.ok {
				t.Fatalf("New: err=%v, want ok=%v", err, tt.ok)
			}
			if s != nil {
				if tt.cfg.MTU == 0 && s.MTU() != DefaultMTU {
					t.Errorf("MTU = %d, want %d", s.MTU(), DefaultMTU)
				}
				s.Close()
			}
		})
	}
}

func TestCloseUnblocksRead(t *testing.T) {
	s, err := New(Config{Addrs: []netip.Addr{addrA4}})
	if err != nil {
		t.Fatal(err)
	}
	dev := s.Device()
	if bs := dev.BatchSize(); bs <= 1 {
		t.Errorf("BatchSize = %d, want > 1", bs)
	}
	errc := make(chan error, 1)
	go func() {
		bufs := [][]byte{make([]byte, 2000)}
		_, err := dev.Read(bufs, []int{0}, 0)
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	s.Close()
	s.Close() // idempotent
	if err := <-errc; !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Read after Close: %v, want os.ErrClosed", err)
	}
	if _, err := dev.Write([][]byte{{0x45}}, 0); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Write after Close: %v, want os.ErrClosed", err)
	}
	if _, err := s.DialContext(context.Background(), "tcp", netip.AddrPortFrom(addrB4, 1)); err == nil {
		t.Fatal("Dial after Close succeeded")
	}
}

func TestDialErrors(t *testing.T) {
	a, _ := newPair(t)
	ctx := ctxT(t)
	tests := []struct {
		name    string
		network string
		addr    netip.AddrPort
		want    error
	}{
		{"bad network", "sctp", netip.AddrPortFrom(addrB4, 1), ErrUnsupportedNetwork},
		{"family mismatch", "tcp6", netip.AddrPortFrom(addrB4, 1), ErrAddressFamily},
		{"invalid", "tcp", netip.AddrPort{}, ErrInvalidAddress},
		{"refused", "tcp", netip.AddrPortFrom(addrB4, 9), syscallECONNREFUSED},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := a.DialContext(ctx, tt.network, tt.addr)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

// echo serves ln, echoing each connection until it closes.
func echo(t *testing.T, ln net.Listener) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
}

func TestTCPEcho(t *testing.T) {
	for _, dst := range []netip.Addr{addrB4, addrB6} {
		t.Run(dst.String(), func(t *testing.T) {
			a, b := newPair(t)
			ln, err := b.ListenTCP(netip.AddrPortFrom(netip.Addr{}, 7))
			if err != nil {
				t.Fatal(err)
			}
			echo(t, ln)
			c, err := a.DialContext(ctxT(t), "tcp", netip.AddrPortFrom(dst, 7))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			msg := []byte("hello over the overlay")
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, msg) {
				t.Fatalf("echo = %q, want %q", got, msg)
			}
		})
	}
}

func TestHTTP(t *testing.T) {
	a, b := newPair(t)
	ln, err := b.ListenTCP(netip.AddrPortFrom(addrB6, 80))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hi "+r.URL.Path)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return a.DialContext(ctx, network, netip.MustParseAddrPort(addr))
	}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	for i := 0; i < 3; i++ {
		resp, err := client.Get("http://[" + addrB6.String() + "]/x")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "hi /x" {
			t.Fatalf("body = %q", body)
		}
	}
}

func TestUDP(t *testing.T) {
	a, b := newPair(t)
	srv, err := b.ListenUDP(netip.AddrPortFrom(addrB4, 53))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			srv.WriteTo(bytes.ToUpper(buf[:n]), from)
		}
	}()
	c, err := a.DialContext(ctxT(t), "udp", netip.AddrPortFrom(addrB4, 53))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if string(buf[:n]) != "PING" {
		t.Fatalf("got %q", buf[:n])
	}

	// ListenUDP on both ends, WriteTo with a netip-style address.
	pc, err := a.ListenUDP(netip.AddrPortFrom(addrA4, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	pc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := pc.WriteTo([]byte("pong"), net.UDPAddrFromAddrPort(netip.AddrPortFrom(addrB4, 53))); err != nil {
		t.Fatal(err)
	}
	n, from, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	if string(buf[:n]) != "PONG" || addrPortOf(from) != netip.AddrPortFrom(addrB4, 53) {
		t.Fatalf("got %q from %v", buf[:n], from)
	}
}

func TestLargeTransfer(t *testing.T) {
	a, b := newPair(t)
	ln, err := b.ListenTCP(netip.AddrPortFrom(addrB4, 9000))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const size = 16 << 20
	data := make([]byte, size)
	rand.Read(data)
	want := sha256.Sum256(data)
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	res := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			res <- result{err: err}
			return
		}
		defer c.Close()
		h := sha256.New()
		n, err := io.Copy(h, c)
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = n, err
		res <- r
	}()
	c, err := a.DialContext(ctxT(t), "tcp4", netip.AddrPortFrom(addrB4, 9000))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	c.Close()
	r := <-res
	if r.err != nil || r.n != size || r.sum != want {
		t.Fatalf("received %d bytes err=%v, match=%v", r.n, r.err, r.sum == want)
	}
	t.Logf("16 MiB in %v", time.Since(start))
}

func TestCloseAbortsConns(t *testing.T) {
	a, b := newPair(t)
	ln, err := b.ListenTCP(netip.AddrPortFrom(addrB4, 7))
	if err != nil {
		t.Fatal(err)
	}
	echo(t, ln)
	c, err := a.DialContext(ctxT(t), "tcp", netip.AddrPortFrom(addrB4, 7))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	errc := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 10))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	a.Close()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("Read succeeded after Close")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Read not unblocked by Close")
	}
}
