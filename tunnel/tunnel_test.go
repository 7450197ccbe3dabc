package tunnel

import (
	"bytes"
	"crypto/rand"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/crypto/curve25519"
	"golang.zx2c4.com/wireguard/conn/bindtest"
	"golang.zx2c4.com/wireguard/tun/tuntest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newKey(t *testing.T) (priv, pub Key) {
	t.Helper()
	if _, err := rand.Read(priv[:]); err != nil {
		t.Fatal(err)
	}
	priv[0] &= 248
	priv[31] = (priv[31] & 127) | 64
	p, err := curve25519.X25519(priv[:], curve25519.Basepoint)
	if err != nil {
		t.Fatal(err)
	}
	copy(pub[:], p)
	return priv, pub
}

type side struct {
	tun *tuntest.ChannelTUN
	tn  *Tunnel
	ip  netip.Addr
	pub Key
}

// pair builds two tunnels over channel binds: a at 10.0.0.1, b at 10.0.0.2.
func pair(t *testing.T) (a, b side) {
	t.Helper()
	binds := bindtest.NewChannelBinds()
	mk := func(i int, ip string) side {
		priv, pub := newKey(t)
		ct := tuntest.NewChannelTUN()
		tn, err := New(Config{Bind: binds[i], TUN: ct.TUN(), PrivateKey: priv})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tn.Close() })
		return side{tun: ct, tn: tn, ip: netip.MustParseAddr(ip), pub: pub}
	}
	a, b = mk(0, "10.0.0.1"), mk(1, "10.0.0.2")
	// bindtest endpoints are the port number: bind 0 reaches bind 1 at
	// port 1, bind 1 reaches bind 0 at port 2.
	if err := a.tn.SetPeer(Peer{PublicKey: b.pub, Endpoint: netip.MustParseAddrPort("127.0.0.1:1"),
		AllowedIPs: []netip.Prefix{netip.PrefixFrom(b.ip, 32)}, Keepalive: -1}); err != nil {
		t.Fatal(err)
	}
	if err := b.tn.SetPeer(Peer{PublicKey: a.pub, Endpoint: netip.MustParseAddrPort("127.0.0.1:2"),
		AllowedIPs: []netip.Prefix{netip.PrefixFrom(a.ip, 32)}, Keepalive: -1}); err != nil {
		t.Fatal(err)
	}
	return a, b
}

func expectPacket(t *testing.T, ct *tuntest.ChannelTUN, want []byte) {
	t.Helper()
	select {
	case got := <-ct.Inbound:
		if !bytes.Equal(got, want) {
			t.Fatalf("got packet %x, want %x", got, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("timed out waiting for packet")
	}
}

func TestPingBothWays(t *testing.T) {
	a, b := pair(t)
	p := tuntest.Ping(b.ip, a.ip)
	a.tun.Outbound <- p
	expectPacket(t, b.tun, p)
	p = tuntest.Ping(a.ip, b.ip)
	b.tun.Outbound <- p
	expectPacket(t, a.tun, p)

	peers, err := a.tn.Peers()
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 1 || peers[0].PublicKey != b.pub || peers[0].LastHandshake.IsZero() || peers[0].TxBytes == 0 {
		t.Fatalf("unexpected peer stats: %+v", peers)
	}
	if got := peers[0].AllowedIPs; len(got) != 1 || got[0] != netip.MustParsePrefix("10.0.0.2/32") {
		t.Fatalf("allowed IPs = %v", got)
	}
}

func TestSpoofedSourceDropped(t *testing.T) {
	a, b := pair(t)
	// Establish the session first.
	p := tuntest.Ping(b.ip, a.ip)
	a.tun.Outbound <- p
	expectPacket(t, b.tun, p)

	// a claims to be 10.0.0.9: b must drop it and count it.
	spoof := tuntest.Ping(b.ip, netip.MustParseAddr("10.0.0.9"))
	a.tun.Outbound <- spoof
	deadline := time.Now().Add(5 * time.Second)
	for b.tn.Stats().SpoofedDrops == 0 {
		if time.Now().After(deadline) {
			t.Fatal("spoofed packet was not counted as dropped")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case got := <-b.tun.Inbound:
		t.Fatalf("spoofed packet delivered: %x", got)
	default:
	}
	// Legitimate traffic still flows.
	a.tun.Outbound <- p
	expectPacket(t, b.tun, p)
}

func TestRemovePeerAndClose(t *testing.T) {
	a, b := pair(t)
	if err := a.tn.RemovePeer(b.pub); err != nil {
		t.Fatal(err)
	}
	peers, err := a.tn.Peers()
	if err != nil || len(peers) != 0 {
		t.Fatalf("peers after remove = %v, %v", peers, err)
	}
	a.tn.Close()
	if err := a.tn.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := a.tn.SetPeer(Peer{PublicKey: b.pub}); err != ErrClosed {
		t.Fatalf("SetPeer after Close = %v, want ErrClosed", err)
	}
}

func TestParseUAPI(t *testing.T) {
	dump := "private_key=00\nlisten_port=1\npublic_key=" + Key{1}.hex() +
		"\nendpoint=192.0.2.1:51820\nlast_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\n" +
		"rx_bytes=10\ntx_bytes=20\nallowed_ip=100.64.0.1/32\nallowed_ip=fd00::1/128\n" +
		"public_key=" + Key{2}.hex() + "\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\n"
	peers, err := parseUAPI(dump)
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 2 {
		t.Fatalf("got %d peers", len(peers))
	}
	p := peers[0]
	if p.Endpoint != netip.MustParseAddrPort("192.0.2.1:51820") || p.RxBytes != 10 || p.TxBytes != 20 ||
		len(p.AllowedIPs) != 2 || p.LastHandshake.Unix() != 1700000000 {
		t.Fatalf("peer 0 = %+v", p)
	}
	if !peers[1].LastHandshake.IsZero() {
		t.Fatalf("peer 1 handshake should be zero: %v", peers[1].LastHandshake)
	}
	if _, err := parseUAPI("public_key=zz\n"); err == nil {
		t.Fatal("bad key accepted")
	}
}
