package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/curve25519"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	wgnetstack "golang.zx2c4.com/wireguard/tun/netstack"

	"github.com/weft-net/weft"
)

// chunk is the size of each Write of a throughput stream.
const chunk = 128 << 10

// pair is two endpoints of a throughput stream: listen on one, dial the other.
type pair struct {
	name   string
	listen func() (net.Listener, error)
	dial   func(ctx context.Context, addr string) (net.Conn, error)
	close  func()
}

// stream sends n bytes over one new TCP connection of p and returns the rate
// in MB/s (10^6 bytes), timed from the dial to the receiver reading the last
// byte.
func stream(p pair, n int64) (float64, error) {
	ln, err := p.listen()
	if err != nil {
		return 0, fmt.Errorf("%s listen: %w", p.name, err)
	}
	defer ln.Close()
	got := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- err
			return
		}
		defer c.Close()
		m, err := io.Copy(io.Discard, c)
		if err == nil && m != n {
			err = fmt.Errorf("received %d bytes, want %d", m, n)
		}
		got <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	c, err := p.dial(ctx, ln.Addr().String())
	if err != nil {
		return 0, fmt.Errorf("%s dial: %w", p.name, err)
	}
	defer c.Close()
	buf := make([]byte, chunk)
	for left := n; left > 0; {
		k := min(left, chunk)
		if _, err := c.Write(buf[:k]); err != nil {
			return 0, fmt.Errorf("%s write: %w", p.name, err)
		}
		left -= k
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	} else {
		c.Close()
	}
	select {
	case err := <-got:
		if err != nil {
			return 0, fmt.Errorf("%s receive: %w", p.name, err)
		}
	case <-time.After(120 * time.Second):
		return 0, fmt.Errorf("%s: receiver did not finish in 120s", p.name)
	}
	return float64(n) / time.Since(start).Seconds() / 1e6, nil
}

func loopbackPair() pair {
	return pair{
		name:   "loopback",
		listen: func() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") },
		dial: func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
		close: func() {},
	}
}

// barePair is the baseline: two stock wireguard-go devices, each with the
// upstream tun/netstack and conn.NewDefaultBind on real UDP sockets,
// configured over UAPI like any wireguard-go user would.
func barePair() (pair, error) {
	ipA, ipB := netip.MustParseAddr("10.99.0.1"), netip.MustParseAddr("10.99.0.2")
	type end struct {
		dev  *device.Device
		net  *wgnetstack.Net
		priv []byte
		pub  []byte
		port int
	}
	mk := func(ip netip.Addr) (*end, error) {
		e := &end{priv: make([]byte, 32)}
		rand.Read(e.priv)
		pub, err := curve25519.X25519(e.priv, curve25519.Basepoint)
		if err != nil {
			return nil, err
		}
		e.pub = pub
		tun, tnet, err := wgnetstack.CreateNetTUN([]netip.Addr{ip}, nil, 1420)
		if err != nil {
			return nil, err
		}
		e.net = tnet
		e.dev = device.NewDevice(tun, conn.NewDefaultBind(), device.NewLogger(device.LogLevelSilent, ""))
		if err := e.dev.IpcSet("private_key=" + hex.EncodeToString(e.priv) + "\nlisten_port=0\n"); err != nil {
			return nil, err
		}
		if err := e.dev.Up(); err != nil {
			return nil, err
		}
		conf, err := e.dev.IpcGet()
		if err != nil {
			return nil, err
		}
		for _, l := range strings.Split(conf, "\n") {
			if v, ok := strings.CutPrefix(l, "listen_port="); ok {
				e.port, _ = strconv.Atoi(v)
			}
		}
		if e.port == 0 {
			return nil, fmt.Errorf("bare device has no listen port")
		}
		return e, nil
	}
	a, err := mk(ipA)
	if err != nil {
		return pair{}, err
	}
	b, err := mk(ipB)
	if err != nil {
		a.dev.Close()
		return pair{}, err
	}
	peer := func(e, o *end, oip netip.Addr) error {
		return e.dev.IpcSet(fmt.Sprintf("public_key=%s\nendpoint=127.0.0.1:%d\nallowed_ip=%s/32\n",
			hex.EncodeToString(o.pub), o.port, oip))
	}
	if err := peer(a, b, ipB); err != nil {
		return pair{}, err
	}
	if err := peer(b, a, ipA); err != nil {
		return pair{}, err
	}
	return pair{
		name: "bare wireguard-go",
		listen: func() (net.Listener, error) {
			return b.net.ListenTCPAddrPort(netip.AddrPortFrom(ipB, 5001))
		},
		dial: func(ctx context.Context, addr string) (net.Conn, error) {
			return a.net.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(ipB, 5001))
		},
		close: func() {
			a.dev.Close()
			b.dev.Close()
		},
	}, nil
}

// discardLogger is the in-process nodes' logger: silent unless
// WEFT_BENCH_LOG is set, then debug to stderr.
var discardLogger = func() *slog.Logger {
	if os.Getenv("WEFT_BENCH_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}()

var loopback0 = netip.MustParseAddrPort("127.0.0.1:0")

// weftNet is an anchor and one member, both running in this process.
type weftNet struct {
	dir            string
	anchor, member *weft.Node
	memberDir      string
}

// newWeftNet creates a network in a temporary directory, starts its anchor
// and joins (but, unless start is set, does not start) a member.
func newWeftNet(anchorName, memberName string, start bool) (*weftNet, error) {
	dir, err := os.MkdirTemp("", "weft-bench-")
	if err != nil {
		return nil, err
	}
	w := &weftNet{dir: dir, memberDir: filepath.Join(dir, memberName)}
	adir := filepath.Join(dir, anchorName)
	if _, err := weft.Init(weft.InitOptions{StateDir: adir, Network: "bench", Name: anchorName}); err != nil {
		w.close()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w.anchor, err = weft.Start(ctx, weft.Config{StateDir: adir, Listen: loopback0, Logger: discardLogger})
	if err != nil {
		w.close()
		return nil, err
	}
	tok, err := w.anchor.Invite(weft.InviteOptions{Name: memberName})
	if err != nil {
		w.close()
		return nil, err
	}
	if _, err := weft.Join(ctx, weft.JoinOptions{StateDir: w.memberDir, Token: tok, Logger: discardLogger}); err != nil {
		w.close()
		return nil, err
	}
	if start {
		if w.member, err = w.startMember(ctx); err != nil {
			w.close()
			return nil, err
		}
	}
	return w, nil
}

func (w *weftNet) startMember(ctx context.Context) (*weft.Node, error) {
	return weft.Start(ctx, weft.Config{StateDir: w.memberDir, Listen: loopback0, Logger: discardLogger})
}

func (w *weftNet) close() {
	if w.member != nil {
		w.member.Close()
	}
	if w.anchor != nil {
		w.anchor.Close()
	}
	os.RemoveAll(w.dir)
}

// weftPair streams from the member to the anchor.
func weftPair() (pair, error) {
	w, err := newWeftNet("sink", "source", true)
	if err != nil {
		return pair{}, err
	}
	return pair{
		name:   "weft",
		listen: func() (net.Listener, error) { return w.anchor.Listen("tcp", ":5001") },
		dial: func(ctx context.Context, _ string) (net.Conn, error) {
			return w.member.Dial(ctx, "tcp", "sink:5001")
		},
		close: w.close,
	}, nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// throughput runs every configuration reps times, interleaved so that a
// noisy moment hurts all of them alike, and reports medians and ratios.
func (r *report) throughput(n int64, reps int) error {
	bare, err := barePair()
	if err != nil {
		return fmt.Errorf("bare wireguard-go: %w", err)
	}
	defer bare.close()
	wp, err := weftPair()
	if err != nil {
		return fmt.Errorf("weft nodes: %w", err)
	}
	defer wp.close()
	pairs := []pair{loopbackPair(), bare, wp}
	// Warm up: handshakes, first connections.
	for _, p := range pairs {
		if _, err := stream(p, 16<<20); err != nil {
			return err
		}
	}
	res := make([][]float64, len(pairs))
	for range reps {
		for i, p := range pairs {
			v, err := stream(p, n)
			if err != nil {
				return err
			}
			res[i] = append(res[i], v)
		}
	}
	r.linef("")
	r.linef("1. Throughput, one TCP stream over loopback, %d MiB per run, median of %d", n>>20, reps)
	r.linef("   %-20s %10s   %s", "path", "MB/s", "runs")
	for i, p := range pairs {
		runs := make([]string, len(res[i]))
		for j, v := range res[i] {
			runs[j] = fmt.Sprintf("%.0f", v)
		}
		r.linef("   %-20s %10.0f   %s", p.name, median(res[i]), strings.Join(runs, " "))
	}
	lo, ba, we := median(res[0]), median(res[1]), median(res[2])
	verdict := "meets"
	if we < 0.9*ba {
		verdict = "MISSES"
	}
	r.linef("   weft / bare          %10.2f   (target >= 0.90: %s)", we/ba, verdict)
	r.linef("   weft / loopback      %10.2f", we/lo)
	r.linef("   bare / loopback      %10.2f", ba/lo)
	return nil
}
