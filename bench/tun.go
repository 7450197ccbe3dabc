package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/weft-net/weft/dns"
)

// Section 4 runs kernel TUN mode between two network namespaces joined by a
// veth pair, beside the raw veth and stock wireguard-go (its own main
// package, configured with `wg`) on the same pair:
//
//	nsA  vethA 10.231.0.1/24  <->  vethB 10.231.0.2/24  nsB
//	     wireguard-go 10.232.0.1   ...   10.232.0.2
//	     weft --tun   overlay IPv4 ...   overlay IPv4
//
// iperf3 runs from A to a server in B; the three paths are measured
// interleaved, round by round, so a noisy moment hurts them alike.

const (
	vethNetA  = "10.231.0.1"
	vethNetB  = "10.231.0.2"
	wgNetA    = "10.232.0.1"
	wgNetB    = "10.232.0.2"
	wgPort    = 51820
	weftPort  = 41641
	dnsLoadD  = 3 * time.Second
	dnsLoadCc = 8
)

// cleanups run at the end of section 4, or on SIGINT/SIGTERM, in reverse
// order: namespaces and subprocesses must not outlive the bench.
var cleanups struct {
	mu  sync.Mutex
	fns []func()
}

func atCleanup(f func()) {
	cleanups.mu.Lock()
	cleanups.fns = append(cleanups.fns, f)
	cleanups.mu.Unlock()
}

// runCleanups runs and forgets the registered cleanups. It holds the lock
// throughout, so a second caller (the signal handler racing the normal
// path) returns only once everything is cleaned up.
func runCleanups() {
	cleanups.mu.Lock()
	defer cleanups.mu.Unlock()
	fns := cleanups.fns
	cleanups.fns = nil
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
}

// tunPrereqs says why section 4 cannot run here, or "" if it can.
func tunPrereqs() string {
	if os.Geteuid() != 0 {
		return "needs root"
	}
	for _, tool := range []string{"ip", "iperf3", "wg", "ping", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Sprintf("needs root and %s (not found; make setup installs it)", tool)
		}
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return "needs root and /dev/net/tun"
	}
	ns := fmt.Sprintf("weftb-probe-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		return fmt.Sprintf("needs root with `ip netns` support (%s)", strings.TrimSpace(string(out)))
	}
	exec.Command("ip", "netns", "del", ns).Run()
	return ""
}

func run(argv ...string) (string, error) {
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %v: %s", strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

func runAll(cmds ...[]string) error {
	for _, c := range cmds {
		if _, err := run(c...); err != nil {
			return err
		}
	}
	return nil
}

// netnsExec prefixes argv to run in namespace ns.
func netnsExec(ns string, argv ...string) []string {
	return append([]string{"ip", "netns", "exec", ns}, argv...)
}

// proc is a long-running subprocess owned by section 4.
type proc struct {
	cmd *exec.Cmd
	out bytes.Buffer
}

func startProc(argv []string, env ...string) (*proc, error) {
	p := &proc{cmd: exec.Command(argv[0], argv[1:]...)}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
	}
	atCleanup(p.stop)
	return p, nil
}

func (p *proc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
}

// waitFor polls ok every 50ms until it returns true or d passes.
func waitFor(d time.Duration, ok func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if ok() {
			return true
		}
	}
	return ok()
}

// iperf3 runs a TCP test from nsA to addr for secs seconds and returns the
// receiver's rate in Gbit/s.
func iperf3(ns, addr string, secs int) (float64, error) {
	out, err := run(netnsExec(ns, "iperf3", "-c", addr, "-t", strconv.Itoa(secs), "-J")...)
	if err != nil {
		return 0, err
	}
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		return 0, fmt.Errorf("iperf3 to %s: %v", addr, err)
	}
	if res.Error != "" {
		return 0, fmt.Errorf("iperf3 to %s: %s", addr, res.Error)
	}
	return res.End.SumReceived.BitsPerSecond / 1e9, nil
}

var rttRE = regexp.MustCompile(`= [0-9.]+/([0-9.]+)/`)

// pingAvg returns ping's average RTT in milliseconds.
func pingAvg(ns, addr string) (float64, error) {
	out, err := run(netnsExec(ns, "ping", "-c", "20", "-i", "0.05", "-q", addr)...)
	if err != nil {
		return 0, err
	}
	m := rttRE.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("ping %s: no rtt line in %q", addr, out)
	}
	return strconv.ParseFloat(m[1], 64)
}

// tunSetup is the state of one section 4 run.
type tunSetup struct {
	dir            string
	nsA, nsB       string
	wgA, wgB       string // wireguard-go interface names
	weftA, weftB   string // weft TUN interface names
	weftIPA        string // overlay IPv4 of the weft nodes
	weftIPB        string
	weftDomain     string
	weftNameB      string
	daemonA, daemB *daemon
	wgProcs        [2]*proc // stock wireguard-go in A and B
}

func (r *report) tunMode(bin string, rounds, secs int) error {
	r.linef("")
	if why := tunPrereqs(); why != "" {
		r.linef("4. TUN mode: skipped: %s", why)
		return nil
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("%w (run `make build` first, or pass --weft)", err)
	}
	bin, _ = filepath.Abs(bin)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	stopSig := make(chan struct{})
	go func() {
		select {
		case s := <-sig:
			fmt.Fprintf(os.Stderr, "bench: %v: cleaning up namespaces and processes\n", s)
			runCleanups()
			os.Exit(1)
		case <-stopSig:
		}
	}()
	defer func() {
		signal.Stop(sig)
		close(stopSig)
		runCleanups()
	}()

	s, err := setupTun(bin)
	if err != nil {
		return err
	}

	type path struct {
		name, addr string
		runs       []float64
	}
	paths := []*path{
		{name: "raw veth", addr: vethNetB},
		{name: "stock wireguard-go", addr: wgNetB},
		{name: "weft --tun", addr: s.weftIPB},
	}
	// Warm up: handshakes, on-demand tunnel, ARP.
	for _, p := range paths {
		if !waitFor(15*time.Second, func() bool {
			return exec.Command("ip", "netns", "exec", s.nsA, "ping", "-c", "1", "-W", "1", p.addr).Run() == nil
		}) {
			return fmt.Errorf("%s: %s does not answer ping from %s", p.name, p.addr, s.nsA)
		}
	}
	for _, p := range paths {
		if _, err := iperf3(s.nsA, p.addr, 1); err != nil {
			return err
		}
	}
	for range rounds {
		for _, p := range paths {
			v, err := iperf3(s.nsA, p.addr, secs)
			if err != nil {
				return err
			}
			p.runs = append(p.runs, v)
		}
	}
	rtt := make([]float64, len(paths))
	for i, p := range paths {
		if rtt[i], err = pingAvg(s.nsA, p.addr); err != nil {
			return err
		}
	}
	var peak [4]int64 // weft A, B, stock A, B
	for i, pid := range []int{s.daemonA.cmd.Process.Pid, s.daemB.cmd.Process.Pid, s.wgProcs[0].cmd.Process.Pid, s.wgProcs[1].cmd.Process.Pid} {
		if peak[i], err = procKB(pid, "VmHWM"); err != nil {
			return err
		}
	}
	dnsRes, dnsErr := dnsLoadIn(s.nsA, netip.AddrPortFrom(netip.MustParseAddr(s.weftIPA), 53),
		[]string{s.weftNameB + "." + s.weftDomain, "alpha." + s.weftDomain})

	r.linef("4. TUN mode between two network namespaces over a veth pair: iperf3 TCP, %d rounds x %d s, median", rounds, secs)
	r.linef("   %-20s %10s   %-22s %s", "path", "Gbit/s", "runs", "ping avg")
	for i, p := range paths {
		runs := make([]string, len(p.runs))
		for j, v := range p.runs {
			runs[j] = fmt.Sprintf("%.2f", v)
		}
		r.linef("   %-20s %10.2f   %-22s %.3f ms", p.name, median(p.runs), strings.Join(runs, " "), rtt[i])
	}
	veth, stock, wf := median(paths[0].runs), median(paths[1].runs), median(paths[2].runs)
	r.linef("   weft / stock         %10.2f   (target >= 1.00: %s)", wf/stock, verdict(wf >= stock))
	r.linef("   weft / veth          %10.2f", wf/veth)
	r.linef("   stock / veth         %10.2f", stock/veth)
	r.linef("   ping weft - veth     %10.3f ms", rtt[2]-rtt[0])
	r.linef("   peak RSS, sender/receiver: weft --tun %.1f/%.1f MB, stock wireguard-go %.1f/%.1f MB",
		float64(peak[0])/1024, float64(peak[1])/1024, float64(peak[2])/1024, float64(peak[3])/1024)
	if dnsErr != nil {
		r.linef("   DNS: %v", dnsErr)
	} else {
		r.linef("   DNS of the running TUN node (overlay %s:53), cached overlay names, %d workers, %s:", s.weftIPA, dnsLoadCc, dnsLoadD)
		r.linef("     %.0f queries/s   p50 %s   p99 %s   errors %d",
			dnsRes.QPS, dnsRes.P50.Round(time.Microsecond), dnsRes.P99.Round(time.Microsecond), dnsRes.Errors)
	}
	return nil
}

// setupTun creates the namespaces, the veth pair, the iperf3 server, both
// wireguard-go devices and both weft nodes. Everything it starts is
// registered with atCleanup.
func setupTun(bin string) (*tunSetup, error) {
	id := os.Getpid() % 1000000
	s := &tunSetup{
		nsA: fmt.Sprintf("weftb%d-a", id), nsB: fmt.Sprintf("weftb%d-b", id),
		wgA: fmt.Sprintf("wgb%da", id), wgB: fmt.Sprintf("wgb%db", id),
		weftA: fmt.Sprintf("wft%da", id), weftB: fmt.Sprintf("wft%db", id),
	}
	vethA, vethB := fmt.Sprintf("wbv%da", id), fmt.Sprintf("wbv%db", id)
	var err error
	if s.dir, err = os.MkdirTemp("", "weft-bench-tun-"); err != nil {
		return nil, err
	}
	atCleanup(func() { os.RemoveAll(s.dir) })

	// Build stock wireguard-go first: it is the slow part on a cold cache.
	wgBin := filepath.Join(s.dir, "wireguard-go")
	if _, err := run("go", "build", "-o", wgBin, "golang.zx2c4.com/wireguard"); err != nil {
		return nil, fmt.Errorf("building stock wireguard-go: %w", err)
	}

	for _, ns := range []string{s.nsA, s.nsB} {
		if _, err := run("ip", "netns", "add", ns); err != nil {
			return nil, err
		}
		atCleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	if err := runAll(
		[]string{"ip", "link", "add", vethA, "netns", s.nsA, "type", "veth", "peer", "name", vethB, "netns", s.nsB},
		[]string{"ip", "-n", s.nsA, "addr", "add", vethNetA + "/24", "dev", vethA},
		[]string{"ip", "-n", s.nsB, "addr", "add", vethNetB + "/24", "dev", vethB},
		[]string{"ip", "-n", s.nsA, "link", "set", "lo", "up"},
		[]string{"ip", "-n", s.nsB, "link", "set", "lo", "up"},
		[]string{"ip", "-n", s.nsA, "link", "set", vethA, "up"},
		[]string{"ip", "-n", s.nsB, "link", "set", vethB, "up"},
	); err != nil {
		return nil, err
	}
	if _, err := startProc(netnsExec(s.nsB, "iperf3", "-s")); err != nil {
		return nil, err
	}

	// Stock wireguard-go, configured with wg like any user would.
	var keys [2]struct{ priv, pub string }
	for i := range keys {
		out, err := run("wg", "genkey")
		if err != nil {
			return nil, err
		}
		keys[i].priv = strings.TrimSpace(out)
		c := exec.Command("wg", "pubkey")
		c.Stdin = strings.NewReader(keys[i].priv)
		pub, err := c.Output()
		if err != nil {
			return nil, fmt.Errorf("wg pubkey: %w", err)
		}
		keys[i].pub = strings.TrimSpace(string(pub))
	}
	type wgEnd struct{ ns, ifc, addr, peerVeth, peerAddr string }
	ends := []wgEnd{{s.nsA, s.wgA, wgNetA, vethNetB, wgNetB}, {s.nsB, s.wgB, wgNetB, vethNetA, wgNetA}}
	for i, e := range ends {
		if s.wgProcs[i], err = startProc(netnsExec(e.ns, wgBin, "-f", e.ifc), "WG_PROCESS_FOREGROUND=1"); err != nil {
			return nil, err
		}
		sock := "/var/run/wireguard/" + e.ifc + ".sock"
		if !waitFor(10*time.Second, func() bool { _, err := os.Stat(sock); return err == nil }) {
			return nil, fmt.Errorf("wireguard-go %s: no UAPI socket %s after 10s", e.ifc, sock)
		}
		keyFile := filepath.Join(s.dir, e.ifc+".key")
		if err := os.WriteFile(keyFile, []byte(keys[i].priv+"\n"), 0o600); err != nil {
			return nil, err
		}
		if err := runAll(
			netnsExec(e.ns, "wg", "set", e.ifc, "private-key", keyFile, "listen-port", strconv.Itoa(wgPort),
				"peer", keys[i^1].pub, "endpoint", fmt.Sprintf("%s:%d", e.peerVeth, wgPort), "allowed-ips", e.peerAddr+"/32"),
			[]string{"ip", "-n", e.ns, "addr", "add", e.addr + "/24", "dev", e.ifc},
			[]string{"ip", "-n", e.ns, "link", "set", e.ifc, "up"},
		); err != nil {
			return nil, err
		}
	}

	// weft: A is the anchor; B joins through it over the veth.
	dirA, dirB := filepath.Join(s.dir, "alpha"), filepath.Join(s.dir, "beta")
	s.weftNameB = "beta"
	if _, err := weftCmd(bin, "init", "--state", dirA, "--name", "alpha"); err != nil {
		return nil, err
	}
	up := func(ns, name, dir, ifc, listen string) (*daemon, error) {
		d, err := startDaemonArgv(name, netnsExec(ns, bin, "up", "--state", dir, "--log-level", "warn",
			"--tun", ifc, "--accept-dns=false", "--listen", listen))
		if err != nil {
			return nil, err
		}
		atCleanup(d.stop)
		return d, nil
	}
	if s.daemonA, err = up(s.nsA, "alpha", dirA, s.weftA, fmt.Sprintf("%s:%d", vethNetA, weftPort)); err != nil {
		return nil, err
	}
	tok, err := weftCmd(bin, "invite", "--state", dirA, "--name", "beta")
	if err != nil {
		return nil, err
	}
	if _, err := run(netnsExec(s.nsB, bin, "join", "--state", dirB, tok)...); err != nil {
		return nil, err
	}
	if s.daemB, err = up(s.nsB, "beta", dirB, s.weftB, fmt.Sprintf("%s:%d", vethNetB, weftPort)); err != nil {
		return nil, err
	}
	var ok bool
	if s.weftIPA, s.weftDomain, ok = parseUpLine(s.daemonA.upLine); !ok {
		return nil, fmt.Errorf("weft alpha: cannot parse %q", s.daemonA.upLine)
	}
	if s.weftIPB, _, ok = parseUpLine(s.daemB.upLine); !ok {
		return nil, fmt.Errorf("weft beta: cannot parse %q", s.daemB.upLine)
	}
	return s, nil
}

// parseUpLine reads the overlay IPv4 address and the domain from a daemon's
// "weft: NAME.DOMAIN up: IPV4 IPV6, UDP ..." line.
func parseUpLine(line string) (ipv4, domain string, ok bool) {
	_, rest, ok := strings.Cut(line, "weft: ")
	if !ok {
		return "", "", false
	}
	fqdn, rest, ok := strings.Cut(rest, " up: ")
	if !ok {
		return "", "", false
	}
	_, domain, _ = strings.Cut(fqdn, ".")
	f := strings.Fields(rest)
	if len(f) == 0 {
		return "", "", false
	}
	a, err := netip.ParseAddr(f[0])
	if err != nil || !a.Is4() || domain == "" {
		return "", "", false
	}
	return a.String(), domain, true
}

// dnsLoadFlag is the hidden mode in which the bench binary, started in a
// namespace, runs dns.Load and prints its result as JSON.
const dnsLoadFlag = "dns-load"

// dnsLoadIn runs dns.Load against server from inside namespace ns, by
// running this binary there in its dns-load mode.
func dnsLoadIn(ns string, server netip.AddrPort, names []string) (dns.LoadResult, error) {
	self, err := os.Executable()
	if err != nil {
		return dns.LoadResult{}, err
	}
	out, err := exec.Command("ip", "netns", "exec", ns, self, "--"+dnsLoadFlag, server.String(),
		"--dns-names", strings.Join(names, ",")).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return dns.LoadResult{}, fmt.Errorf("dns load in %s: %v: %s", ns, err, ee.Stderr)
		}
		return dns.LoadResult{}, fmt.Errorf("dns load in %s: %w", ns, err)
	}
	var res dns.LoadResult
	if err := json.Unmarshal(out, &res); err != nil {
		return res, fmt.Errorf("dns load in %s: %w: %q", ns, err, out)
	}
	return res, nil
}

// runDNSLoad is the dns-load mode: warm the cache, then measure.
func runDNSLoad(server string, names []string) error {
	ap, err := netip.ParseAddrPort(server)
	if err != nil {
		return err
	}
	ctx := context.Background()
	if _, err := dns.Load(ctx, ap, names, 1, 200*time.Millisecond); err != nil {
		return err
	}
	res, err := dns.Load(ctx, ap, names, dnsLoadCc, dnsLoadD)
	if err != nil {
		return err
	}
	if res.Queries == 0 {
		return fmt.Errorf("no successful queries to %s for %v (%d errors)", ap, names, res.Errors)
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}
