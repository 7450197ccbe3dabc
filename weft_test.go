package weft_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/weft-net/weft"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// net/http's idle connection reaper of clients shared by tests.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	)
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("WEFT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

var loopback = netip.MustParseAddrPort("127.0.0.1:0")

// startNode starts the node in dir on a loopback port.
func startNode(t testing.TB, dir string) *weft.Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n, err := weft.Start(ctx, weft.Config{StateDir: dir, Listen: loopback, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("start node in %s: %v", dir, err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// testNet is an anchor and the members it admitted, all running.
type testNet struct {
	anchor *weft.Node
	dirs   map[string]string
	nodes  map[string]*weft.Node
}

// newTestNet creates a network whose anchor is named "anchor" and joins one
// node per name.
func newTestNet(t testing.TB, names ...string) *testNet {
	t.Helper()
	base := t.TempDir()
	tn := &testNet{dirs: map[string]string{}, nodes: map[string]*weft.Node{}}
	adir := filepath.Join(base, "anchor")
	if _, err := weft.Init(weft.InitOptions{StateDir: adir, Network: "test", Name: "anchor"}); err != nil {
		t.Fatalf("init: %v", err)
	}
	tn.anchor = startNode(t, adir)
	tn.dirs["anchor"], tn.nodes["anchor"] = adir, tn.anchor
	for _, name := range names {
		tn.join(t, name)
	}
	return tn
}

func (tn *testNet) join(t testing.TB, name string) *weft.Node {
	t.Helper()
	tok, err := tn.anchor.Invite(weft.InviteOptions{Name: name})
	if err != nil {
		t.Fatalf("invite: %v", err)
	}
	dir := filepath.Join(filepath.Dir(tn.dirs["anchor"]), name)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := weft.Join(ctx, weft.JoinOptions{StateDir: dir, Token: tok, Logger: testLogger(t)}); err != nil {
		t.Fatalf("join %s: %v", name, err)
	}
	n := startNode(t, dir)
	tn.dirs[name], tn.nodes[name] = dir, n
	return n
}

func httpClient(n *weft.Node) *http.Client {
	return &http.Client{
		Transport: &http.Transport{DialContext: n.Dial, DisableKeepAlives: true},
		Timeout:   30 * time.Second,
	}
}

// serveHTTP serves h on port 80 of n's overlay addresses until the test ends.
func serveHTTP(t testing.TB, n *weft.Node, h http.Handler) {
	t.Helper()
	ln, err := n.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

func TestHTTPByName(t *testing.T) {
	tn := newTestNet(t, "api", "client")
	serveHTTP(t, tn.nodes["api"], http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s from api", r.RemoteAddr)
	}))
	c := httpClient(tn.nodes["client"])
	cv4, cv6 := tn.nodes["client"].Addrs()
	av4, av6 := tn.nodes["api"].Addrs()
	for _, host := range []string{"api", "api.weft.internal", "API.weft.internal.", av4.String(), "[" + av6.String() + "]",
		tn.nodes["api"].NodeID().String() + ".id.weft.internal"} {
		t.Run(host, func(t *testing.T) {
			resp, err := c.Get("http://" + host + "/")
			if err != nil {
				t.Fatalf("GET via %s: %v", host, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !strings.HasPrefix(string(body), "hello ") || !strings.HasSuffix(string(body), " from api") {
				t.Fatalf("body = %q", body)
			}
			// The server sees the client's overlay address, never a spoof.
			remote := strings.TrimSuffix(strings.TrimPrefix(string(body), "hello "), " from api")
			ap, err := netip.ParseAddrPort(remote)
			if err != nil || (ap.Addr() != cv4 && ap.Addr() != cv6) {
				t.Fatalf("server saw client as %q, want %s or %s", remote, cv4, cv6)
			}
		})
	}
	st, err := tn.nodes["client"].Status()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Peers) != 1 || st.Peers[0].Name != "api" || st.Peers[0].Path != "direct" || st.Peers[0].LastHandshake.IsZero() || st.Peers[0].RxBytes == 0 {
		t.Fatalf("client status peers = %+v", st.Peers)
	}
}

func TestThreeNodes(t *testing.T) {
	tn := newTestNet(t, "a", "b", "c")
	for _, name := range []string{"anchor", "a", "b", "c"} {
		serveHTTP(t, tn.nodes[name], http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, name)
		}))
	}
	for from, n := range tn.nodes {
		c := httpClient(n)
		for to := range tn.nodes {
			if to == from {
				continue
			}
			resp, err := c.Get("http://" + to + "/")
			if err != nil {
				t.Fatalf("%s → %s: %v", from, to, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != to {
				t.Fatalf("%s → %s: body %q", from, to, body)
			}
		}
	}
}

func TestLargeTransfer(t *testing.T) {
	size := 64 << 20
	if testing.Short() {
		size = 8 << 20
	}
	tn := newTestNet(t, "src", "dst")
	data := make([]byte, size)
	rand.Read(data)
	want := sha256.Sum256(data)
	ln, err := tn.nodes["src"].Listen("tcp", ":9000")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write(data)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := tn.nodes["dst"].Dial(ctx, "tcp", "src:9000")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	h := sha256.New()
	start := time.Now()
	got, err := io.Copy(h, c)
	if err != nil {
		t.Fatalf("after %d bytes: %v", got, err)
	}
	if got != int64(size) || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatalf("received %d bytes, sha256 %x; want %d bytes, %x", got, h.Sum(nil), size, want)
	}
	t.Logf("%d MiB in %v (%.0f MB/s)", size>>20, time.Since(start), float64(size)/time.Since(start).Seconds()/1e6)
}

func TestUDP(t *testing.T) {
	tn := newTestNet(t, "echo", "client")
	pc, err := tn.nodes["echo"].ListenPacket("udp", ":5353")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := tn.nodes["client"].Dial(ctx, "udp", "echo:5353")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("echo = %q, %v", buf[:n], err)
	}
}

func TestResolveUnknown(t *testing.T) {
	tn := newTestNet(t, "client")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := tn.nodes["client"].Resolve(ctx, "nosuchnode")
	if err == nil || !strings.Contains(err.Error(), "no such node") {
		t.Fatalf("Resolve(nosuchnode) = %v, want not-found", err)
	}
	if _, err := tn.nodes["client"].Resolve(ctx, "bad_name!"); err == nil {
		t.Fatal("invalid name resolved")
	}
	if _, err := tn.nodes["client"].Dial(ctx, "tcp", "nosuchnode:80"); err == nil {
		t.Fatal("dial to unknown node succeeded")
	}
}

func TestCloseIdempotent(t *testing.T) {
	tn := newTestNet(t, "x")
	n := tn.nodes["x"]
	st, err := n.Status()
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := n.Dial(context.Background(), "tcp", "anchor:80"); err == nil {
		t.Fatal("Dial after Close succeeded")
	}
	if _, err := n.Status(); err == nil {
		t.Fatal("Status after Close succeeded")
	}
	if st.UAPI != "" { // root only: the wg socket must go with the node
		if _, err := os.Stat(filepath.Join("/var/run/wireguard", st.UAPI+".sock")); err == nil {
			t.Fatalf("UAPI socket of %s left behind after Close", st.UAPI)
		}
	}
}

func TestStartWithoutMembership(t *testing.T) {
	_, err := weft.Start(context.Background(), weft.Config{StateDir: t.TempDir(), Listen: loopback})
	if err != weft.ErrNotJoined {
		t.Fatalf("Start on empty dir = %v, want ErrNotJoined", err)
	}
}

var _ = net.Dial

// TestPeerRestart: a node that restarts on another port is reachable again
// at once: it reconnects to its previous peers, which learn its new session
// and endpoint.
func TestPeerRestart(t *testing.T) {
	tn := newTestNet(t, "svc", "client")
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "up") })
	serveHTTP(t, tn.nodes["svc"], handler)
	c := httpClient(tn.nodes["client"])
	get := func() error {
		resp, err := c.Get("http://svc/")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if string(b) != "up" {
			return fmt.Errorf("body %q", b)
		}
		return nil
	}
	if err := get(); err != nil {
		t.Fatal(err)
	}
	old := tn.nodes["svc"].LocalAddr()
	tn.nodes["svc"].Close()
	svc := startNode(t, tn.dirs["svc"])
	if svc.LocalAddr() == old {
		t.Logf("restarted on the same port %v", old)
	}
	serveHTTP(t, svc, handler)
	c.Timeout = 10 * time.Second
	start := time.Now()
	if err := get(); err != nil {
		cs, _ := tn.nodes["client"].Status()
		ss, _ := svc.Status()
		t.Fatalf("after restart: %v\nclient: %+v\nsvc: %+v", err, cs, ss)
	}
	t.Logf("reachable %v after restart", time.Since(start))
}

// TestIdlePeerRemoved: a peer that carries no traffic for the idle timeout
// is removed, and traffic sets it up again.
func TestIdlePeerRemoved(t *testing.T) {
	base := t.TempDir()
	adir := filepath.Join(base, "anchor")
	if _, err := weft.Init(weft.InitOptions{StateDir: adir, Name: "anchor"}); err != nil {
		t.Fatal(err)
	}
	start := func(dir string) *weft.Node {
		n, err := weft.Start(context.Background(), weft.Config{StateDir: dir, Listen: loopback, Logger: testLogger(t), IdleTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		return n
	}
	anchor := start(adir)
	tok, _ := anchor.Invite(weft.InviteOptions{Name: "idle"})
	cdir := filepath.Join(base, "idle")
	if _, err := weft.Join(context.Background(), weft.JoinOptions{StateDir: cdir, Token: tok, Logger: testLogger(t)}); err != nil {
		t.Fatal(err)
	}
	client := start(cdir)
	serveHTTP(t, anchor, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	c := httpClient(client)
	get := func() {
		t.Helper()
		resp, err := c.Get("http://anchor/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	get()
	peers := func(n *weft.Node) int {
		st, err := n.Status()
		if err != nil {
			t.Fatal(err)
		}
		return len(st.Peers)
	}
	if peers(client) != 1 {
		t.Fatal("no peer after traffic")
	}
	deadline := time.Now().Add(10 * time.Second)
	for peers(client) != 0 || peers(anchor) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("idle peers not removed: client %d, anchor %d", peers(client), peers(anchor))
		}
		time.Sleep(100 * time.Millisecond)
	}
	get() // set up again on demand
	if peers(client) != 1 {
		t.Fatal("peer not set up again after idling")
	}
}
