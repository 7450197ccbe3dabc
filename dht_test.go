package weft_test

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/weft-net/weft"
	"github.com/weft-net/weft/addr"
	"github.com/weft-net/weft/dht"
	"github.com/weft-net/weft/trust"
)

// dhtNet is a one-anchor network whose nodes each listen on their own
// loopback address (127.0.x.y), as on their own hosts: the anchor is the
// only bootstrap node, and records live in the DHT.
type dhtNet struct {
	base  string
	cfg   func(name string, c *weft.Config) // per-node tweaks
	names []string                          // anchor first, then members in join order
	dirs  map[string]string
	nodes map[string]*weft.Node
	ips   map[string]netip.Addr
	next  int // next loopback host number
}

// newDHTNet starts the anchor and members m1 … m(members).
func newDHTNet(t testing.TB, members int, cfg func(name string, c *weft.Config)) *dhtNet {
	t.Helper()
	dn := &dhtNet{base: t.TempDir(), cfg: cfg, dirs: map[string]string{}, nodes: map[string]*weft.Node{}, ips: map[string]netip.Addr{}, next: 1}
	adir := filepath.Join(dn.base, "anchor")
	if _, err := weft.Init(weft.InitOptions{StateDir: adir, Network: "dht", Name: "anchor"}); err != nil {
		t.Fatal(err)
	}
	dn.dirs["anchor"] = adir
	dn.names = append(dn.names, "anchor")
	dn.start(t, "anchor")
	for i := 1; i <= members; i++ {
		dn.join(t, fmt.Sprintf("m%d", i))
	}
	return dn
}

// ip hands out the next loopback address of this network's /16.
func (dn *dhtNet) ip() netip.Addr {
	dn.next++
	return netip.AddrFrom4([4]byte{127, 77, byte(dn.next >> 8), byte(dn.next)})
}

// start (re)starts name's node on a fresh loopback address.
func (dn *dhtNet) start(t testing.TB, name string) *weft.Node {
	t.Helper()
	ip := dn.ip()
	c := weft.Config{StateDir: dn.dirs[name], Listen: netip.AddrPortFrom(ip, 0), Logger: testLogger(t)}
	if dn.cfg != nil {
		dn.cfg(name, &c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n, err := weft.Start(ctx, c)
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() { n.Close() })
	dn.nodes[name], dn.ips[name] = n, ip
	return n
}

func (dn *dhtNet) join(t testing.TB, name string) *weft.Node {
	t.Helper()
	tok, err := dn.nodes["anchor"].Invite(weft.InviteOptions{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(dn.base, name)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := weft.Join(ctx, weft.JoinOptions{StateDir: dir, Token: tok, Logger: testLogger(t)}); err != nil {
		t.Fatalf("join %s: %v", name, err)
	}
	dn.dirs[name] = dir
	dn.names = append(dn.names, name)
	return dn.start(t, name)
}

// stop closes name's node.
func (dn *dhtNet) stop(t testing.TB, name string) {
	t.Helper()
	if err := dn.nodes[name].Close(); err != nil {
		t.Fatal(err)
	}
	delete(dn.nodes, name)
}

// running lists the names of running nodes, in join order.
func (dn *dhtNet) running() []string {
	var out []string
	for _, name := range dn.names {
		if _, ok := dn.nodes[name]; ok {
			out = append(out, name)
		}
	}
	return out
}

// resolveAll has every running node resolve every other running node's
// name, in parallel per node, and checks the answers.
func (dn *dhtNet) resolveAll(t testing.TB) {
	t.Helper()
	names := dn.running()
	var wg sync.WaitGroup
	errs := make(chan error, len(names)*len(names))
	for _, from := range names {
		wg.Go(func() {
			n := dn.nodes[from]
			for _, to := range names {
				if to == from {
					continue
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				p, err := n.Resolve(ctx, to)
				cancel()
				switch {
				case err != nil:
					errs <- fmt.Errorf("%s resolving %s: %w", from, to, err)
				case p.NodeID != dn.nodes[to].NodeID():
					errs <- fmt.Errorf("%s resolved %s to node %s, want %s", from, to, p.NodeID.Short(), dn.nodes[to].NodeID().Short())
				}
			}
		})
	}
	waitErrs(t, &wg, errs)
}

// dialRing has node i fetch http://<node i+step>/ for every running node,
// in parallel: tunnels formed on demand from DHT lookups.
func (dn *dhtNet) dialRing(t testing.TB, names []string, step int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(names))
	for i, from := range names {
		to := names[(i+step)%len(names)]
		wg.Go(func() {
			c := httpClient(dn.nodes[from])
			c.Timeout = 20 * time.Second
			body, err := getBody(c, "http://"+to+"/")
			if err != nil || body != to {
				errs <- fmt.Errorf("%s → http://%s/: %q, %v", from, to, body, err)
			}
		})
	}
	waitErrs(t, &wg, errs)
}

// waitErrs waits for wg, then fails t with each error the goroutines sent
// to errs, and stops the test if it has failed.
func waitErrs(t testing.TB, wg *sync.WaitGroup, errs chan error) {
	t.Helper()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
}

// TestDHTNetwork: 20 nodes (anchor + 19 members) join through the anchor,
// the only bootstrap node; every name resolves from every node and tunnels
// form on demand. Then the anchor goes away: names still resolve, through
// the DHT (the lookup cache is off), and tunnels form between nodes that
// had not talked. A node that restarts on another address is found there
// by nodes that knew its old record. Under -short, 8 nodes.
func TestDHTNetwork(t *testing.T) {
	members := 19
	if testing.Short() {
		members = 7
	}
	start := time.Now()
	dn := newDHTNet(t, members, func(name string, c *weft.Config) {
		c.LookupCache = -1 // every Resolve is a DHT Get
		c.DHTReplication = 5
		c.RepublishInterval = 2 * time.Second
	})
	t.Logf("%d nodes up in %v", len(dn.nodes), time.Since(start))
	for _, n := range dn.nodes {
		serveName(t, n)
	}
	// Records are on the k closest nodes to their keys, not only on the
	// bootstrap node: the k=5 nodes closest to the last node's name key
	// all hold its record.
	last := dn.names[len(dn.names)-1]
	key := dht.NameKey(last)
	byDist := dn.running()
	slices.SortFunc(byDist, func(a, b string) int {
		return dht.CompareDistance(key, dht.NodeKey(dn.nodes[a].NodeID()), dht.NodeKey(dn.nodes[b].NodeID()))
	})
	for _, name := range byDist[:5] {
		recs, err := dn.nodes[name].DHTRecords()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(recs, func(r weft.DHTRecord) bool { return r.Key == key }) {
			t.Errorf("%s, among the 5 nodes closest to %s's name key, does not hold its record", name, last)
		}
	}
	phase := time.Now()
	dn.resolveAll(t)
	t.Logf("every name resolved from every node in %v", time.Since(phase))

	st, err := dn.nodes["m1"].DHT()
	if err != nil {
		t.Fatal(err)
	}
	if st.Role != weft.DHTRoleServer || len(st.Contacts) < 4 {
		t.Errorf("m1's DHT: role %s, %d contacts; want a server with a filled table", st.Role, len(st.Contacts))
	}

	phase = time.Now()
	dn.dialRing(t, dn.running(), 1)
	t.Logf("%d tunnels formed in %v", len(dn.nodes), time.Since(phase))

	// The bootstrap node goes away.
	dn.stop(t, "anchor")
	phase = time.Now()
	dn.resolveAll(t)
	t.Logf("without the bootstrap node: every name resolved in %v", time.Since(phase))
	phase = time.Now()
	dn.dialRing(t, dn.running(), 2) // pairs that had not talked
	t.Logf("without the bootstrap node: %d new tunnels in %v", len(dn.nodes), time.Since(phase))

	// m3 restarts on another address; its bootstrap is gone, so it rejoins
	// through the DHT contacts it saved. m6 knew its old record (phase 1)
	// but never had a tunnel with it.
	old := dn.nodes["m3"].LocalAddr()
	dn.stop(t, "m3")
	m3 := dn.start(t, "m3")
	serveName(t, m3)
	if m3.LocalAddr().Addr() == old.Addr() {
		t.Fatalf("m3 restarted on the same address %v", old)
	}
	phase = time.Now()
	poll(t, 15*time.Second, "m6 finds m3 at its new address", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p, err := dn.nodes["m6"].Resolve(ctx, "m3")
		if err != nil {
			return err
		}
		if len(p.Endpoints) == 0 || p.Endpoints[0] != m3.LocalAddr() {
			return fmt.Errorf("m3's record names %v, want %v", p.Endpoints, m3.LocalAddr())
		}
		return nil
	})
	expectName(t, dn.nodes["m6"], "m3")
	t.Logf("restarted m3 found at %v and reached in %v", m3.LocalAddr(), time.Since(phase))
	t.Logf("total %v", time.Since(start))
}

// TestDHTLookupTrace: a traced lookup names the record and the requests
// it took; an unknown name is reported as not found, not as an error.
func TestDHTLookupTrace(t *testing.T) {
	dn := newDHTNet(t, 4, func(name string, c *weft.Config) { c.DHTReplication = 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := dn.nodes["m1"].Lookup(ctx, "m4")
	if err != nil {
		t.Fatal(err)
	}
	if res.Record == nil || res.Record.NodeID != dn.nodes["m4"].NodeID() || res.Messages == 0 || len(res.Queries) == 0 || res.Paths == 0 {
		t.Fatalf("lookup of m4: %+v", res)
	}
	for _, q := range res.Queries {
		if q.Msg != dht.MsgFindValue.String() || !q.To.IsValid() {
			t.Fatalf("query %+v", q)
		}
	}
	res, err = dn.nodes["m1"].Lookup(ctx, "nosuch")
	if err != nil || res.Record != nil || res.Error == "" {
		t.Fatalf("lookup of an unknown name: %+v, %v", res, err)
	}
	if _, err := dn.nodes["m1"].Lookup(ctx, "bad_name!"); err == nil {
		t.Fatal("lookup of an invalid name succeeded")
	}
	recs, err := dn.nodes["m1"].DHTRecords()
	if err != nil || len(recs) == 0 {
		t.Fatalf("records: %v, %v", recs, err)
	}
	for _, r := range recs {
		if r.Kind == "?" || r.Owner == "" || r.Seq == 0 {
			t.Fatalf("record %+v", r)
		}
	}
}

// TestDHTRoles: a node configured as a client answers no DHT request,
// stays out of routing tables and names rendezvous servers in its record,
// yet resolves others, is found and gets tunnels. A node whose advertised
// endpoint nobody can reach finds out (auto role) and becomes a client.
func TestDHTRoles(t *testing.T) {
	dn := newDHTNet(t, 3, func(name string, c *weft.Config) {
		switch name {
		case "c1":
			c.DHTRole = weft.DHTRoleClient
		case "hidden":
			// Advertise a port nothing listens on: unreachable unsolicited.
			c.Endpoints = []netip.AddrPort{netip.MustParseAddrPort("127.77.255.1:9")}
		}
	})
	c1 := dn.join(t, "c1")
	for _, n := range dn.nodes {
		serveName(t, n)
	}
	st, err := c1.DHT()
	if err != nil {
		t.Fatal(err)
	}
	if st.Role != weft.DHTRoleClient || !st.RoleForced {
		t.Fatalf("c1 role %s (forced %v), want a configured client", st.Role, st.RoleForced)
	}
	poll(t, 40*time.Second, "c1 names rendezvous servers in its record", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		res, err := dn.nodes["m1"].Lookup(ctx, "c1") // not the cached record
		if err != nil || res.Record == nil {
			return fmt.Errorf("lookup: %v %s", err, res.Error)
		}
		if len(res.Record.Rendezvous) == 0 {
			return fmt.Errorf("c1's record (seq %d) names no rendezvous", res.Record.Seq)
		}
		return nil
	})
	expectName(t, c1, "m2")
	expectName(t, dn.nodes["m3"], "c1")
	for _, name := range []string{"anchor", "m1", "m2", "m3"} {
		st, err := dn.nodes[name].DHT()
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range st.Contacts {
			if c.NodeID == c1.NodeID() {
				t.Fatalf("client c1 is in %s's routing table", name)
			}
		}
	}

	hidden := dn.join(t, "hidden")
	poll(t, 20*time.Second, "hidden sees it is unreachable", func() error {
		st, err := hidden.DHT()
		if err != nil {
			return err
		}
		if st.Role != weft.DHTRoleClient {
			return fmt.Errorf("role %s: %s", st.Role, st.RoleReason)
		}
		return nil
	})
	st, _ = dn.nodes["m2"].DHT()
	if st.Role != weft.DHTRoleServer || st.RoleForced {
		t.Fatalf("m2: role %s (%s), want an observed server", st.Role, st.RoleReason)
	}
	t.Logf("m2: %s; hidden: %s", st.RoleReason, func() string { s, _ := hidden.DHT(); return s.RoleReason }())
}

// signAs signs a record for the node in dir (its own identity and
// certificate) with the given sequence number and expiry.
func signAs(t *testing.T, dir string, seq uint64, expires time.Time, endpoint netip.AddrPort) []byte {
	t.Helper()
	id, err := trust.LoadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := trust.LoadCertificate(dir)
	if err != nil {
		t.Fatal(err)
	}
	rec := &trust.NodeRecord{Cert: cert, Seq: seq, Expires: expires, Endpoints: []netip.AddrPort{endpoint}, WGKey: id.WGPublic()}
	if err := rec.Sign(id); err != nil {
		t.Fatal(err)
	}
	b, err := rec.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDHTRefusesBadRecords: forged, replayed, expired, foreign-network
// and squatting records are refused by the store of every node, and
// lookups never return them.
func TestDHTRefusesBadRecords(t *testing.T) {
	dn := newDHTNet(t, 4, nil)
	other := newDHTNet(t, 1, nil)
	g := mustGenesis(t, dn.dirs["anchor"])
	r := newRogue(t)
	now := time.Now()

	ip, _ := addr.IPv4(g.IPv4Prefix, r.id.NodeID(), 0)
	forgedCert := &trust.Certificate{Network: g.ID(), NodeID: r.id.NodeID(), SignKey: r.id.SignPublic(), WGKey: r.id.WGPublic(),
		Name: "evil", IPv4: ip, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour), Serial: 1}
	if err := forgedCert.Endorse(r.id.Sign); err != nil {
		t.Fatal(err)
	}
	m1 := dn.dirs["m1"]
	m1ID := dn.nodes["m1"].NodeID()
	m1v4, _ := dn.nodes["m1"].Addrs()
	foreign := mustHello(t, r, other.nodes["m1"])
	foreignID := other.nodes["m1"].NodeID()

	cases := []struct {
		name string
		key  dht.Key
		rec  []byte
		want []string
	}{
		{"forged certificate", dht.NameKey("evil"), r.record(t, forgedCert, now.Add(30*time.Minute)), []string{"anchor", "endorse"}},
		{"replayed (older seq)", dht.NodeKey(m1ID), signAs(t, m1, 1, now.Add(30*time.Minute), r.conn.LocalAddr()), []string{"stale", "replay"}},
		{"expired", dht.NodeKey(m1ID), signAs(t, m1, uint64(now.UnixNano()), now.Add(-time.Second), r.conn.LocalAddr()), []string{"expired"}},
		{"foreign network", dht.NodeKey(foreignID), foreign, []string{"network"}},
		{"name squatting", dht.NameKey("m2"), signAs(t, m1, uint64(now.UnixNano()), now.Add(30*time.Minute), r.conn.LocalAddr()), []string{"does not belong"}},
		{"address squatting", dht.IPKey(netip.MustParseAddr("100.64.0.1")), signAs(t, m1, uint64(now.UnixNano()), now.Add(30*time.Minute), r.conn.LocalAddr()), []string{"does not belong"}},
	}
	// Every node holds m1's current record (anyone may store a genuine
	// record), so each can tell the replay is older.
	current := mustHello(t, r, dn.nodes["m1"])
	for _, name := range dn.running() {
		if err := r.store(t, dn.nodes[name], dht.NodeKey(m1ID), current); err != nil {
			t.Fatalf("%s refused m1's genuine record: %v", name, err)
		}
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, name := range dn.running() {
				expectErr(t, name+": store of "+tc.name+" record", r.store(t, dn.nodes[name], tc.key, tc.rec), tc.want...)
			}
		})
	}
	// Lookups find only the genuine records.
	for _, name := range dn.running() {
		n := dn.nodes[name]
		if _, err := n.Resolve(ctxT(t), "evil"); err == nil {
			t.Errorf("%s resolved the forged name", name)
		}
		if name == "m1" {
			continue
		}
		for _, host := range []string{"m1", m1ID.String(), m1v4.String()} {
			res, err := n.Lookup(ctxT(t), host)
			if err != nil || res.Record == nil || res.Record.NodeID != m1ID || res.Record.Seq == 1 || res.Record.Endpoints[0] != dn.nodes["m1"].LocalAddr() {
				t.Errorf("%s looking up %s: %+v, %v", name, host, res.Record, err)
			}
		}
		res, err := n.Lookup(ctxT(t), "m2")
		if name != "m2" && (err != nil || res.Record == nil || res.Record.NodeID != dn.nodes["m2"].NodeID()) {
			t.Errorf("%s looking up m2: %+v, %v", name, res.Record, err)
		}
	}
}

// TestDHTRevokedNode: once revoked, a node is out of every routing table,
// cannot store its records, cannot be found and gets no tunnel.
func TestDHTRevokedNode(t *testing.T) {
	dn := newDHTNet(t, 4, nil)
	for _, n := range dn.nodes {
		serveName(t, n)
	}
	expectName(t, dn.nodes["m4"], "m1") // m4 had a tunnel, and is known
	dn.resolveAll(t)
	if _, err := dn.nodes["anchor"].Revoke(ctxT(t), "m4", "test"); err != nil {
		t.Fatal(err)
	}
	others := []string{"anchor", "m1", "m2", "m3"}
	poll(t, 10*time.Second, "every node applies the revocation", func() error {
		for _, name := range others {
			if len(dn.nodes[name].Trust().Revocations) == 0 {
				return fmt.Errorf("%s has no revocation", name)
			}
		}
		return nil
	})
	dn.expectRevoked(t, "m4", others, "m3", "m2")
}

// TestDHTGossipRevocation: in a network of 21 nodes (the anchor, 19
// member servers and a DHT client), a revocation made at the anchor
// reaches every other node by gossip within a few rounds — the client by
// pulling from its servers — and the revoked node is then out of the DHT
// everywhere. Under -short, 9 nodes.
func TestDHTGossipRevocation(t *testing.T) {
	members, victim := 19, "m7"
	if testing.Short() {
		members, victim = 7, "m5"
	}
	dn := newDHTNet(t, members, func(name string, c *weft.Config) {
		c.DHTReplication = 5
		if name == "c1" {
			c.DHTRole = weft.DHTRoleClient
		}
	})
	dn.join(t, "c1")
	for _, n := range dn.nodes {
		serveName(t, n)
	}
	poll(t, 10*time.Second, "c1 knows DHT servers", func() error {
		st, err := dn.nodes["c1"].DHT()
		if err != nil || len(st.Contacts) == 0 {
			return fmt.Errorf("c1's table: %d contacts, %v", len(st.Contacts), err)
		}
		return nil
	})
	expectName(t, dn.nodes[victim], "m1")
	var others []string
	for _, name := range dn.running() {
		if name != victim {
			others = append(others, name)
		}
	}
	victimID := dn.nodes[victim].NodeID()

	if _, err := dn.nodes["anchor"].Revoke(ctxT(t), victim, "gossip test"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	learned := map[string]time.Duration{}
	for len(learned) < len(others) {
		for _, name := range others {
			if _, ok := learned[name]; ok {
				continue
			}
			for _, r := range dn.nodes[name].Trust().Revocations {
				if r.NodeID == victimID {
					learned[name] = time.Since(start)
				}
			}
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("revocation known to %d of %d nodes after 10s: %v", len(learned), len(others), learned)
		}
		time.Sleep(5 * time.Millisecond)
	}
	var times []time.Duration
	var servers time.Duration // the last server to learn it
	for name, d := range learned {
		times = append(times, d)
		if name != "c1" {
			servers = max(servers, d)
		}
	}
	slices.Sort(times)
	last := times[len(times)-1]
	// The node's gossip round is 750 ms (trustnode.go gossipInterval).
	const round = 750 * time.Millisecond
	t.Logf("revocation reached all %d other nodes in %v (≈%d gossip rounds of %v): median %v, every server %v, the client c1 (by pull) %v",
		len(others), last.Round(time.Millisecond), (last+round-1)/round, round, times[len(times)/2].Round(time.Millisecond),
		servers.Round(time.Millisecond), learned["c1"].Round(time.Millisecond))
	if last > 5*round {
		t.Errorf("revocation took %v to reach every node, want a few rounds (%v each)", last, round)
	}
	dn.expectRevoked(t, victim, others, "m3", "m2")
}

// expectRevoked checks that the revoked node victim is out of the DHT of
// every node of others (no routing-table entry, its records refused,
// neither resolved nor found by node ID) and gets no tunnel: not from
// victim to to, nor from from to victim.
func (dn *dhtNet) expectRevoked(t *testing.T, victim string, others []string, to, from string) {
	t.Helper()
	vn := dn.nodes[victim]
	vID := vn.NodeID()
	r := newRogue(t)
	fresh := signAs(t, dn.dirs[victim], uint64(time.Now().UnixNano()), time.Now().Add(30*time.Minute), r.conn.LocalAddr())
	for _, name := range others {
		n := dn.nodes[name]
		st, err := n.DHT()
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range st.Contacts {
			if c.NodeID == vID {
				t.Errorf("revoked %s is still in %s's routing table", victim, name)
			}
		}
		if st.Role == weft.DHTRoleServer {
			expectErr(t, name+": store of the revoked node's record", r.store(t, n, dht.NameKey(victim), fresh), "revoked")
		}
		if _, err := n.Resolve(ctxT(t), victim); err == nil {
			t.Errorf("%s still resolves the revoked %s", name, victim)
		}
		if res, err := n.Lookup(ctxT(t), vID.String()); err != nil || res.Record != nil {
			t.Errorf("%s still finds the revoked %s by node ID: %+v, %v", name, victim, res.Record, err)
		}
	}
	// No tunnel either way, not even with a node it never talked to.
	c := httpClient(vn)
	c.Timeout = 5 * time.Second
	if body, err := getBody(c, "http://"+to+"/"); err == nil {
		t.Fatalf("revoked %s reached %s: %q", victim, to, body)
	}
	c = httpClient(dn.nodes[from])
	c.Timeout = 5 * time.Second
	if body, err := getBody(c, "http://"+vID.String()+".id.weft.internal/"); err == nil {
		t.Fatalf("%s reached the revoked %s: %q", from, victim, body)
	}
}
