//go:build linux

package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/weft-net/weft/dns/dnstest"
	"github.com/weft-net/weft/internal/natlab"
)

// TestTUNMode runs two nodes in kernel TUN mode, each in a network
// namespace of its own joined by a veth pair, and reaches one from the
// other with stock programs by overlay address and by name: ping, curl,
// ssh, dig, iperf3 and wg. Then it checks that the interface, its routes
// and the resolver configuration are gone after `weft down`, and after
// kill -9 followed by a new `weft up` and `weft down`.
//
// Each namespace has its own /etc/netns/NAME/resolv.conf, which
// `ip netns exec` shows the programs in it as /etc/resolv.conf: weft
// rewrites that file, never the host's: it uses resolv.conf mode because
// the file does not name systemd-resolved's stub, even where the host runs
// systemd-resolved. Beta's original names a fake upstream DNS
// server that the test runs in beta's namespace.
func TestTUNMode(t *testing.T) {
	if testing.Short() {
		t.Skip("the TUN end-to-end test runs namespaces and processes; skipped with -short")
	}
	natlab.Root(t)
	start := time.Now()
	weftBinary(t) // build first: the namespaces and daemons start right after
	hostResolv, _ := os.ReadFile("/etc/resolv.conf")

	lab := natlab.New(t, natlab.Options{Prefix: "wefttun"})
	nsA, nsB := lab.Namespace(t, "alpha"), lab.Namespace(t, "beta")
	lab.Veth(t,
		natlab.End{NS: nsA, Dev: "eth0", Addrs: []string{"10.99.0.1/24"}},
		natlab.End{NS: nsB, Dev: "eth0", Addrs: []string{"10.99.0.2/24"}})

	// wireguard-go's UAPI sockets live in /var/run/wireguard, shared by
	// all namespaces, so the interface names are unique to this run.
	tag := randTag()
	ifA, ifB := "wtun"+tag+"a", "wtun"+tag+"b"
	t.Cleanup(func() {
		for _, n := range []string{ifA, ifB} {
			os.Remove(uapiSocket(n))
		}
	})

	// The fake upstream: any A question gets 192.0.2.77, names starting
	// with "nx" get NXDOMAIN.
	const upstreamIP, externalIP = "10.53.0.53", "192.0.2.77"
	nsB.AddAddr(t, "lo", upstreamIP+"/32")
	upstream := startFakeUpstream(t, nsB, upstreamIP+":53", dnstest.Answer(netip.MustParseAddr(externalIP), 60))

	// Originals with comments, search and options lines (rotate, which weft
	// drops while it runs), to check that they come back byte for byte.
	origA := "# alpha's resolver before weft\nsearch lab.test\nnameserver " + upstreamIP + "\noptions rotate timeout:1\n"
	origB := "# beta's resolver before weft\n\nnameserver " + upstreamIP + "\noptions edns0 timeout:2 attempts:2\n"
	nsA.SetResolvConf(t, origA)
	nsB.SetResolvConf(t, origB)

	dir := t.TempDir()
	stA, stB := filepath.Join(dir, "A"), filepath.Join(dir, "B")
	mustWeft(t, "init", "--state", stA, "--name", "alpha")
	upArgsA := []string{"--tun", ifA, "--listen", "10.99.0.1:41641"} // --tun NAME, as people type it
	alpha := startTUNDaemon(t, nsA, "alpha", stA, upArgsA...)
	tok := strings.TrimSpace(mustWeft(t, "invite", "--state", stA, "--name", "beta").stdout)
	if r := weftIn(t, nsB, "join", "--state", stB, tok); r.code != 0 {
		t.Fatalf("join in beta's namespace:\n%v", r)
	}
	beta := startTUNDaemon(t, nsB, "beta", stB, "--tun="+ifB, "--listen", "10.99.0.2:41641")
	sa, sb := tunStatus(t, stA), tunStatus(t, stB)
	alphaName := "alpha." + sa.Domain
	dnsB := netip.MustParseAddrPort(sb.DNS).Addr().String()

	// Alpha's web server, in alpha's namespace on its overlay addresses.
	// It says who asked, to show that the overlay source address arrives.
	web := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprintf(w, "hello from alpha, %s\n", host)
	})}
	const webPort = "8000"
	for _, ip := range []netip.Addr{sa.IPv4, sa.IPv6} {
		ln, err := nsA.Listen("tcp", net.JoinHostPort(ip.String(), webPort))
		if err != nil {
			t.Fatalf("web server on alpha's overlay address: %v", err)
		}
		go web.Serve(ln)
	}
	t.Cleanup(func() { web.Close() })

	t.Run("status", func(t *testing.T) {
		for _, c := range []struct {
			st    statusJSON
			iface string
		}{{sa, ifA}, {sb, ifB}} {
			if c.st.Mode != "tun" || c.st.Interface != c.iface || c.st.UAPI != c.iface {
				t.Errorf("%s: status mode %q, interface %q, uapi %q; want tun, %s, %s", c.st.Name, c.st.Mode, c.st.Interface, c.st.UAPI, c.iface, c.iface)
			}
			if want := netip.AddrPortFrom(c.st.IPv4, 53).String(); c.st.DNS != want {
				t.Errorf("%s: status dns %q, want %s", c.st.Name, c.st.DNS, want)
			}
		}
	})
	t.Run("interface", func(t *testing.T) {
		for _, c := range []struct {
			ns    *natlab.Namespace
			st    statusJSON
			iface string
		}{{nsA, sa, ifA}, {nsB, sb, ifB}} {
			link := c.ns.IP(t, "addr", "show", "dev", c.iface)
			for _, want := range []string{"mtu 1420", ",UP", "inet " + c.st.IPv4.String() + "/", "inet6 " + c.st.IPv6.String() + "/"} {
				if !strings.Contains(link, want) {
					t.Errorf("%s: `ip addr show dev %s` lacks %q:\n%s", c.st.Name, c.iface, want, link)
				}
			}
			routes := c.ns.IP(t, "route", "show", "dev", c.iface) + c.ns.IP(t, "-6", "route", "show", "dev", c.iface)
			for _, want := range []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10"), netip.PrefixFrom(c.st.IPv6, 48).Masked()} {
				if !strings.Contains(routes, want.String()) {
					t.Errorf("%s: no route to %s on %s:\n%s", c.st.Name, want, c.iface, routes)
				}
			}
		}
	})
	t.Run("resolv.conf", func(t *testing.T) {
		got := readFile(t, nsB.ResolvConfPath())
		rc := nameservers(got)
		if !strings.HasPrefix(got, "# Generated by weft") || len(rc) != 2 || rc[0] != sb.IPv4.String() || rc[1] != upstreamIP {
			t.Errorf("beta's resolv.conf while weft runs: want weft's, naming %s then %s:\n%s", sb.IPv4, upstreamIP, got)
		}
		if strings.Contains(readFile(t, nsA.ResolvConfPath()), "rotate") {
			t.Errorf("alpha's resolv.conf keeps the rotate option while weft runs")
		}
		if !fileExists(filepath.Join(stB, "resolv.conf.weft-backup")) {
			t.Errorf("no backup of beta's resolv.conf in its state directory")
		}
	})

	// ping goes first. The first packet to the IPv4 address meets no
	// configured peer: weft looks alpha up and drops it (demandTUN), so
	// ping runs until it has two replies rather than count losses.
	t.Run("ping", func(t *testing.T) {
		natlab.Need(t, "ping")
		for _, c := range []struct {
			args []string
			want string // in the first line
		}{
			{[]string{sa.IPv4.String()}, sa.IPv4.String()},
			{[]string{sa.IPv6.String()}, sa.IPv6.String()},
			{[]string{"-4", alphaName}, "(" + sa.IPv4.String() + ")"},
			{[]string{"-6", alphaName}, "(" + sa.IPv6.String() + ")"},
		} {
			args := append([]string{"-c", "2", "-i", "0.2", "-w", "10"}, c.args...)
			r := nsB.Run(t, 15*time.Second, "ping", args...)
			if r.Err != nil || !strings.Contains(firstLine(r.Stdout), c.want) || !strings.Contains(r.Stdout, " 2 received") {
				t.Errorf("ping %s from beta: want two replies from %s:\n%v", strings.Join(c.args, " "), c.want, r)
			}
		}
	})
	t.Run("dig", func(t *testing.T) {
		natlab.Need(t, "dig")
		id := sa.NodeID
		for _, c := range []struct {
			args []string
			want string
		}{
			{[]string{alphaName, "A"}, sa.IPv4.String()},
			{[]string{alphaName, "AAAA"}, sa.IPv6.String()},
			{[]string{strings.ToUpper(alphaName), "A"}, sa.IPv4.String()},
			{[]string{id[:32] + "." + id[32:] + ".id." + sa.Domain, "A"}, sa.IPv4.String()},
			{[]string{id[:32] + "." + id[32:] + ".id." + sa.Domain, "AAAA"}, sa.IPv6.String()},
			{[]string{"-x", sa.IPv4.String()}, alphaName + "."},
			{[]string{"-x", sa.IPv6.String()}, alphaName + "."},
			{[]string{"example.test", "A"}, externalIP},
		} {
			args := append([]string{"+short", "+time=3", "+tries=2", "@" + dnsB}, c.args...)
			out := nsB.MustRun(t, "dig", args...)
			if got := strings.TrimSpace(out); !sameAnswer(got, c.want) {
				t.Errorf("dig %s: got %q, want %q", strings.Join(args, " "), got, c.want)
			}
		}
		if upstream.Load() == 0 {
			t.Errorf("example.test was answered without asking the upstream")
		}
		for _, c := range []struct {
			args   []string
			status string
		}{
			{[]string{"nosuch." + sa.Domain, "A"}, "NXDOMAIN"},
			{[]string{"nx.example.test", "A"}, "NXDOMAIN"}, // the upstream's own
		} {
			args := append([]string{"+time=3", "+tries=2", "@" + dnsB}, c.args...)
			out := nsB.MustRun(t, "dig", args...)
			if !strings.Contains(out, "status: "+c.status) {
				t.Errorf("dig %s: want status %s:\n%s", strings.Join(args, " "), c.status, out)
			}
		}
		// Without @: through beta's resolv.conf, which weft rewrote.
		out := nsB.MustRun(t, "dig", "+time=3", "+tries=2", "example.test", "A")
		if !strings.Contains(out, "SERVER: "+sb.IPv4.String()+"#53") || !strings.Contains(out, externalIP) {
			t.Errorf("dig example.test through resolv.conf: want weft's server %s answering %s:\n%s", sb.IPv4, externalIP, out)
		}
		// Alpha's DNS server, across the tunnel.
		if got := strings.TrimSpace(nsB.MustRun(t, "dig", "+short", "+time=3", "+tries=2", "@"+sa.IPv4.String(), "beta."+sa.Domain, "A")); got != sb.IPv4.String() {
			t.Errorf("dig @alpha beta: got %q, want %s", got, sb.IPv4)
		}
	})
	t.Run("resolve", func(t *testing.T) {
		r := mustWeft(t, "resolve", "--state", stB, alphaName)
		for _, want := range []string{sa.NodeID, sa.IPv4.String(), sa.IPv6.String()} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("weft resolve %s lacks %s:\n%s", alphaName, want, r.stdout)
			}
		}
	})
	t.Run("curl", func(t *testing.T) {
		natlab.Need(t, "curl")
		for _, c := range []struct {
			flag string
			from netip.Addr
		}{{"-4", sb.IPv4}, {"-6", sb.IPv6}} {
			url := "http://" + alphaName + ":" + webPort + "/"
			out := nsB.MustRun(t, "curl", "-sS", "--fail", "--max-time", "10", c.flag, url)
			if want := fmt.Sprintf("hello from alpha, %s\n", c.from); out != want {
				t.Errorf("curl %s %s: got %q, want %q", c.flag, url, out, want)
			}
		}
	})
	t.Run("ssh", func(t *testing.T) {
		if why := sshdUnavailable(); why != "" {
			t.Skip(why)
		}
		addr := net.JoinHostPort(sa.IPv4.String(), "22")
		s, config := newSSHDConfig(t, t.TempDir(), addr)
		sshd := natlab.StartCmd(t, "sshd", nsA.Command(context.Background(), sshdPath, "-D", "-e", "-f", config))
		waitSSHBanner(t, addr, func() (net.Conn, error) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			return nsA.DialContext(ctx, "tcp", addr)
		}, sshd.Exited, sshd.Output)
		out := nsB.MustRun(t, "ssh", "-F", "none",
			"-o", "StrictHostKeyChecking=no",
			"-o", "UserKnownHostsFile=/dev/null",
			"-o", "LogLevel=ERROR",
			"-o", "BatchMode=yes",
			"-o", "IdentitiesOnly=yes",
			"-o", "ConnectTimeout=10",
			"-i", s.key,
			s.user+"@"+alphaName, "echo through-weft-tun; echo $SSH_CONNECTION")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 2 || lines[0] != "through-weft-tun" || !strings.HasPrefix(lines[1], sb.IPv4.String()+" ") {
			t.Errorf("ssh %s from beta: got %q, want through-weft-tun from %s", alphaName, out, sb.IPv4)
		}
	})
	t.Run("iperf3", func(t *testing.T) {
		natlab.Need(t, "iperf3")
		// Not bound to one address: the client takes whichever of alpha's
		// addresses the resolver gives first.
		srv := nsA.Start(t, "iperf3 server", "iperf3", "-s", "--forceflush", "-p", "5201")
		srv.WaitOutput(t, "Server listening", 10*time.Second)
		r := nsB.Run(t, 20*time.Second, "iperf3", "-c", alphaName, "-p", "5201", "-t", "2", "-J")
		var res struct {
			End struct {
				SumReceived struct {
					BitsPerSecond float64 `json:"bits_per_second"`
				} `json:"sum_received"`
			} `json:"end"`
			Error string `json:"error"`
		}
		if err := json.Unmarshal([]byte(r.Stdout), &res); err != nil || r.Err != nil || res.Error != "" {
			t.Fatalf("iperf3 -c %s: %v\n%v", alphaName, err, r)
		}
		bps := res.End.SumReceived.BitsPerSecond
		if bps <= 0 {
			t.Errorf("iperf3: %v bit/s received", bps)
		}
		t.Logf("iperf3 beta -> alpha through %s/%s: %.0f Mbit/s", ifB, ifA, bps/1e6)
	})
	t.Run("wg", func(t *testing.T) {
		natlab.Need(t, "wg")
		pubA := strings.TrimSpace(nsA.MustRun(t, "wg", "show", ifA, "public-key"))
		out := nsB.MustRun(t, "wg", "show", ifB)
		for _, want := range []string{
			"interface: " + ifB, "peer: " + pubA, "endpoint: 10.99.0.1:41641", "latest handshake: ",
			netip.PrefixFrom(sa.IPv4, 32).String(), netip.PrefixFrom(sa.IPv6, 128).String(),
		} {
			if !strings.Contains(out, want) {
				t.Errorf("wg show %s in beta lacks %q:\n%s", ifB, want, out)
			}
		}
		conf := nsB.MustRun(t, "wg", "showconf", ifB)
		if !strings.Contains(conf, "[Peer]") || !strings.Contains(conf, "PublicKey = "+pubA) {
			t.Errorf("wg showconf %s lacks alpha's peer:\n%s", ifB, conf)
		}
	})

	t.Run("down", func(t *testing.T) {
		stopTUNDaemon(t, beta, stB)
		checkTUNGone(t, nsB, ifB, stB, origB)
	})

	t.Run("kill -9 and up again", func(t *testing.T) {
		if err := alpha.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		alpha.Wait(t, 5*time.Second)
		waitLinkGone(t, nsA, ifA)
		// The crash left weft's resolv.conf and the backup behind.
		if got := readFile(t, nsA.ResolvConfPath()); !strings.HasPrefix(got, "# Generated by weft") {
			t.Errorf("alpha's resolv.conf after kill -9: want weft's still:\n%s", got)
		}
		if !fileExists(filepath.Join(stA, "resolv.conf.weft-backup")) {
			t.Fatalf("no resolv.conf backup after kill -9")
		}
		again := startTUNDaemon(t, nsA, "alpha again", stA, upArgsA...)
		// The new run restored the original before installing its own:
		// the original's nameserver, once, after weft's.
		got := readFile(t, nsA.ResolvConfPath())
		if rc := nameservers(got); len(rc) != 2 || rc[0] != sa.IPv4.String() || rc[1] != upstreamIP {
			t.Errorf("alpha's resolv.conf after restarting: want weft's over the original, naming %s then %s:\n%s", sa.IPv4, upstreamIP, got)
		}
		nsA.IP(t, "link", "show", ifA)
		stopTUNDaemon(t, again, stA)
		checkTUNGone(t, nsA, ifA, stA, origA)
	})

	if got, _ := os.ReadFile("/etc/resolv.conf"); string(got) != string(hostResolv) {
		t.Errorf("the host's /etc/resolv.conf changed:\n%s", got)
	}
	if d := time.Since(start); d > 60*time.Second {
		t.Errorf("the TUN end-to-end test took %v; keep it under a minute", d)
	}
}

// statusJSON is what the TUN test reads from `weft status --json`.
type statusJSON struct {
	NodeID    string     `json:"node_id"`
	Name      string     `json:"name"`
	Domain    string     `json:"domain"`
	IPv4      netip.Addr `json:"ipv4"`
	IPv6      netip.Addr `json:"ipv6"`
	Mode      string     `json:"mode"`
	Interface string     `json:"interface"`
	DNS       string     `json:"dns"`
	UAPI      string     `json:"uapi"`
}

func tunStatus(t *testing.T, state string) statusJSON {
	t.Helper()
	r := mustWeft(t, "status", "--state", state, "--json")
	var st statusJSON
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("status --json: %v\n%v", err, r)
	}
	if len(st.NodeID) != 64 || !st.IPv4.IsValid() || !st.IPv6.IsValid() || st.Domain == "" {
		t.Fatalf("status --json lacks node_id, ipv4, ipv6 or domain:\n%s", r.stdout)
	}
	return st
}

// weftIn runs the weft binary to completion in ns.
func weftIn(t *testing.T, ns *natlab.Namespace, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := ns.Command(ctx, weftBinary(t), args...)
	cmd.Env = testEnv(t)
	lr := ns.RunCmd(cmd)
	r := result{args: args, stdout: lr.Stdout, stderr: lr.Stderr, code: lr.ExitCode()}
	if ctx.Err() != nil {
		t.Fatalf("weft %s in %s: timed out\n%v", strings.Join(args, " "), ns, r)
	}
	checkNoPanic(t, r)
	return r
}

// startTUNDaemon runs `weft up --state STATE ARGS...` in ns and waits until
// it answers `weft status` with its interface up.
func startTUNDaemon(t *testing.T, ns *natlab.Namespace, label, state string, args ...string) *natlab.Process {
	t.Helper()
	cmd := ns.Command(context.Background(), weftBinary(t), append([]string{"up", "--state", state, "--log-level", "debug"}, args...)...)
	cmd.Env = testEnv(t)
	p := natlab.StartCmd(t, label, cmd)
	deadline := time.Now().Add(15 * time.Second)
	for {
		if p.Exited() {
			t.Fatalf("%s exited early:\n%s", label, p.Output())
		}
		r := runWeft(t, "", "status", "--state", state, "--json")
		if r.code == 0 {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: API not answering after 15s; last status:\n%v\ndaemon output:\n%s", label, r, p.Output())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stopTUNDaemon runs `weft down` and checks that the daemon exits cleanly.
func stopTUNDaemon(t *testing.T, p *natlab.Process, state string) {
	t.Helper()
	r := mustWeft(t, "down", "--state", state)
	if !strings.Contains(r.stdout, "weft stopped") {
		t.Errorf("weft down: want \"weft stopped\":\n%v", r)
	}
	if err := p.Wait(t, 10*time.Second); err != nil {
		t.Errorf("%s exited with %v after weft down\n%s", p.Label, err, p.Output())
	}
	if out := p.Output(); strings.Contains(out, "level=ERROR") {
		t.Errorf("%s logged errors:\n%s", p.Label, out)
	}
}

// checkTUNGone checks that a stopped node left nothing behind: no
// interface or routes, the original resolv.conf byte for byte, no backup,
// no UAPI socket.
func checkTUNGone(t *testing.T, ns *natlab.Namespace, iface, state, origResolv string) {
	t.Helper()
	waitLinkGone(t, ns, iface)
	routes := ns.IP(t, "route", "show", "table", "all") + ns.IP(t, "-6", "route", "show", "table", "all")
	for _, s := range []string{iface, "100.64.0.0/10"} {
		if strings.Contains(routes, s) {
			t.Errorf("%s: routes mention %s after weft stopped:\n%s", ns, s, routes)
		}
	}
	if got := readFile(t, ns.ResolvConfPath()); got != origResolv {
		t.Errorf("%s: resolv.conf after weft stopped:\n%q\nwant the original:\n%q", ns, got, origResolv)
	}
	if fi, err := os.Stat(ns.ResolvConfPath()); err == nil && fi.Mode().Perm() != 0o644 {
		t.Errorf("%s: resolv.conf mode %v after weft stopped, want 0644", ns, fi.Mode().Perm())
	}
	if fileExists(filepath.Join(state, "resolv.conf.weft-backup")) {
		t.Errorf("%s: the resolv.conf backup is still in the state directory after weft stopped", ns)
	}
	if fileExists(uapiSocket(iface)) {
		t.Errorf("%s: %s still exists after weft stopped", ns, uapiSocket(iface))
	}
}

// waitLinkGone waits until iface no longer exists in ns: the kernel
// removes a TUN interface when its last file descriptor closes.
func waitLinkGone(t *testing.T, ns *natlab.Namespace, iface string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := ns.Run(t, 0, "ip", "link", "show", "dev", iface)
		if r.Err != nil && strings.Contains(r.Stderr, "does not exist") {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: interface %s still there 5s after weft stopped:\n%v", ns, iface, r)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startFakeUpstream serves DNS with h on addr (UDP and TCP) in ns until the
// test ends, and counts the queries.
func startFakeUpstream(t *testing.T, ns *natlab.Namespace, addr string, h func(mdns.ResponseWriter, *mdns.Msg, bool)) *atomic.Int64 {
	t.Helper()
	var n atomic.Int64
	pc, err := ns.ListenPacket("udp", addr)
	if err != nil {
		t.Fatalf("fake upstream DNS: %v", err)
	}
	ln, err := ns.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("fake upstream DNS: %v", err)
	}
	servers := []*mdns.Server{
		{PacketConn: pc, Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) { n.Add(1); h(w, r, false) })},
		{Listener: ln, Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) { n.Add(1); h(w, r, true) })},
	}
	var wg sync.WaitGroup
	for _, srv := range servers {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		wg.Add(1)
		go func() {
			defer wg.Done()
			srv.ActivateAndServe()
		}()
		<-started
	}
	t.Cleanup(func() {
		for _, srv := range servers {
			srv.Shutdown()
		}
		wg.Wait()
	})
	return &n
}

// uapiSocket is where wireguard-go serves `wg` for an interface.
func uapiSocket(iface string) string { return filepath.Join("/var/run/wireguard", iface+".sock") }

func randTag() string {
	b := make([]byte, 3)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func fileExists(path string) bool {
	_, err := os.Lstat(path)
	return !errors.Is(err, fs.ErrNotExist)
}

// nameservers lists the nameserver lines of a resolv.conf.
func nameservers(rc string) []string {
	var ns []string
	for _, line := range strings.Split(rc, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "nameserver" {
			ns = append(ns, f[1])
		}
	}
	return ns
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// sameAnswer compares a dig +short answer with want, IP addresses by value.
func sameAnswer(got, want string) bool {
	g, err1 := netip.ParseAddr(got)
	w, err2 := netip.ParseAddr(want)
	if err1 == nil && err2 == nil {
		return g == w
	}
	return got == want
}
