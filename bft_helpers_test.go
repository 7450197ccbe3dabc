package weft_test

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft"
	"github.com/weft-net/weft/nat"
	"github.com/weft-net/weft/trust"
)

// bftNet is a network of n anchors, each with its own key made in its own
// state directory (as on its own machine), listening on fixed loopback
// ports that the genesis names, plus the members that joined it.
type bftNet struct {
	base    string
	names   []string // anchor names, a0 … a(n-1)
	members []string // member names, in join order
	dirs    map[string]string
	ports   map[string]netip.AddrPort // anchors' listen addresses
	nodes   map[string]*weft.Node     // running nodes, by name
	genesis string
	thr     int
}

// freeUDPPorts returns k distinct loopback UDP addresses that were free a
// moment ago (all held open at once, so they differ).
func freeUDPPorts(t testing.TB, k int) []netip.AddrPort {
	t.Helper()
	var out []netip.AddrPort
	var conns []*net.UDPConn
	for range k {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		out = append(out, c.LocalAddr().(*net.UDPAddr).AddrPort())
	}
	for _, c := range conns {
		c.Close()
	}
	return out
}

// newBFTNet builds and starts an n-anchor network with the default
// threshold: keygen on each anchor, genesis assembled on a0 from the
// descriptors, installed on the others from the genesis token.
func newBFTNet(t testing.TB, n int) *bftNet {
	t.Helper()
	bn := &bftNet{base: t.TempDir(), dirs: map[string]string{}, ports: map[string]netip.AddrPort{}, nodes: map[string]*weft.Node{}}
	ports := freeUDPPorts(t, n)
	var descs []string
	for i := range n {
		name := fmt.Sprintf("a%d", i)
		dir := filepath.Join(bn.base, name)
		d, err := weft.Keygen(dir, name, []netip.AddrPort{ports[i]})
		if err != nil {
			t.Fatalf("keygen %s: %v", name, err)
		}
		if !strings.HasPrefix(d, "weft-anchor1-") {
			t.Fatalf("keygen %s: descriptor %q", name, d)
		}
		bn.names = append(bn.names, name)
		bn.dirs[name], bn.ports[name] = dir, ports[i]
		descs = append(descs, d)
	}
	m, err := weft.Init(weft.InitOptions{StateDir: bn.dirs["a0"], Network: "bft", Anchors: descs})
	if err != nil {
		t.Fatalf("init: %v", err)
	}
	if !m.Anchor || !strings.HasPrefix(m.Genesis, "weft-genesis1-") {
		t.Fatalf("init membership = %+v", m)
	}
	bn.genesis = m.Genesis
	for _, name := range bn.names[1:] {
		mm, err := weft.InitFromGenesis(bn.dirs[name], m.Genesis)
		if err != nil {
			t.Fatalf("init %s from genesis: %v", name, err)
		}
		if !mm.Anchor || mm.NetworkID != m.NetworkID || mm.Name != name {
			t.Fatalf("%s membership = %+v, want anchor %s of %s", name, mm, name, m.NetworkID)
		}
	}
	for _, name := range bn.names {
		bn.startAnchor(t, name)
	}
	bn.thr = bn.nodes["a0"].Trust().Threshold
	if want := 2*n/3 + 1; bn.thr != want {
		t.Fatalf("threshold of %d anchors = %d, want the default %d", n, bn.thr, want)
	}
	return bn
}

// startAt starts the node in dir listening on listen.
func startAt(t testing.TB, dir string, listen netip.AddrPort) *weft.Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n, err := weft.Start(ctx, weft.Config{StateDir: dir, Listen: listen, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("start node in %s: %v", dir, err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func (bn *bftNet) startAnchor(t testing.TB, name string) *weft.Node {
	t.Helper()
	n := startAt(t, bn.dirs[name], bn.ports[name])
	bn.nodes[name] = n
	return n
}

// stop closes a running node.
func (bn *bftNet) stop(t testing.TB, name string) {
	t.Helper()
	if err := bn.nodes[name].Close(); err != nil {
		t.Fatal(err)
	}
	delete(bn.nodes, name)
}

// anchorNodes lists the anchors' nodes that run.
func (bn *bftNet) anchorNodes() []*weft.Node {
	var out []*weft.Node
	for _, name := range bn.names {
		if n, ok := bn.nodes[name]; ok {
			out = append(out, n)
		}
	}
	return out
}

// invite issues an invite on the anchors from first (in name order,
// wrapping) carrying exactly k endorsements: one by the issuer and k-1
// co-signatures. k = 0 strips the issuer's endorsement.
func (bn *bftNet) invite(t testing.TB, first, k int, opts weft.InviteOptions) string {
	t.Helper()
	n := len(bn.names)
	tok, err := bn.nodes[bn.names[first%n]].Invite(opts)
	if err != nil {
		t.Fatalf("invite on %s: %v", bn.names[first%n], err)
	}
	for i := 1; i < k; i++ {
		name := bn.names[(first+i)%n]
		if tok, err = bn.nodes[name].CosignInvite(tok); err != nil {
			t.Fatalf("cosign invite on %s: %v", name, err)
		}
	}
	inv, err := trust.ParseInvite(tok)
	if err != nil {
		t.Fatal(err)
	}
	if k == 0 {
		inv.Endorsements = nil
		tok = inv.Encode()
	} else if len(inv.Endorsements) != k {
		t.Fatalf("invite carries %d endorsements, want %d", len(inv.Endorsements), k)
	}
	return tok
}

// join joins name with tok and starts it on a loopback port.
func (bn *bftNet) join(t testing.TB, name, tok string) *weft.Node {
	t.Helper()
	dir := filepath.Join(bn.base, name)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m, err := weft.Join(ctx, weft.JoinOptions{StateDir: dir, Token: tok, Name: name, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("join %s: %v", name, err)
	}
	if m.Name != name || !m.IPv4.IsValid() || m.Anchor {
		t.Fatalf("join %s: membership %+v", name, m)
	}
	bn.dirs[name] = dir
	bn.members = append(bn.members, name)
	n := startAt(t, dir, loopback)
	bn.nodes[name] = n
	return n
}

// each calls f for every running node, anchors first.
func (bn *bftNet) each(f func(name string, n *weft.Node)) {
	for _, name := range bn.names {
		if n, ok := bn.nodes[name]; ok {
			f(name, n)
		}
	}
	for _, name := range bn.members {
		if n, ok := bn.nodes[name]; ok {
			f(name, n)
		}
	}
}

// poll calls cond until it returns nil, failing the test with its last
// error once timeout has passed.
func poll(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// serveName serves n's name on port 80 of its overlay addresses.
func serveName(t testing.TB, n *weft.Node) {
	t.Helper()
	name := n.Name()
	serveHTTP(t, n, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) }))
}

// getBody fetches url with c and returns the body.
func getBody(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// expectName checks that GET http://host/ from n answers host's name.
func expectName(t testing.TB, n *weft.Node, host string) {
	t.Helper()
	c := httpClient(n)
	c.Timeout = 15 * time.Second
	body, err := getBody(c, "http://"+host+"/")
	if err != nil || body != host {
		t.Fatalf("%s → http://%s/: %q, %v", n.Name(), host, body, err)
	}
}

// askJoin sends a join request with tok straight to anchor a, bypassing
// Join's own checks, and returns the anchor's verdict.
func askJoin(t *testing.T, r *rogue, a *weft.Node, tok, name string) error {
	t.Helper()
	req, err := trust.NewJoinRequest(tok, r.id, name, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	body, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	out, err := r.conn.Call(ctxT(t), r.peerOf(t, a), nat.MsgJoin, body)
	if err != nil {
		t.Fatalf("join request to %s: %v", a.Name(), err)
	}
	resp, err := trust.UnmarshalJoinResponse(out)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Err()
}

// uapiPeerKeys lists the public keys of the WireGuard peers that the UAPI
// socket name reports (`wg show NAME peers`).
func uapiPeerKeys(name string) (map[[32]byte]bool, error) {
	c, err := net.DialTimeout("unix", filepath.Join("/var/run/wireguard", name+".sock"), 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "get=1\n\n"); err != nil {
		return nil, err
	}
	keys := map[[32]byte]bool{}
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			return keys, nil
		}
		if v, ok := strings.CutPrefix(line, "errno="); ok && v != "0" {
			return nil, fmt.Errorf("uapi get: errno %s", v)
		}
		if v, ok := strings.CutPrefix(line, "public_key="); ok {
			b, err := hex.DecodeString(v)
			if err != nil || len(b) != 32 {
				return nil, fmt.Errorf("uapi get: bad key %q", v)
			}
			keys[[32]byte(b)] = true
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, errors.New("uapi get: no end of answer")
}

// copyDir copies the regular files under src to dst.
func copyDir(t testing.TB, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o700)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func wgKeyOf(t testing.TB, dir string) [32]byte {
	t.Helper()
	id, err := trust.LoadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	return id.WGPublic()
}
