package netstack

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/net/proxy"
)

// overlayDial resolves the test's overlay names ("b", "b.weft.internal")
// and dials through s, like the node's resolver+dialer would.
func overlayDial(s *Stack) DialFunc {
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(address)
		if err != nil {
			return nil, err
		}
		var ip netip.Addr
		switch strings.TrimSuffix(host, ".weft.internal") {
		case "b":
			ip = addrB4
		default:
			if ip, err = netip.ParseAddr(host); err != nil {
				return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
			}
		}
		ap, err := netip.ParseAddrPort(net.JoinHostPort(ip.String(), port))
		if err != nil {
			return nil, err
		}
		return s.DialContext(ctx, network, ap)
	}
}

// serveHTTPOn runs an HTTP server on an overlay listener of b.
func serveHTTPOn(t *testing.T, b *Stack, port uint16) {
	ln, err := b.ListenTCP(netip.AddrPortFrom(netip.Addr{}, port))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s %s", r.Host, r.URL.Path)
	})}
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }()
	t.Cleanup(func() { srv.Close(); <-done })
}

// loopback returns a loopback listener.
func loopback(t *testing.T) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func startSOCKS(t *testing.T, dial DialFunc) string {
	p := &SOCKS5Server{Dial: dial}
	ln := loopback(t)
	done := make(chan error, 1)
	go func() { done <- p.Serve(ln) }()
	t.Cleanup(func() {
		p.Close()
		if err := <-done; !errors.Is(err, ErrProxyClosed) {
			t.Errorf("Serve = %v, want ErrProxyClosed", err)
		}
	})
	return ln.Addr().String()
}

func TestSOCKS5(t *testing.T) {
	a, b := newPair(t)
	serveHTTPOn(t, b, 80)
	addr := startSOCKS(t, overlayDial(a))
	d, err := proxy.SOCKS5("tcp", addr, nil, proxy.Direct)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{DialContext: d.(proxy.ContextDialer).DialContext}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	for _, u := range []string{"http://b/x", "http://b.weft.internal/y", "http://100.64.0.2/z"} {
		resp, err := client.Get(u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.HasPrefix(string(body), "hello ") {
			t.Fatalf("GET %s: body %q", u, body)
		}
	}
	// Dial errors map to reply codes; x/net/proxy reports them as text.
	for _, tc := range []struct{ addr, want string }{
		{"b:81", "connection refused"},
		{"nosuch:80", "host unreachable"},
	} {
		_, err := d.Dial("tcp", tc.addr)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Dial %s: %v, want %q", tc.addr, err, tc.want)
		}
	}
}

func TestSOCKS5Raw(t *testing.T) {
	dial := func(ctx context.Context, network, address string) (net.Conn, error) {
		return nil, errors.New("unused")
	}
	addr := startSOCKS(t, dial)
	tests := []struct {
		name  string
		send  []byte
		reply []byte
	}{
		{"no acceptable method", []byte{5, 1, 2}, []byte{5, 0xff}},
		{"bind unsupported", append([]byte{5, 1, 0}, socksRequest{Cmd: 2, Atyp: socksAtypIPv4, Host: "1.2.3.4", Port: 1}.marshal()...),
			append([]byte{5, 0}, socksReply(socksCommandNotSupported, netip.AddrPort{})...)},
		{"bad atyp", []byte{5, 1, 0, 5, 1, 0, 9}, append([]byte{5, 0}, socksReply(socksAddrNotSupported, netip.AddrPort{})...)},
		{"general failure", append([]byte{5, 1, 0}, socksRequest{Cmd: 1, Atyp: socksAtypDomain, Host: "x", Port: 1}.marshal()...),
			append([]byte{5, 0}, socksReply(socksGeneralFailure, netip.AddrPort{})...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write(tt.send)
			got, _ := io.ReadAll(c)
			if !bytes.Equal(got, tt.reply) {
				t.Fatalf("reply %x, want %x", got, tt.reply)
			}
		})
	}
}

func TestSOCKSReplyCode(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want byte
	}{
		{"refused", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, socksConnectionRefused},
		{"host unreachable", fmt.Errorf("x: %w", syscall.EHOSTUNREACH), socksHostUnreachable},
		{"net unreachable", syscall.ENETUNREACH, socksNetworkUnreachable},
		{"dns", &net.DNSError{Name: "x", IsNotFound: true}, socksHostUnreachable},
		{"timeout", context.DeadlineExceeded, socksHostUnreachable},
		{"other", errors.New("boom"), socksGeneralFailure},
	}
	for _, tt := range tests {
		if got := socksReplyCode(tt.err); got != tt.want {
			t.Errorf("%s: code %#x, want %#x", tt.name, got, tt.want)
		}
	}
}

func startHTTPProxy(t *testing.T, dial DialFunc) *url.URL {
	p := &HTTPProxy{Dial: dial}
	ln := loopback(t)
	done := make(chan error, 1)
	go func() { done <- p.Serve(ln) }()
	t.Cleanup(func() {
		p.Close()
		if err := <-done; !errors.Is(err, ErrProxyClosed) {
			t.Errorf("Serve = %v, want ErrProxyClosed", err)
		}
	})
	return &url.URL{Scheme: "http", Host: ln.Addr().String()}
}

func TestHTTPProxy(t *testing.T) {
	a, b := newPair(t)
	serveHTTPOn(t, b, 80)
	pu := startHTTPProxy(t, overlayDial(a))

	// Plain absolute-URI forwarding, with keep-alive.
	tr := &http.Transport{Proxy: http.ProxyURL(pu)}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	for _, u := range []string{"http://b/x", "http://b.weft.internal/y", "http://b/z"} {
		resp, err := client.Get(u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "hello ") {
			t.Fatalf("GET %s: %d %q", u, resp.StatusCode, body)
		}
	}
	resp, err := client.Get("http://b:81/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("refused target: status %d, want 502", resp.StatusCode)
	}

	// CONNECT tunnel to an overlay echo server.
	ln, err := b.ListenTCP(netip.AddrPortFrom(addrB4, 7))
	if err != nil {
		t.Fatal(err)
	}
	echo(t, ln)
	c, err := net.Dial("tcp", pu.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "CONNECT b:7 HTTP/1.1\r\nHost: b:7\r\n\r\nearly")
	br := bufio.NewReader(c)
	cresp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || cresp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", cresp, err)
	}
	c.Write([]byte(" data"))
	c.(*net.TCPConn).CloseWrite()
	got, _ := io.ReadAll(br)
	if string(got) != "early data" {
		t.Fatalf("tunnel echo %q", got)
	}
}

func TestProxyTarget(t *testing.T) {
	tests := []struct {
		raw  string
		want string
	}{
		{"CONNECT api:443 HTTP/1.1\r\nHost: api:443\r\n\r\n", "api:443"},
		{"CONNECT [fd00::1]:22 HTTP/1.1\r\n\r\n", "[fd00::1]:22"},
		{"GET http://api.weft.internal/x HTTP/1.1\r\nHost: api.weft.internal\r\n\r\n", "api.weft.internal:80"},
		{"GET http://api:8080/x HTTP/1.1\r\n\r\n", "api:8080"},
		{"GET /x HTTP/1.1\r\nHost: api\r\n\r\n", ""},
		{"GET https://api/x HTTP/1.1\r\n\r\n", ""},
		{"CONNECT api HTTP/1.1\r\n\r\n", ""},
		{"CONNECT api:0 HTTP/1.1\r\n\r\n", ""},
	}
	for _, tt := range tests {
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(tt.raw)))
		if err != nil {
			t.Fatalf("%q: %v", tt.raw, err)
		}
		got, err := proxyTarget(req)
		if tt.want == "" {
			if !errors.Is(err, ErrBadProxyRequest) {
				t.Errorf("%q: got %q, %v; want ErrBadProxyRequest", tt.raw, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%q: got %q, %v; want %q", tt.raw, got, err, tt.want)
		}
	}
}

func TestExpose(t *testing.T) {
	a, b := newPair(t)
	// A local TCP service that answers after the client half-closes.
	local := loopback(t)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := local.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		in, _ := io.ReadAll(c)
		c.Write(bytes.ToUpper(in))
	}()
	defer func() { local.Close(); wg.Wait() }()

	oln, err := b.ListenTCP(netip.AddrPortFrom(addrB6, 8080))
	if err != nil {
		t.Fatal(err)
	}
	e := &Expose{Listener: oln, Target: local.Addr().String()}
	done := make(chan error, 1)
	go func() { done <- e.Serve() }()
	defer func() {
		e.Close()
		if err := <-done; !errors.Is(err, ErrProxyClosed) {
			t.Errorf("Serve = %v", err)
		}
	}()
	c, err := a.DialContext(ctxT(t), "tcp", netip.AddrPortFrom(addrB6, 8080))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("half close works"))
	c.(closeWriter).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "HALF CLOSE WORKS" {
		t.Fatalf("got %q, %v", got, err)
	}
}

// TestProxyCloseActive checks that Close tears down an active tunnel and
// waits for its goroutines.
func TestProxyCloseActive(t *testing.T) {
	a, b := newPair(t)
	ln, err := b.ListenTCP(netip.AddrPortFrom(addrB4, 7))
	if err != nil {
		t.Fatal(err)
	}
	echo(t, ln)
	p := &SOCKS5Server{Dial: overlayDial(a)}
	pl := loopback(t)
	done := make(chan error, 1)
	go func() { done <- p.Serve(pl) }()
	d, _ := proxy.SOCKS5("tcp", pl.Addr().String(), nil, proxy.Direct)
	c, err := d.Dial("tcp", "b:7")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p.Close()
	if err := <-done; !errors.Is(err, ErrProxyClosed) {
		t.Fatalf("Serve = %v", err)
	}
	if _, err := io.ReadAll(c); err != nil {
		t.Logf("read after close: %v", err)
	}
}
