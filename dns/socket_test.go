package dns_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/weft-net/weft/dns"
)

// started returns a server listening on 127.0.0.1 (UDP and TCP).
func started(t *testing.T) *env {
	t.Helper()
	e := newEnv(t, func(c *dns.Config) { c.Now = nil })
	if err := e.srv.Start(netip.MustParseAddrPort("127.0.0.1:0")); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestServeSockets(t *testing.T) {
	e := started(t)
	ap := e.srv.Addr()
	if !ap.IsValid() || ap.Port() == 0 {
		t.Fatalf("Addr %v", ap)
	}
	for _, network := range []string{"udp", "tcp"} {
		c := &mdns.Client{Net: network, Timeout: 2 * time.Second}
		r, _, err := c.Exchange(question("api.weft.internal.", mdns.TypeAAAA), ap.String())
		if err != nil {
			t.Fatalf("%s: %v", network, err)
		}
		if len(r.Answer) != 1 || r.Answer[0].(*mdns.AAAA).AAAA.String() != "fd12:3456:789a::a" {
			t.Errorf("%s: got %v", network, r)
		}
	}
	// Several queries on one TCP connection.
	c := &mdns.Client{Net: "tcp", Timeout: 2 * time.Second}
	conn, err := c.Dial(ap.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"api", "db", "nope"} {
		r, _, err := c.ExchangeWithConn(question(name+".weft.internal.", mdns.TypeA), conn)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if (name == "nope") != (r.Rcode == mdns.RcodeNameError) {
			t.Errorf("%s: %v", name, r)
		}
	}
	// Close ends the open TCP connection too, and is idempotent.
	if err := e.srv.Close(); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.ReadMsg(); err == nil {
		t.Error("TCP connection still open after Close")
	}
	conn.Close()
	e.srv.Close()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if err := e.srv.ServeUDP(pc); !errors.Is(err, dns.ErrClosed) {
		t.Errorf("ServeUDP after Close: %v", err)
	}
	if err := e.srv.Start(netip.MustParseAddrPort("127.0.0.1:0")); !errors.Is(err, dns.ErrClosed) {
		t.Errorf("Start after Close: %v", err)
	}
}

func TestListenAndServeReturnsOnClose(t *testing.T) {
	e := newEnv(t, nil)
	done := make(chan error, 1)
	go func() { done <- e.srv.ListenAndServe(netip.MustParseAddrPort("127.0.0.1:0")) }()
	deadline := time.Now().Add(5 * time.Second)
	for !e.srv.Addr().IsValid() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	e.srv.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ListenAndServe: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ListenAndServe did not return after Close")
	}
}

func TestDig(t *testing.T) {
	const dig = "/usr/bin/dig"
	if _, err := os.Stat(dig); err != nil {
		t.Skipf("skipping: %s not installed (apt-get install bind9-dnsutils to run it)", dig)
	}
	e := started(t)
	port := strconv.Itoa(int(e.srv.Addr().Port()))
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"api.weft.internal", "A"}, "100.64.0.10"},
		{[]string{"API.weft.internal", "AAAA", "+tcp"}, "fd12:3456:789a::a"},
		{[]string{dns.IDName(apiID, "weft.internal"), "A", "+edns=0", "+bufsize=1232"}, "100.64.0.10"},
		{[]string{"-x", "100.64.0.10"}, "api.weft.internal."},
		{[]string{"-x", "fd12:3456:789a::a"}, "api.weft.internal."},
		{[]string{"weft.internal", "SOA"}, "weft.internal. hostmaster.weft.internal. 1 3600 600 86400 5"},
	}
	for _, tt := range tests {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		args := append([]string{"@127.0.0.1", "-p", port, "+short", "+time=2", "+tries=1"}, tt.args...)
		out, err := exec.CommandContext(ctx, dig, args...).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("dig %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		if got := strings.TrimSpace(string(out)); got != tt.want {
			t.Errorf("dig %s = %q, want %q", strings.Join(args, " "), got, tt.want)
		}
	}
	// NXDOMAIN shows in the full output.
	out, err := exec.Command(dig, "@127.0.0.1", "-p", port, "+time=2", "+tries=1", "nope.weft.internal").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "status: NXDOMAIN") {
		t.Errorf("dig nope.weft.internal: %v\n%s", err, out)
	}
}

func TestLoad(t *testing.T) {
	e := started(t)
	res, err := dns.Load(context.Background(), e.srv.Addr(), []string{"api.weft.internal", "db.weft.internal"}, 4, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if res.Queries == 0 || res.Errors != 0 || res.QPS <= 0 || res.P50 <= 0 || res.P99 < res.P50 {
		t.Errorf("result %+v", res)
	}
	t.Logf("%d queries, %.0f qps, p50 %v, p99 %v", res.Queries, res.QPS, res.P50, res.P99)
	res, err = dns.Load(context.Background(), e.srv.Addr(), []string{"nope.weft.internal"}, 1, 100*time.Millisecond)
	if err != nil || res.Errors == 0 || res.Queries != 0 {
		t.Errorf("NXDOMAIN load: %+v %v", res, err)
	}
	if _, err := dns.Load(context.Background(), e.srv.Addr(), nil, 1, time.Second); err == nil {
		t.Error("Load without names succeeded")
	}
}
