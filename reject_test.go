package weft_test

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/weft-net/weft"
	"github.com/weft-net/weft/addr"
	"github.com/weft-net/weft/dht"
	"github.com/weft-net/weft/nat"
	"github.com/weft-net/weft/trust"
	"github.com/weft-net/weft/tunnel"
)

// rogue is a hand-built participant that speaks the wire protocol without
// the Node's own checks, to show that the other side refuses it.
type rogue struct {
	id   *trust.Identity
	conn *nat.Conn
}

func newRogue(t *testing.T) *rogue {
	t.Helper()
	id, err := trust.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return newRogueWith(t, id)
}

func newRogueWith(t *testing.T, id *trust.Identity) *rogue {
	t.Helper()
	c, err := nat.Listen(nat.Config{Addr: loopback, PrivateKey: id.WG})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rogue{id: id, conn: c}
}

// record signs a node record for cert with the rogue's identity.
func (r *rogue) record(t *testing.T, cert *trust.Certificate, expires time.Time) []byte {
	t.Helper()
	rec := &trust.NodeRecord{Cert: cert, Seq: uint64(time.Now().UnixNano()), Expires: expires,
		Endpoints: []netip.AddrPort{r.conn.LocalAddr()}}
	if err := rec.Sign(r.id); err != nil {
		t.Fatal(err)
	}
	b, err := rec.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (r *rogue) peerOf(t *testing.T, n *weft.Node) nat.Peer {
	t.Helper()
	body, p, err := r.conn.CallHello(ctxT(t), n.LocalAddr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := trust.UnmarshalNodeRecord(body)
	if err != nil {
		t.Fatal(err)
	}
	p.Key = rec.Cert.WGKey
	return p
}

// connect sends a connect exchange with rec to n.
func (r *rogue) connect(t *testing.T, n *weft.Node, rec []byte) error {
	_, err := r.conn.Call(ctxT(t), r.peerOf(t, n), nat.MsgConnect, rec)
	return err
}

// store asks n to store rec under key and returns the store status error.
func (r *rogue) store(t *testing.T, n *weft.Node, key dht.Key, rec []byte) error {
	t.Helper()
	req, err := dht.StoreRequest{Key: key, Value: rec}.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	out, err := r.conn.Call(ctxT(t), r.peerOf(t, n), nat.MsgStore, req)
	if err != nil {
		return err
	}
	var resp dht.StoreResponse
	if err := resp.UnmarshalBinary(out); err != nil {
		t.Fatal(err)
	}
	if e := resp.Status.Err(); e != nil {
		return errors.New(e.Error() + ": " + resp.Detail)
	}
	return nil
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustGenesis(t *testing.T, dir string) *trust.Genesis {
	t.Helper()
	g, err := trust.LoadGenesis(dir)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func expectErr(t *testing.T, what string, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s was accepted", what)
	}
	for _, w := range want {
		if strings.Contains(strings.ToLower(err.Error()), w) {
			t.Logf("%s refused: %v", what, err)
			return
		}
	}
	t.Fatalf("%s refused with %q, want a reason mentioning %q", what, err, want)
}

// TestForgedCertificateRefused: a certificate naming the real network but
// endorsed by a key that is not an anchor is refused by the bootstrap's
// store, by every member's connect handler, and by Start itself.
func TestForgedCertificateRefused(t *testing.T) {
	tn := newTestNet(t, "victim")
	g := mustGenesis(t, tn.dirs["anchor"])
	r := newRogue(t)
	now := time.Now()
	ip, _ := addr.IPv4(g.IPv4Prefix, r.id.NodeID(), 0)
	cert := &trust.Certificate{Network: g.ID(), NodeID: r.id.NodeID(), SignKey: r.id.SignPublic(), WGKey: r.id.WGPublic(),
		Name: "evil", IPv4: ip, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour), Serial: 1}
	if err := cert.Endorse(r.id.Sign); err != nil { // the rogue endorses itself
		t.Fatal(err)
	}
	rec := r.record(t, cert, now.Add(30*time.Minute))
	expectErr(t, "store of forged record", r.store(t, tn.anchor, dht.NameKey("evil"), rec), "anchor", "endorse")
	expectErr(t, "connect with forged certificate", r.connect(t, tn.nodes["victim"], rec), "anchor", "endorse")

	// The refusals are counted by reason, in status and in the metrics.
	st, err := tn.nodes["victim"].Status()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Rejections) == 0 {
		t.Fatalf("victim counted no rejection: %+v", st.Rejections)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(tn.nodes["victim"].Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	found := map[string]bool{}
	for _, mf := range mfs {
		found[mf.GetName()] = true
	}
	for _, want := range []string{"weft_node_info", "weft_rejections_total", "weft_socket_control_in_total", "weft_store_records"} {
		if !found[want] {
			t.Errorf("metric %s missing (have %v)", want, found)
		}
	}

	// Nobody can resolve the forged name.
	if _, err := tn.nodes["victim"].Resolve(ctxT(t), "evil"); err == nil {
		t.Fatal("forged name resolved")
	}
	// A node whose own state holds a forged certificate does not start.
	dir := filepath.Join(t.TempDir(), "forged")
	if err := trust.SaveIdentity(dir, r.id); err != nil {
		t.Fatal(err)
	}
	if err := trust.SaveGenesis(dir, g); err != nil {
		t.Fatal(err)
	}
	if err := trust.SaveCertificate(dir, cert); err != nil {
		t.Fatal(err)
	}
	_, err = weft.Start(context.Background(), weft.Config{StateDir: dir, Listen: loopback, Logger: testLogger(t)})
	expectErr(t, "Start with a forged certificate", err, "anchor", "endorse")
}

// TestExpiredCertificateRefused: a certificate the real anchor signed but
// that has expired is refused.
func TestExpiredCertificateRefused(t *testing.T) {
	tn := newTestNet(t, "victim")
	g := mustGenesis(t, tn.dirs["anchor"])
	anchorID, err := trust.LoadIdentity(tn.dirs["anchor"])
	if err != nil {
		t.Fatal(err)
	}
	r := newRogue(t)
	now := time.Now()
	ip, _ := addr.IPv4(g.IPv4Prefix, r.id.NodeID(), 0)
	cert := &trust.Certificate{Network: g.ID(), NodeID: r.id.NodeID(), SignKey: r.id.SignPublic(), WGKey: r.id.WGPublic(),
		Name: "old", IPv4: ip, NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour), Serial: 7}
	if err := cert.Endorse(anchorID.Sign); err != nil {
		t.Fatal(err)
	}
	rec := r.record(t, cert, now.Add(-30*time.Minute)) // the record may not outlive the cert
	expectErr(t, "connect with expired certificate", r.connect(t, tn.nodes["victim"], rec), "expired")
	expectErr(t, "store of expired record", r.store(t, tn.anchor, dht.NameKey("old"), rec), "expired")
}

// TestReplayedRecordAndStolenRecord: an older record of a real node is not
// accepted over a newer one, and a real node's record sent by someone else
// does not make the sender that node.
func TestStolenRecordRefused(t *testing.T) {
	tn := newTestNet(t, "victim", "honest")
	// Fetch honest's real record via hello, then replay it from the rogue.
	r := newRogue(t)
	body, _, err := r.conn.CallHello(ctxT(t), tn.nodes["honest"].LocalAddr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	expectErr(t, "connect with another node's record", r.connect(t, tn.nodes["victim"], body), "key")
}

// TestForeignNetworkToken: a join request carrying an invite of another
// network is refused by the anchor with the reason.
func TestForeignNetworkToken(t *testing.T) {
	home := newTestNet(t)
	other := newTestNet(t)
	tok, err := other.anchor.Invite(weft.InviteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r := newRogue(t)
	req, err := trust.NewJoinRequest(tok, r.id, "stray", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	body, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	out, err := r.conn.Call(ctxT(t), r.peerOf(t, home.anchor), nat.MsgJoin, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := trust.UnmarshalJoinResponse(out)
	if err != nil {
		t.Fatal(err)
	}
	expectErr(t, "join with a foreign network's invite", resp.Err(), "network")
	if !errors.Is(resp.Err(), trust.ErrWrongNetwork) {
		t.Fatalf("reason = %v, want ErrWrongNetwork", resp.Err())
	}
}

// TestTokenUseLimit: an invite for one use admits one node; the second is
// refused with the reason; the first can rejoin idempotently.
func TestTokenUseLimit(t *testing.T) {
	tn := newTestNet(t)
	tok, err := tn.anchor.Invite(weft.InviteOptions{Uses: 1})
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	if _, err := weft.Join(ctxT(t), weft.JoinOptions{StateDir: filepath.Join(base, "one"), Token: tok, Name: "one", Logger: testLogger(t)}); err != nil {
		t.Fatalf("first join: %v", err)
	}
	_, err = weft.Join(ctxT(t), weft.JoinOptions{StateDir: filepath.Join(base, "two"), Token: tok, Name: "two", Logger: testLogger(t)})
	expectErr(t, "second join with a one-use invite", err, "use")
	if !errors.Is(err, trust.ErrUseLimit) {
		t.Fatalf("reason = %v, want ErrUseLimit", err)
	}
	// Garbage tokens get a parse error, not a crash.
	_, err = weft.Join(ctxT(t), weft.JoinOptions{StateDir: filepath.Join(base, "three"), Token: "weft1-AAAA", Logger: testLogger(t)})
	expectErr(t, "garbled token", err, "invite", "token", "malformed")
}

// TestSpoofedSourceInsideTunnel: an admitted member that sends packets with
// another node's overlay address as source gets them dropped and counted,
// while its own traffic still flows.
func TestSpoofedSourceInsideTunnel(t *testing.T) {
	tn := newTestNet(t, "victim", "mallory")
	victim := tn.nodes["victim"]
	// Mallory is a real member; take her identity and run a bare tunnel
	// with a raw TUN instead of the Node's stack.
	mdir := tn.dirs["mallory"]
	tn.nodes["mallory"].Close()
	id, err := trust.LoadIdentity(mdir)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := trust.LoadCertificate(mdir)
	if err != nil {
		t.Fatal(err)
	}
	r := newRogueWith(t, id)
	rec := r.record(t, cert, time.Now().Add(time.Hour))
	if err := r.connect(t, victim, rec); err != nil {
		t.Fatalf("mallory's honest connect refused: %v", err)
	}
	vrec, err := trust.UnmarshalNodeRecord(mustHello(t, r, victim))
	if err != nil {
		t.Fatal(err)
	}
	ct := tuntest.NewChannelTUN()
	tun, err := tunnel.New(tunnel.Config{Bind: r.conn.Bind(), TUN: ct.TUN(), PrivateKey: tunnel.Key(id.WG), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer tun.Close()
	vv4, _ := victim.Addrs()
	if err := tun.SetPeer(tunnel.Peer{PublicKey: tunnel.Key(vrec.Cert.WGKey), Endpoint: victim.LocalAddr(),
		AllowedIPs: []netip.Prefix{netip.PrefixFrom(vv4, 32)}}); err != nil {
		t.Fatal(err)
	}
	pc, err := victim.ListenPacket("udp", ":7000")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	got := make(chan netip.AddrPort, 4)
	go func() {
		buf := make([]byte, 1500)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			ap, _ := netip.ParseAddrPort(from.String())
			got <- ap
		}
	}()
	// An honest datagram from mallory's own address arrives.
	ct.Outbound <- udp4(cert.IPv4, vv4, 5000, 7000, []byte("honest"))
	select {
	case from := <-got:
		if from.Addr() != cert.IPv4 {
			t.Fatalf("honest datagram arrived from %v", from)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("mallory's honest datagram did not arrive")
	}
	// A datagram claiming the anchor's address is dropped and counted.
	av4, _ := tn.anchor.Addrs()
	ct.Outbound <- udp4(av4, vv4, 5000, 7000, []byte("spoofed"))
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := victim.Status()
		if err != nil {
			t.Fatal(err)
		}
		if st.SpoofedDrops > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("spoofed packet not counted as dropped")
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case from := <-got:
		t.Fatalf("victim accepted a spoofed datagram from %v", from)
	case <-time.After(200 * time.Millisecond):
	}
}

// udp4 builds an IPv4/UDP packet (UDP checksum 0, which IPv4 allows).
func udp4(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	p := make([]byte, 28+len(payload))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8] = 64
	p[9] = 17
	s4, d4 := src.As4(), dst.As4()
	copy(p[12:], s4[:])
	copy(p[16:], d4[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(p[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(p[10:], ^uint16(sum))
	binary.BigEndian.PutUint16(p[20:], sport)
	binary.BigEndian.PutUint16(p[22:], dport)
	binary.BigEndian.PutUint16(p[24:], uint16(8+len(payload)))
	copy(p[28:], payload)
	return p
}

func mustHello(t *testing.T, r *rogue, n *weft.Node) []byte {
	body, _, err := r.conn.CallHello(ctxT(t), n.LocalAddr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return body
}
