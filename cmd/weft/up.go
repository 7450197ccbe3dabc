package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/weft-net/weft"
	"github.com/weft-net/weft/netstack"
)

// defaultTUN is the interface `--tun` creates when given no name.
const defaultTUN = "weft0"

// tunFlag is --tun: a boolean flag that may carry an interface name
// (--tun, --tun=NAME, or --tun NAME).
type tunFlag struct {
	set  bool
	name string
}

func (f *tunFlag) String() string   { return f.name }
func (f *tunFlag) IsBoolFlag() bool { return true }

func (f *tunFlag) Set(s string) error {
	f.set = true
	switch s {
	case "true", "":
		f.name = defaultTUN
	case "false":
		f.set, f.name = false, ""
	default:
		if !validIfName(s) {
			return fmt.Errorf("interface name %q: use 1-15 letters, digits, '-', '_' or '.'", s)
		}
		f.name = s
	}
	return nil
}

// validIfName reports whether s can name a Linux network interface.
func validIfName(s string) bool {
	if s == "" || len(s) > 15 || s == "." || s == ".." {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// defaultMemoryLimit is the daemon's soft Go memory limit unless GOMEMLIMIT
// is set; defaultTUNMemoryLimit is the one in TUN mode.
const (
	defaultMemoryLimit    = 64 << 20
	defaultTUNMemoryLimit = 128 << 20
)

func init() {
	register(&command{name: "up", summary: "run the node in the foreground (creates a network first if the state is empty)", run: runUp})
}

// exposeSpec is one --expose PORT=LOCALADDR.
type exposeSpec struct {
	port   uint16
	target string
}

func parseExpose(s string) (exposeSpec, error) {
	p, target, ok := strings.Cut(s, "=")
	if !ok {
		// A bare port exposes the same port on localhost.
		p, target = s, "127.0.0.1:"+s
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil || port == 0 {
		return exposeSpec{}, fmt.Errorf("--expose %q: want PORT=LOCALADDR, e.g. 80=127.0.0.1:8080", s)
	}
	if _, _, err := net.SplitHostPort(target); err != nil {
		if _, perr := strconv.ParseUint(target, 10, 16); perr == nil {
			target = "127.0.0.1:" + target
		} else {
			return exposeSpec{}, fmt.Errorf("--expose %q: local address %q: %v", s, target, err)
		}
	}
	_, lport, _ := net.SplitHostPort(target)
	if n, err := net.LookupPort("tcp", lport); err != nil || n == 0 {
		return exposeSpec{}, fmt.Errorf("--expose %q: local port %q: want a port 1-65535, e.g. 80=127.0.0.1:8080", s, lport)
	}
	return exposeSpec{port: uint16(port), target: target}, nil
}

// iceUpgradeEnv names the environment variable that sets how long a
// relayed peer waits before `weft up` tries again for a direct path
// (weft.Config.ICEUpgradeAfter; default 30 s, doubling up to ten times
// that): WEFT_ICE_UPGRADE_AFTER=5s. It is for tests (the NAT lab), hence
// not a flag.
const iceUpgradeEnv = "WEFT_ICE_UPGRADE_AFTER"

func runUp(ctx context.Context, e *env, args []string) error {
	var state, listen, socks, httpProxy, logLevel, dhtRole string
	var bootstrap, expose listFlag
	var mtu int
	var tunName tunFlag
	var dnsAddr, metricsAddr string
	acceptDNS := true
	fs := newFlagSet(e, commands["up"], &state)
	fs.Var(&tunName, "tun", "kernel TUN mode (root): create interface `NAME` (--tun alone: weft0) instead of the userspace stack")
	fs.StringVar(&dnsAddr, "dns", "", "serve overlay DNS on `ADDR:PORT` (TUN mode default: the overlay IPv4 address, port 53; userspace default: off)")
	var idle, rotateEvery time.Duration
	fs.DurationVar(&rotateEvery, "rotate-key-every", 0, "rotate the node's WireGuard key on this schedule (e.g. 24h); 0: only on `weft rotate`")
	fs.DurationVar(&idle, "idle-timeout", weft.DefaultIdleTimeout, "remove a peer's tunnel after this long without traffic (set up again on demand); negative: never")
	fs.StringVar(&metricsAddr, "metrics", "", "serve Prometheus metrics on http://`ADDR`/metrics (e.g. 127.0.0.1:9100)")
	fs.BoolVar(&acceptDNS, "accept-dns", true, "in TUN mode, point the OS resolver at weft's DNS server for the overlay domain")
	fs.StringVar(&listen, "listen", fmt.Sprintf("0.0.0.0:%d", weft.DefaultPort), "UDP `ADDR:PORT` of the node's socket (WireGuard and control)")
	fs.Var(&bootstrap, "bootstrap", "bootstrap node `ADDR:PORT` (repeatable or comma-separated; any one answering suffices)")
	fs.StringVar(&dhtRole, "dht-role", string(weft.DHTRoleAuto), "DHT `ROLE`: auto (server if reachable unsolicited, else client), server or client")
	fs.StringVar(&socks, "socks5", "", "serve a SOCKS5 proxy into the overlay on `ADDR` (e.g. 127.0.0.1:1080)")
	fs.StringVar(&httpProxy, "http-proxy", "", "serve an HTTP (CONNECT) proxy into the overlay on `ADDR` (e.g. 127.0.0.1:8080)")
	fs.Var(&expose, "expose", "forward overlay TCP `PORT=LOCALADDR` to a local service (repeatable)")
	fs.IntVar(&mtu, "mtu", weft.DefaultMTU, "MTU of the overlay")
	fs.StringVar(&logLevel, "log-level", "info", "log `LEVEL`: debug, info, warn or error")
	var natf natFlags
	fs.Var(&natf.stun, "stun", "also ask STUN server `HOST:PORT` for the public address (repeatable; bootstrap nodes always are)")
	fs.Var(&natf.turn, "turn", "relay through external TURN server `turn:HOST[:PORT][?transport=udp|tcp&user=U&pass=P]` when no direct path works (repeatable; weft relays in records need no flag)")
	var portmap bool
	fs.BoolVar(&portmap, "portmap", true, "ask the default gateway to map the listen port (NAT-PMP), so peers reach this node directly through any NAT")
	var relay bool
	var relayListen string
	fs.BoolVar(&relay, "relay", false, "run a TURN relay for this network's members (UDP and TCP; put it on a node with a public address)")
	fs.StringVar(&relayListen, "relay-listen", "", "the relay's `ADDR:PORT` (default: the --listen IP, port 3478)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	// `--tun NAME` with a space: the name arrives as a positional argument.
	if tunName.set && tunName.name == defaultTUN && len(pos) == 1 && validIfName(pos[0]) {
		tunName.name, pos = pos[0], nil
	}
	if len(pos) > 0 {
		fmt.Fprintf(e.stderr, "unexpected argument %q\n", pos[0])
		fs.Usage()
		return errUsage
	}
	state = stateDir(state)
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: use debug, info, warn or error", logLevel)
	}
	logger := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level}))

	cfg := weft.Config{StateDir: state, MTU: mtu, Logger: logger, AcceptDNS: acceptDNS, IdleTimeout: idle, KeyRotation: rotateEvery}
	switch r := weft.DHTRole(dhtRole); r {
	case weft.DHTRoleAuto, weft.DHTRoleServer, weft.DHTRoleClient:
		cfg.DHTRole = r
	default:
		return fmt.Errorf("--dht-role %q: use auto, server or client", dhtRole)
	}
	if rotateEvery < 0 {
		return errors.New("--rotate-key-every must not be negative")
	}
	if idle == 0 {
		return errors.New("--idle-timeout 0 is ambiguous: give a duration, or a negative one to keep peers forever")
	}
	if tunName.set {
		cfg.TUN = tunName.name
		if os.Geteuid() != 0 {
			return fmt.Errorf("--tun needs root (or CAP_NET_ADMIN): run with sudo, or drop --tun to use userspace mode")
		}
	}
	if dnsAddr != "" {
		ap, err := netip.ParseAddrPort(dnsAddr)
		if err != nil {
			return fmt.Errorf("--dns %q: want IP:PORT, e.g. 127.0.0.1:5353", dnsAddr)
		}
		cfg.DNS = ap
	}
	ap, err := netip.ParseAddrPort(listen)
	if err != nil {
		return fmt.Errorf("--listen %q: want IP:PORT, e.g. 0.0.0.0:%d", listen, weft.DefaultPort)
	}
	cfg.Listen = ap
	for _, b := range bootstrap {
		ap, err := netip.ParseAddrPort(b)
		if err != nil {
			return fmt.Errorf("--bootstrap %q: want IP:PORT", b)
		}
		cfg.Bootstrap = append(cfg.Bootstrap, ap)
	}
	if err := natf.apply(&cfg); err != nil {
		return err
	}
	if relayListen != "" {
		if !relay {
			return errors.New("--relay-listen needs --relay")
		}
		ap, err := netip.ParseAddrPort(relayListen)
		if err != nil {
			return fmt.Errorf("--relay-listen %q: want IP:PORT, e.g. 0.0.0.0:3478", relayListen)
		}
		cfg.RelayListen = ap
	}
	cfg.Relay = relay
	cfg.NoPortMapping = !portmap
	if v := os.Getenv(iceUpgradeEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("%s=%q: want a positive duration, e.g. 5s", iceUpgradeEnv, v)
		}
		cfg.ICEUpgradeAfter = d
	}
	var exposes []exposeSpec
	for _, s := range expose {
		x, err := parseExpose(s)
		if err != nil {
			return err
		}
		exposes = append(exposes, x)
	}

	// A soft memory limit keeps a busy daemon's heap (wireguard-go's
	// 64 KiB packet buffers) in check; GOMEMLIMIT in the environment wins.
	// Measured (make bench): 64 MiB costs no throughput, 40 MiB costs 15%.
	// TUN mode needs more: the kernel hands wireguard-go 64 KiB TSO
	// segments that it splits into up to 128 packets, each in its own
	// 64 KiB buffer, so a stream's window of packets in flight takes
	// ~45 times its size. Under 64 MiB the GC ran without pause and cost
	// 40% of the throughput (make bench, section 4: 2.3 against 3.8
	// Gbit/s); 128 MiB keeps most of it at a peak RSS of ~120 MB, where
	// stock wireguard-go peaks at 160-310 MB with no limit.
	if os.Getenv("GOMEMLIMIT") == "" {
		limit := int64(defaultMemoryLimit)
		if cfg.TUN != "" {
			limit = defaultTUNMemoryLimit
		}
		debug.SetMemoryLimit(limit)
	}
	apiLn, err := listenAPIForUp(state)
	if err != nil {
		return err
	}
	if weft.IsEmptyState(state) {
		m, err := weft.Init(weft.InitOptions{StateDir: state})
		if err != nil {
			apiLn.Close()
			return fmt.Errorf("zero-setup init: %w", err)
		}
		fmt.Fprintf(e.stderr, "weft: no network in %s, created network %q with this node (%s) as its anchor\n", state, m.Network, m.Name)
	}
	node, err := weft.Start(ctx, cfg)
	if err != nil {
		apiLn.Close()
		if errors.Is(err, weft.ErrNotJoined) {
			return err
		}
		if strings.Contains(err.Error(), "address already in use") {
			return fmt.Errorf("%w\n(the UDP port is taken, perhaps by another weft node: pass --listen 0.0.0.0:PORT)", err)
		}
		return err
	}
	defer node.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	api := serveAPI(apiLn, node, state, logger, cancel)
	defer api.Close()

	var closers []func() error
	var wg sync.WaitGroup
	defer func() {
		for _, c := range closers {
			c()
		}
		wg.Wait()
	}()
	serve := func(what string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, netstack.ErrProxyClosed) {
				logger.Error(what+" stopped", "err", err)
			}
		}()
	}
	if srv, err := servePprof(e); err != nil {
		return err
	} else if srv != nil {
		closers = append(closers, srv.Close)
	}
	dial := netstack.DialFunc(node.Dial)
	if socks != "" {
		ln, err := net.Listen("tcp", socks)
		if err != nil {
			return fmt.Errorf("--socks5: %w", err)
		}
		s := &netstack.SOCKS5Server{Dial: dial, Logger: logger}
		closers = append(closers, s.Close)
		serve("SOCKS5 proxy", func() error { return s.Serve(ln) })
		fmt.Fprintf(e.stderr, "weft: SOCKS5 proxy on %s\n", ln.Addr())
	}
	if httpProxy != "" {
		ln, err := net.Listen("tcp", httpProxy)
		if err != nil {
			return fmt.Errorf("--http-proxy: %w", err)
		}
		s := &netstack.HTTPProxy{Dial: dial, Logger: logger}
		closers = append(closers, s.Close)
		serve("HTTP proxy", func() error { return s.Serve(ln) })
		fmt.Fprintf(e.stderr, "weft: HTTP proxy on %s\n", ln.Addr())
	}
	if metricsAddr != "" {
		ln, err := net.Listen("tcp", metricsAddr)
		if err != nil {
			return fmt.Errorf("--metrics: %w", err)
		}
		reg := prometheus.NewRegistry()
		reg.MustRegister(node.Collector(), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		closers = append(closers, srv.Close)
		serve("metrics", func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
		fmt.Fprintf(e.stderr, "weft: metrics on http://%s/metrics\n", ln.Addr())
	}
	for _, x := range exposes {
		ln, err := node.Listen("tcp", fmt.Sprintf(":%d", x.port))
		if err != nil {
			return fmt.Errorf("--expose %d: %w", x.port, err)
		}
		s := &netstack.Expose{Listener: ln, Target: x.target, Logger: logger}
		closers = append(closers, s.Close)
		serve("expose", s.Serve)
		fmt.Fprintf(e.stderr, "weft: overlay port %d → %s\n", x.port, x.target)
	}
	st, err := node.Status()
	if err == nil {
		fmt.Fprintf(e.stderr, "weft: %s.%s up: %s %s, UDP %s (node %s)\n", st.Name, st.Domain, st.IPv4, st.IPv6, st.Listen, st.NodeID.Short())
		if st.Interface != "" {
			fmt.Fprintf(e.stderr, "weft: kernel interface %s carries the overlay\n", st.Interface)
		}
		if st.Relay != nil {
			fmt.Fprintf(e.stderr, "weft: TURN relay for members on %s (advertised as %s)\n", st.Relay.Listen, st.Relay.Addr)
		}
		if st.DNS != "" {
			fmt.Fprintf(e.stderr, "weft: overlay DNS on %s (try: dig @%s -p %d NAME.%s)\n", st.DNS, netip.MustParseAddrPort(st.DNS).Addr(), netip.MustParseAddrPort(st.DNS).Port(), st.Domain)
		}
	}
	<-ctx.Done()
	fmt.Fprintln(e.stderr, "weft: shutting down")
	return nil
}

func listenAPIForUp(state string) (net.Listener, error) {
	if err := mkdirState(state); err != nil {
		return nil, err
	}
	return listenAPI(state)
}
