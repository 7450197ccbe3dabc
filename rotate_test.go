package weft_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weft-net/weft"
	"github.com/weft-net/weft/trust"
)

// TestRotateKeyDuringDownload: RotateKey on either end of a long HTTP
// download through the overlay does not break it: all bytes arrive intact,
// the other side handshakes with the new key, and the old key is gone from
// its WireGuard configuration.
func TestRotateKeyDuringDownload(t *testing.T) {
	const size = 256 << 20
	for _, rotate := range []string{"server", "client"} {
		t.Run(rotate, func(t *testing.T) {
			tn := newTestNet(t, "server", "client")
			server, client := tn.nodes["server"], tn.nodes["client"]
			rotated := make(chan struct{})
			sentSum := make(chan []byte, 1)
			serveHTTP(t, server, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", strconv.Itoa(size))
				src := rand.NewChaCha8([32]byte{1})
				h := sha256.New()
				buf := make([]byte, 64<<10)
				for off := 0; off < size; off += len(buf) {
					src.Read(buf)
					h.Write(buf)
					if _, err := w.Write(buf); err != nil {
						return
					}
					// Past the first quarter, keep a trickle flowing until the
					// rotation is done, so that it happens mid-transfer.
					if off > size/4 {
						select {
						case <-rotated:
						default:
							time.Sleep(time.Millisecond)
						}
					}
				}
				sentSum <- h.Sum(nil)
			}))

			rotNode, rotDir, other := server, tn.dirs["server"], client
			if rotate == "client" {
				rotNode, rotDir, other = client, tn.dirs["client"], server
			}
			oldKey := wgKeyOf(t, rotDir)

			c := httpClient(client)
			c.Timeout = 2 * time.Minute
			resp, err := c.Get("http://server/")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var got atomic.Int64
			rotErr := make(chan error, 1)
			var rotStart time.Time
			h := sha256.New()
			buf := make([]byte, 64<<10)
			for {
				n, err := resp.Body.Read(buf)
				h.Write(buf[:n])
				if got.Add(int64(n)) >= size/8 && rotStart.IsZero() {
					rotStart = time.Now()
					go func() {
						ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
						defer cancel()
						rotErr <- rotNode.RotateKey(ctx)
						close(rotated)
					}()
				}
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("download broke after %d MiB (rotation started %v before): %v", got.Load()>>20, time.Since(rotStart), err)
				}
			}
			if err := <-rotErr; err != nil {
				t.Fatalf("RotateKey on the %s: %v", rotate, err)
			}
			var sent []byte
			select {
			case sent = <-sentSum:
			case <-time.After(5 * time.Second):
				t.Fatal("the server did not finish sending")
			}
			if got.Load() != size || !bytes.Equal(h.Sum(nil), sent) {
				t.Fatalf("received %d bytes, sha256 %x; sent %d, %x", got.Load(), h.Sum(nil), size, sent)
			}
			newKey := wgKeyOf(t, rotDir)
			if newKey == oldKey {
				t.Fatal("RotateKey left the identity's WireGuard key unchanged")
			}

			// The other side handshook with the new key since the rotation
			// and forgot the old one.
			poll(t, 10*time.Second, "handshake with the new key", func() error {
				st, err := other.Status()
				if err != nil {
					return err
				}
				for _, p := range st.Peers {
					if p.NodeID == rotNode.NodeID() {
						if !p.LastHandshake.After(rotStart) {
							return fmt.Errorf("last handshake %v, rotation at %v", p.LastHandshake, rotStart)
						}
						return nil
					}
				}
				return fmt.Errorf("%s not among %s's peers: %+v", rotNode.Name(), other.Name(), st.Peers)
			})
			st, _ := other.Status()
			if st.UAPI == "" {
				t.Logf("no UAPI socket (not root?): WireGuard peer keys not checked")
				return
			}
			keys, err := uapiPeerKeys(st.UAPI)
			if err != nil {
				t.Fatalf("UAPI of %s: %v", other.Name(), err)
			}
			if keys[oldKey] || !keys[newKey] {
				t.Fatalf("%s's WireGuard peers: old key present %v, new key present %v", other.Name(), keys[oldKey], keys[newKey])
			}
		})
	}
}

// TestCertificateRenewal: a member whose certificate enters the last third
// of its validity gets a renewed one from the anchors, without a restart.
func TestCertificateRenewal(t *testing.T) {
	tn := newTestNet(t)
	tok, err := tn.anchor.Invite(weft.InviteOptions{Name: "short"})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "short")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := weft.Join(ctx, weft.JoinOptions{StateDir: dir, Token: tok, Validity: 9 * time.Second, Logger: testLogger(t)}); err != nil {
		t.Fatal(err)
	}
	before, err := trust.LoadCertificate(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := startNode(t, dir)
	poll(t, 15*time.Second, "certificate renewed", func() error {
		st, err := n.Status()
		if err != nil {
			return err
		}
		if !st.CertExpires.After(before.NotAfter) {
			return fmt.Errorf("certificate still expires at %v", st.CertExpires)
		}
		return nil
	})
	after, err := trust.LoadCertificate(dir)
	if err != nil || !after.NotAfter.After(before.NotAfter) || after.Serial == before.Serial && after.NotAfter == before.NotAfter {
		t.Fatalf("renewed certificate not saved: %v (before %v, after %v)", err, before.NotAfter, after.NotAfter)
	}
	// The renewed node stays reachable.
	serveHTTP(t, n, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	resp, err := httpClient(tn.anchor).Get("http://short/")
	if err != nil {
		t.Fatalf("renewed node unreachable: %v", err)
	}
	resp.Body.Close()
}

// TestPolicy: without a policy every member reaches every port; a policy
// endorsed by t anchors spreads to every node, and then only what it
// allows gets through — web → db on tcp/5432, with replies — while other
// ports, untagged members and the reverse direction are refused.
func TestPolicy(t *testing.T) {
	bn := newBFTNet(t, 4)
	web := bn.join(t, "web", bn.invite(t, 0, bn.thr, weft.InviteOptions{Name: "web", Tags: []string{"web"}}))
	db := bn.join(t, "db", bn.invite(t, 1, bn.thr, weft.InviteOptions{Name: "db", Tags: []string{"db"}}))
	plain := bn.join(t, "plain", bn.invite(t, 2, bn.thr, weft.InviteOptions{Name: "plain"}))
	for _, n := range []*weft.Node{web, db} {
		for _, port := range []string{"5432", "22"} {
			echoTCP(t, n, port)
		}
	}
	type probe struct {
		from *weft.Node
		to   string
		ok   bool // under the policy
	}
	probes := []probe{
		{web, "db:5432", true},
		{web, "db:22", false},
		{plain, "db:5432", false},
		{plain, "db:22", false},
		{db, "web:5432", false},
	}
	run := func(t *testing.T, withPolicy bool) {
		errs := make([]error, len(probes))
		done := make(chan int, len(probes))
		for i, p := range probes {
			go func() {
				errs[i] = echoOnce(p.from, p.to)
				done <- i
			}()
		}
		for range probes {
			<-done
		}
		for i, p := range probes {
			want := p.ok || !withPolicy
			if (errs[i] == nil) != want {
				t.Errorf("%s → %s (policy %v): err %v, want allowed=%v", p.from.Name(), p.to, withPolicy, errs[i], want)
			}
		}
	}
	// Set the tunnels up one at a time first: two members dialling each
	// other at the same moment can collide in the WireGuard handshake and
	// wait for its 5 s retry, which would look like a policy drop.
	for _, p := range []probe{{web, "db:5432", true}, {plain, "db:5432", true}} {
		if err := echoOnce(p.from, p.to); err != nil {
			t.Fatalf("%s → %s without policy: %v", p.from.Name(), p.to, err)
		}
	}
	t.Run("no policy", func(t *testing.T) { run(t, false) })

	res, err := bn.nodes["a0"].ProposePolicy([]trust.Rule{{From: []string{"web"}, To: []string{"db"}, Proto: "tcp",
		Ports: []trust.PortRange{{Lo: 5432, Hi: 5432}}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"a1", "a2"} {
		if res, err = bn.nodes[a].Cosign(res.Token); err != nil {
			t.Fatalf("cosign policy on %s: %v", a, err)
		}
	}
	if !res.Published {
		t.Fatalf("policy endorsed by 3 of 4 anchors not published: %+v", res)
	}
	bn.each(func(name string, n *weft.Node) {
		poll(t, 5*time.Second, name+" follows the policy", func() error {
			if ts := n.Trust(); ts.PolicySeq != 1 {
				return fmt.Errorf("policy %d in force: %s", ts.PolicySeq, ts.Policy)
			}
			return nil
		})
	})
	t.Run("policy", func(t *testing.T) { run(t, true) })
}

// echoTCP echoes every connection to port of n.
func echoTCP(t *testing.T, n *weft.Node, port string) {
	ln, err := n.Listen("tcp", ":"+port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
}

// echoOnce connects from n to addr and checks an echo round trip, within
// a few seconds (a policy drop shows as a timeout).
func echoOnce(n *weft.Node, addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	c, err := n.Dial(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(4 * time.Second))
	msg := []byte("ping " + addr)
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return errors.New("echo garbled")
	}
	return nil
}

// TestScheduledKeyRotation: a node with KeyRotation set rotates on its own
// and stays reachable.
func TestScheduledKeyRotation(t *testing.T) {
	tn := newTestNet(t)
	tok, err := tn.anchor.Invite(weft.InviteOptions{Name: "rot"})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "rot")
	if _, err := weft.Join(context.Background(), weft.JoinOptions{StateDir: dir, Token: tok, Logger: testLogger(t)}); err != nil {
		t.Fatal(err)
	}
	n, err := weft.Start(context.Background(), weft.Config{StateDir: dir, Listen: loopback, Logger: testLogger(t), KeyRotation: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	serveHTTP(t, n, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	first := n.WGPublicKey()
	poll(t, 10*time.Second, "key rotated on schedule", func() error {
		if n.WGPublicKey() == first {
			return errors.New("key unchanged")
		}
		return nil
	})
	resp, err := httpClient(tn.anchor).Get("http://rot/")
	if err != nil {
		t.Fatalf("node unreachable after scheduled rotation: %v", err)
	}
	resp.Body.Close()
}
