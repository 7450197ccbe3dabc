package netstack

import (
	"bufio"
	"bytes"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"testing"
)

func FuzzSOCKS5Request(f *testing.F) {
	f.Add(socksRequest{Cmd: 1, Atyp: socksAtypIPv4, Host: "100.64.0.2", Port: 80}.marshal())
	f.Add(socksRequest{Cmd: 1, Atyp: socksAtypIPv6, Host: "fd00::1", Port: 22}.marshal())
	f.Add(socksRequest{Cmd: 1, Atyp: socksAtypDomain, Host: "api.weft.internal", Port: 443}.marshal())
	f.Add([]byte{5, 1, 0, 3, 0, 0, 80})
	f.Add([]byte{5, 2, 0, 9})
	f.Fuzz(func(t *testing.T, b []byte) {
		req, _, err := readSOCKSRequest(bytes.NewReader(b))
		if err != nil {
			return
		}
		again, _, err := readSOCKSRequest(bytes.NewReader(req.marshal()))
		if err != nil || !reflect.DeepEqual(req, again) {
			t.Fatalf("round trip %+v -> %+v, %v", req, again, err)
		}
		if _, _, err := net.SplitHostPort(req.Address()); err != nil {
			t.Fatalf("Address %q: %v", req.Address(), err)
		}
	})
}

func FuzzSOCKS5Greeting(f *testing.F) {
	f.Add([]byte{5, 1, 0})
	f.Add([]byte{5, 2, 1, 2})
	f.Add([]byte{4, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		readSOCKSGreeting(bytes.NewReader(b))
	})
}

func FuzzHTTPProxyRequest(f *testing.F) {
	f.Add([]byte("CONNECT api:443 HTTP/1.1\r\nHost: api:443\r\n\r\n"))
	f.Add([]byte("GET http://api.weft.internal/x HTTP/1.1\r\nHost: api\r\nConnection: close, X-Foo\r\nX-Foo: 1\r\n\r\n"))
	f.Add([]byte("GET /x HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(b)))
		if err != nil {
			return
		}
		removeHopHeaders(req.Header)
		if req.Header.Get("Connection") != "" || req.Header.Get("Proxy-Connection") != "" {
			t.Fatal("hop-by-hop header survived")
		}
		target, err := proxyTarget(req)
		if err != nil {
			return
		}
		host, port, err := net.SplitHostPort(target)
		if err != nil || host == "" {
			t.Fatalf("target %q: %v", target, err)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			t.Fatalf("target %q: bad port", target)
		}
	})
}
