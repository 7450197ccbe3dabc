//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pion/turn/v5"

	"github.com/weft-net/weft"
	"github.com/weft-net/weft/internal/natlab"
)

// TestNATTraversal runs real weft daemons in network namespaces behind
// NAT routers (internal/natlab) with a public anchor, which is the
// bootstrap node, STUN server and rendezvous node, and a TURN server
// (pion/turn, in the test process, in the public namespace). Each case
// reaches an HTTP server exposed on one node from the other with curl
// through the SOCKS5 proxy, and checks the path with `weft ping`.
func TestNATTraversal(t *testing.T) {
	if testing.Short() {
		t.Skip("the NAT lab runs namespaces and daemons; skipped with -short")
	}
	natlab.Root(t)
	natlab.Need(t, "nft")
	curl := needCurl(t)
	weftBinary(t)

	lab := natlab.New(t, natlab.Options{Prefix: "weftnat"})
	inet := lab.Switch(t, "inet")
	pub := lab.Namespace(t, "pub")
	inet.Attach(t, natlab.End{NS: pub, Dev: "eth0", Addrs: []string{"203.0.113.1/24"}})
	const turnUser, turnPass = "weft", "lab-secret"
	turnAddr := startTURNServer(t, pub, "203.0.113.1:3478", turnUser, turnPass)
	turnFlag := fmt.Sprintf("turn:%s?user=%s&pass=%s", turnAddr, turnUser, turnPass)

	dir := t.TempDir()
	stPub := filepath.Join(dir, "pub")
	mustWeft(t, "init", "--state", stPub, "--name", "pub", "--endpoint", "203.0.113.1:41641")
	startTUNDaemon(t, pub, "pub", stPub, "--listen", "203.0.113.1:41641", "--dht-role", "server")

	type node struct {
		name, state string
		ns          *natlab.Namespace
	}
	start := func(r *natlab.Router, name string, ip netip.Addr, extra ...string) node {
		t.Helper()
		ns := r.Host(t, name, ip)
		st := filepath.Join(dir, name)
		tok := strings.TrimSpace(mustWeft(t, "invite", "--state", stPub, "--name", name).stdout)
		if res := weftIn(t, ns, "join", "--state", st, tok); res.code != 0 {
			t.Fatalf("join %s behind %v:\n%v", name, r, res)
		}
		ln, err := ns.Listen("tcp", "127.0.0.1:8000")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintf(w, "hello from %s\n", name)
		})}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		args := append([]string{"--listen", netip.AddrPortFrom(ip, 41641).String(), "--socks5", "127.0.0.1:1080",
			"--expose", "8080=127.0.0.1:8000"}, extra...)
		startTUNDaemon(t, ns, name, st, args...)
		return node{name: name, state: st, ns: ns}
	}
	router := func(short string, typ natlab.NATType, i int) *natlab.Router {
		return lab.Router(t, short, inet, natlab.RouterConfig{Type: typ,
			Public: netip.MustParsePrefix(fmt.Sprintf("203.0.113.%d/24", 10+i)),
			LAN:    netip.MustParsePrefix(fmt.Sprintf("10.0.%d.1/24", i))})
	}
	// reach fetches to's page from from's namespace through from's SOCKS5
	// proxy, then pings to and returns the first reply.
	reach := func(t *testing.T, from, to node) weft.PingResult {
		t.Helper()
		begin := time.Now()
		// A node that just came up may not be found in the DHT yet: try
		// again for a while.
		var r natlab.Result
		for try := 0; try < 4; try++ {
			r = from.ns.Run(t, 40*time.Second, curl, "-sS", "--max-time", "30", "--socks5-hostname", "127.0.0.1:1080",
				"http://"+to.name+":8080/")
			if r.Err == nil || !strings.Contains(r.Stderr, "(1)") {
				break
			}
			time.Sleep(2 * time.Second)
		}
		if r.Err != nil || !strings.Contains(r.Stdout, "hello from "+to.name) {
			t.Fatalf("curl from %s to %s through the overlay:\n%v", from.name, to.name, r)
		}
		t.Logf("%s -> %s: first HTTP response after %v", from.name, to.name, time.Since(begin).Round(time.Millisecond))
		res := runWeft(t, "", "ping", "--state", from.state, "-c", "2", "-i", "200ms", "--json", to.name)
		if res.code != 0 {
			t.Fatalf("weft ping %s from %s:\n%v", to.name, from.name, res)
		}
		var p weft.PingResult
		if err := json.NewDecoder(strings.NewReader(res.stdout)).Decode(&p); err != nil {
			t.Fatalf("weft ping --json: %v\n%s", err, res.stdout)
		}
		human := runWeft(t, "", "ping", "--state", from.state, "-c", "1", to.name)
		t.Logf("weft ping %s from %s:\n%s", to.name, from.name, human.stdout)
		return p
	}

	t.Run("port-restricted", func(t *testing.T) {
		a := start(router("rpa", natlab.PortRestricted, 1), "pra", netip.MustParseAddr("10.0.1.2"))
		b := start(router("rpb", natlab.PortRestricted, 2), "prb", netip.MustParseAddr("10.0.2.2"))
		p := reach(t, b, a)
		if p.Path != "direct" || !strings.Contains(p.Reason, "server-reflexive") {
			t.Errorf("port-restricted <-> port-restricted: path %q (%s); want direct, server-reflexive", p.Path, p.Reason)
		}
	})
	t.Run("symmetric", func(t *testing.T) {
		c := start(router("rsc", natlab.Symmetric, 3), "syc", netip.MustParseAddr("10.0.3.2"), "--turn", turnFlag)
		d := start(router("rsd", natlab.Symmetric, 4), "syd", netip.MustParseAddr("10.0.4.2"), "--turn", turnFlag)
		p := reach(t, d, c)
		if p.Path != "relay" {
			t.Errorf("symmetric <-> symmetric: path %q (%s); want relay", p.Path, p.Reason)
		}
		var st weft.Status
		if err := json.Unmarshal([]byte(mustWeft(t, "status", "--state", c.state, "--json").stdout), &st); err != nil {
			t.Fatal(err)
		}
		if len(st.Peers) == 0 || st.Peers[0].Path != "relay" {
			t.Errorf("status of %s: want its peer on a relay path: %+v", c.name, st.Peers)
		}
	})
	t.Run("same-LAN", func(t *testing.T) {
		r := router("rlan", natlab.PortRestricted, 5)
		e := start(r, "lane", netip.MustParseAddr("10.0.5.2"))
		f := start(r, "lanf", netip.MustParseAddr("10.0.5.3"))
		p := reach(t, f, e)
		if p.Path != "direct" || !netip.MustParsePrefix("10.0.5.0/24").Contains(p.Endpoint.Addr()) {
			t.Errorf("two nodes behind one NAT: path %q to %s (%s); want direct on the LAN", p.Path, p.Endpoint, p.Reason)
		}
	})
}

// startTURNServer runs a pion/turn server on addr in ns, with one
// long-term credential, until the test ends. It stands in for
// `weft up --relay` and for coturn.
func startTURNServer(t *testing.T, ns *natlab.Namespace, addr, user, pass string) netip.AddrPort {
	t.Helper()
	pc, err := ns.ListenPacket("udp4", addr)
	if err != nil {
		t.Fatalf("TURN server: %v", err)
	}
	ap := netip.MustParseAddrPort(addr)
	const realm = "weft-lab"
	key := turn.GenerateAuthKey(user, realm, pass)
	s, err := turn.NewServer(turn.ServerConfig{
		Realm: realm,
		AuthHandler: func(ra *turn.RequestAttributes) (string, []byte, bool) {
			return ra.Username, key, ra.Username == user
		},
		PacketConnConfigs: []turn.PacketConnConfig{{
			PacketConn:            pc,
			RelayAddressGenerator: nsRelayGenerator{ns: ns, ip: ap.Addr()},
		}},
	})
	if err != nil {
		t.Fatalf("TURN server: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return ap
}

// nsRelayGenerator allocates TURN relay sockets inside a namespace.
type nsRelayGenerator struct {
	ns *natlab.Namespace
	ip netip.Addr
}

func (g nsRelayGenerator) Validate() error { return nil }

func (g nsRelayGenerator) AllocatePacketConn(conf turn.AllocateListenerConfig) (net.PacketConn, net.Addr, error) {
	pc, err := g.ns.ListenPacket("udp4", net.JoinHostPort(g.ip.String(), fmt.Sprint(conf.RequestedPort)))
	if err != nil {
		return nil, nil, err
	}
	return pc, pc.LocalAddr(), nil
}

func (g nsRelayGenerator) AllocateListener(turn.AllocateListenerConfig) (net.Listener, net.Addr, error) {
	return nil, nil, fmt.Errorf("TCP relays are not supported here")
}

func (g nsRelayGenerator) AllocateConn(turn.AllocateConnConfig) (net.Conn, error) {
	return nil, fmt.Errorf("TCP relays are not supported here")
}
