//go:build linux

package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/weft-net/weft/internal/natlab"
)

// Section 5 runs the NAT lab (internal/natlab): a public anchor on a
// "switch" and pairs of nodes behind NAT routers made of nftables rules, in
// network namespaces. It measures, for a direct pair (port-restricted on
// both sides) and a relayed pair (symmetric on both sides):
//
//   - the time from `weft up` of a joined node, whose peer has published
//     its record, to the first byte of an HTTP answer fetched through the
//     node's SOCKS5 proxy from a server the peer exposes (lookup, ICE,
//     relay allocation, WireGuard handshake, the TCP connect);
//   - the throughput of a bulk HTTP download through SOCKS5 -> overlay ->
//     --expose on each path, and their ratio.
//
// No latency is added in the lab (no sch_netem): the times are weft's own.

func (r *report) natLab(bin string, runs, mib, rounds int) error {
	r.linef("")
	if why := natLabPrereqs(); why != "" {
		r.linef("5. NAT lab: skipped: %s", why)
		return nil
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("%w (run `make build` first, or pass --weft)", err)
	}
	bin, _ = filepath.Abs(bin)
	tb := &benchTB{name: "bench-natlab"}
	defer tb.close()
	var res natLabResult
	err := tb.run(func() { res = runNATLab(tb, bin, runs, int64(mib)<<20, rounds) })
	if err != nil {
		if msg, ok := strings.CutPrefix(err.Error(), "skipped: "); ok {
			r.linef("5. NAT lab: skipped: %s", msg)
			return nil
		}
		return err
	}
	r.linef("5. NAT lab: nodes behind nftables NAT routers in network namespaces, anchor %s, no added latency (no sch_netem)", res.relay)
	r.linef("   time from `weft up` (peer record published) to first byte through SOCKS5, %d runs", runs)
	r.linef("   %-34s %9s %9s %9s %9s   %s", "pair", "median", "p90", "min", "max", "path")
	for _, p := range []*natPair{res.direct, res.relayed} {
		ds := slices.Clone(p.ttfb)
		slices.Sort(ds)
		r.linef("   %-34s %9s %9s %9s %9s   %s", p.label, msf(ds[len(ds)/2]), msf(ds[(len(ds)*9+9)/10-1]), msf(ds[0]), msf(ds[len(ds)-1]), p.path)
	}
	md, mr := medianDur(res.direct.ttfb), medianDur(res.relayed.ttfb)
	r.linef("   direct median %s (target <= 1 s: %s), relay median %s (target <= 2 s: %s)",
		msf(md), verdict(md <= time.Second), msf(mr), verdict(mr <= 2*time.Second))
	r.linef("   bulk download through SOCKS5 -> overlay -> --expose, %d MiB, %d rounds interleaved, median", mib, rounds)
	for _, p := range []*natPair{res.direct, res.relayed} {
		runs := make([]string, len(p.mbps))
		for i, v := range p.mbps {
			runs[i] = fmt.Sprintf("%.0f", v)
		}
		r.linef("   %-34s %7.0f MB/s   %s", p.label, median(p.mbps), strings.Join(runs, " "))
	}
	ratio := median(res.relayed.mbps) / median(res.direct.mbps)
	r.linef("   relay / direct                     %7.2f        (target >= 0.70: %s)", ratio, verdict(ratio >= 0.7))
	r.linef("   CPU seconds per GB downloaded, all rounds (bench: its HTTP client and server; rest: the kernel's forwarding and NAT in softirq, other processes)")
	for _, p := range []*natPair{res.direct, res.relayed} {
		r.linef("   %-34s %s", p.label, p.cpuLine())
	}
	return nil
}

// natLabPrereqs says why section 5 cannot run here, or "" if it can.
func natLabPrereqs() string {
	if os.Geteuid() != 0 {
		return "needs root (network namespaces and nftables); run `sudo make bench`"
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Sprintf("needs %s (not found; make setup installs it)", tool)
		}
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return "needs /dev/net/tun"
	}
	return ""
}

type natLabResult struct {
	relay           string
	direct, relayed *natPair
}

// natPair is a target node (with an HTTP server exposed on overlay port
// 8080) and the namespace and state of the node that reaches it.
type natPair struct {
	label    string
	bin      string
	target   string
	ns       *natlab.Namespace // the initiator's
	targetNS *natlab.Namespace
	state    string
	args     []string // the initiator's `weft up` flags
	path     string   // as `weft ping` named it
	ttfb     []time.Duration
	mbps     []float64
	proc     *natlab.Process // the initiator while it runs

	// CPU accounting of the bulk rounds: the processes whose CPU time is
	// counted (the anchor, which relays, and the target), and the sums.
	anchor, targetProc *natlab.Process
	cpu                cpuUse
}

// cpuUse sums CPU time over bulk downloads, in seconds: of the whole
// machine (every busy state of /proc/stat, softirq included: the routers'
// forwarding and NAT), and of the three daemons.
type cpuUse struct {
	bytes int64
	sum   cpuTimes // the okAll and okProcs of a sum: some download had them
}

// clockTick is the unit of /proc CPU times (USER_HZ, 100 on Linux).
const clockTick = 100.0

// machineBusy returns the busy CPU time of the machine in seconds.
func machineBusy() (float64, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, false
	}
	var busy float64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		x, _ := strconv.ParseFloat(v, 64)
		busy += x
	}
	return busy / clockTick, true
}

// procCPU returns the CPU time (user and system) of process pid in
// seconds.
func procCPU(pid int) (float64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// The fields after the command name, which is in parentheses.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, false
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / clockTick, true
}

// cpuTimes are the machine's and the daemons' CPU times: a reading, or a
// sum of differences.
type cpuTimes struct {
	all, anchor, init, target, bench float64
	okAll, okProcs                   bool // all, and the processes', could be read
}

func (p *natPair) snapCPU() cpuTimes {
	var c cpuTimes
	c.all, c.okAll = machineBusy()
	var ok1, ok2, ok3 bool
	c.anchor, ok1 = procCPU(p.anchor.Pid())
	c.init, ok2 = procCPU(p.proc.Pid())
	c.target, ok3 = procCPU(p.targetProc.Pid())
	var ok4 bool
	c.bench, ok4 = procCPU(os.Getpid())
	c.okProcs = ok1 && ok2 && ok3 && ok4
	return c
}

// addCPU adds the CPU time between two snapshots, over a download of n
// bytes.
func (p *natPair) addCPU(a, b cpuTimes, n int64) {
	p.cpu.bytes += n
	s := &p.cpu.sum
	if a.okAll && b.okAll {
		s.okAll = true
		s.all += b.all - a.all
	}
	if a.okProcs && b.okProcs {
		s.okProcs = true
		s.anchor += b.anchor - a.anchor
		s.init += b.init - a.init
		s.target += b.target - a.target
		s.bench += b.bench - a.bench
	}
}

// cpuLine is the pair's CPU time per GB (10^9 bytes) downloaded, in
// seconds.
func (p *natPair) cpuLine() string {
	gb, c := float64(p.cpu.bytes)/1e9, p.cpu.sum
	if gb == 0 || !c.okAll {
		return "(no /proc/stat)"
	}
	s := fmt.Sprintf("machine %5.2f", c.all/gb)
	if c.okProcs {
		rest := c.all - c.anchor - c.init - c.target - c.bench
		s += fmt.Sprintf("   anchor %5.2f   initiator %5.2f   target %5.2f   bench %5.2f   rest %5.2f",
			c.anchor/gb, c.init/gb, c.target/gb, c.bench/gb, rest/gb)
	}
	return s
}

func runNATLab(tb *benchTB, bin string, runs int, bulk int64, rounds int) natLabResult {
	var res natLabResult
	// NATLAB_PPROF=DIR: the daemons serve the profiler (cmd/weft's
	// WEFT_PPROF) in their namespaces, and 5 s CPU profiles of both pairs
	// (and the anchor) from the start of their first bulk download go to
	// DIR.
	profDir := os.Getenv("NATLAB_PPROF")
	if profDir != "" {
		os.Setenv("WEFT_PPROF", natPprofAddr)
	}
	lab := natlab.New(tb, natlab.Options{Prefix: "weftbnat"})
	inet := lab.Switch(tb, "inet")
	pub := lab.Namespace(tb, "pub")
	anchorIP := "203.0.113.1"
	inet.Attach(tb, natlab.End{NS: pub, Dev: "eth0", Addrs: []string{anchorIP + "/24"}})
	dir := tb.TempDir()
	weft := func(args ...string) string {
		out, err := weftCmd(bin, args...)
		if err != nil {
			tb.Fatalf("%v", err)
		}
		return strings.TrimSpace(out)
	}
	stPub := filepath.Join(dir, "pub")
	weft("init", "--state", stPub, "--name", "pub", "--endpoint", anchorIP+":41641")
	anchorArgs := []string{"--listen", anchorIP + ":41641", "--dht-role", "server"}
	var nodeArgs []string
	if out, _ := exec.Command(bin, "up", "--help").CombinedOutput(); strings.Contains(string(out), "  -relay") {
		res.relay = "with `weft up --relay` (the members find it in its record)"
		anchorArgs = append(anchorArgs, "--relay")
	} else {
		natlab.NeedCoturn(tb)
		pub.AddAddr(tb, "eth0", "203.0.113.2/24")
		pub.StartCoturn(tb, natlab.CoturnConfig{IP: netip.MustParseAddr("203.0.113.2"), User: "lab", Password: "lab"})
		res.relay = "and coturn (--turn)"
		nodeArgs = []string{"--turn", "turn:203.0.113.2:3478?user=lab&pass=lab"}
	}
	up := func(ns *natlab.Namespace, label, state string, args ...string) *natlab.Process {
		p := ns.Start(tb, label, bin, append([]string{"up", "--state", state, "--log-level", "warn"}, args...)...)
		// Up once the API answers.
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if exec.Command(bin, "status", "--state", state).Run() == nil {
				return p
			}
			if p.Exited() || time.Now().After(deadline) {
				tb.Fatalf("weft up %s did not come up:\n%s", label, p.Output())
			}
		}
	}
	anchorProc := up(pub, "anchor", stPub, anchorArgs...)

	nets := 0
	host := func(typ natlab.NATType, name string) (*natlab.Namespace, netip.Addr) {
		nets++
		r := lab.Router(tb, "r-"+name, inet, natlab.RouterConfig{Type: typ,
			Public: netip.PrefixFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(10 + nets)}), 24),
			LAN:    netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(nets), 1}), 24)})
		ip := netip.AddrFrom4([4]byte{10, 0, byte(nets), 2})
		return r.Host(tb, name, ip), ip
	}
	join := func(name string) string {
		st := filepath.Join(dir, name)
		tok := weft("invite", "--state", stPub, "--name", name)
		if out, err := exec.Command("ip", "netns", "exec", pub.Name(), bin, "join", "--state", st, tok).CombinedOutput(); err != nil {
			tb.Fatalf("join %s: %v: %s", name, err, out)
		}
		return st
	}
	pair := func(typ natlab.NATType, label, prefix string) *natPair {
		p := &natPair{label: label, bin: bin, target: prefix + "-b", anchor: anchorProc}
		nsB, ipB := host(typ, p.target)
		p.targetNS = nsB
		ln, err := nsB.Listen("tcp", "127.0.0.1:8000")
		if err != nil {
			tb.Fatalf("%v", err)
		}
		srv := &http.Server{Handler: bulkHandler()}
		go srv.Serve(ln)
		tb.Cleanup(func() { srv.Close() })
		p.targetProc = up(nsB, p.target, join(p.target), append([]string{"--listen", netip.AddrPortFrom(ipB, 41641).String(),
			"--dht-role", "client", "--expose", "8080=127.0.0.1:8000"}, nodeArgs...)...)
		var ipA netip.Addr
		p.ns, ipA = host(typ, prefix+"-a")
		p.state = join(prefix + "-a")
		p.args = append([]string{"--listen", netip.AddrPortFrom(ipA, 41641).String(), "--dht-role", "client",
			"--socks5", "127.0.0.1:1080"}, nodeArgs...)
		return p
	}
	res.direct = pair(natlab.PortRestricted, "direct (port-restricted x2)", "pr")
	res.relayed = pair(natlab.Symmetric, "relay (symmetric x2)", "sy")
	// Let the targets publish their records.
	time.Sleep(2 * time.Second)

	for i := range runs {
		for _, p := range []*natPair{res.direct, res.relayed} {
			d, err := p.firstByte(tb)
			if err != nil {
				tb.Fatalf("%s, run %d: %v", p.label, i+1, err)
			}
			p.ttfb = append(p.ttfb, d)
			if i < runs-1 {
				p.stop(tb)
			}
		}
	}
	for _, p := range []*natPair{res.direct, res.relayed} {
		out, err := exec.Command(bin, "ping", "--state", p.state, "-c", "1", p.target).CombinedOutput()
		if err != nil {
			tb.Fatalf("weft ping %s: %v: %s", p.target, err, out)
		}
		p.path = strings.SplitN(string(out), "\n", 2)[0]
	}
	// Warm up, then interleaved rounds.
	for _, p := range []*natPair{res.direct, res.relayed} {
		if _, err := p.download(8 << 20); err != nil {
			tb.Fatalf("%s: %v", p.label, err)
		}
	}
	for round := range rounds {
		for _, p := range []*natPair{res.direct, res.relayed} {
			if profDir != "" && round == 0 {
				nss := map[string]*natlab.Namespace{"direct-initiator": p.ns, "direct-target": p.targetNS}
				if p == res.relayed {
					nss = map[string]*natlab.Namespace{"relay-anchor": pub, "relay-initiator": p.ns, "relay-target": p.targetNS}
				}
				stop := profileNATLab(profDir, nss)
				defer stop()
			}
			before := p.snapCPU()
			v, err := p.download(bulk)
			if err != nil {
				tb.Fatalf("%s: %v", p.label, err)
			}
			p.addCPU(before, p.snapCPU(), bulk)
			p.mbps = append(p.mbps, v)
		}
	}
	return res
}

// natPprofAddr is where the daemons serve the profiler, each in its own
// namespace, with NATLAB_PPROF.
const natPprofAddr = "127.0.0.1:6060"

// profileNATLab fetches 5 s CPU profiles from the daemons in nss (by
// name) into dir, and interface and UDP counters before and after; the returned
// func waits for them.
func profileNATLab(dir string, nss map[string]*natlab.Namespace) (wait func()) {
	os.MkdirAll(dir, 0o755)
	var wg sync.WaitGroup
	for name, ns := range nss {
		counters := func() []byte {
			links, _ := exec.Command("ip", "netns", "exec", ns.Name(), "ip", "-s", "link").CombinedOutput()
			snmp, _ := exec.Command("ip", "netns", "exec", ns.Name(), "cat", "/proc/net/snmp").CombinedOutput()
			return append(links, snmp...)
		}
		before := counters()
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Transport: &http.Transport{DialContext: ns.DialContext}}
			resp, err := c.Get("http://" + natPprofAddr + "/debug/pprof/profile?seconds=5")
			if err != nil {
				fmt.Fprintf(os.Stderr, "bench: profile %s: %v\n", name, err)
				return
			}
			defer resp.Body.Close()
			f, err := os.Create(filepath.Join(dir, name+".pprof"))
			if err != nil {
				return
			}
			io.Copy(f, resp.Body)
			f.Close()
			after := counters()
			os.WriteFile(filepath.Join(dir, name+".links"), append(append(before, "---- 5 s later\n"...), after...), 0o644)
		}()
	}
	return wg.Wait
}

// firstByte starts the initiator and fetches / from the target through
// its SOCKS5 proxy as soon as the proxy accepts, again until it answers;
// it returns the time from the start to the first byte of the answer.
func (p *natPair) firstByte(tb *benchTB) (time.Duration, error) {
	start := time.Now()
	p.proc = p.ns.Start(tb, p.label, p.bin, append([]string{"up", "--state", p.state, "--log-level", natLogLevel()}, p.args...)...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var last error
	for ctx.Err() == nil {
		if p.proc.Exited() {
			return 0, fmt.Errorf("weft up exited:\n%s", p.proc.Output())
		}
		c, err := p.dial(ctx)
		if err != nil {
			last = err
			time.Sleep(5 * time.Millisecond)
			continue
		}
		c.SetDeadline(time.Now().Add(15 * time.Second))
		fmt.Fprintf(c, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", p.target)
		var b [1]byte
		_, err = c.Read(b[:])
		c.Close()
		if err == nil {
			return time.Since(start), nil
		}
		last = err
	}
	return 0, fmt.Errorf("no answer from %s after 30 s: %v\n%s", p.target, last, p.proc.Output())
}

// dial connects to the target's port 8080 through the initiator's SOCKS5
// proxy, from inside its namespace.
func (p *natPair) dial(ctx context.Context) (net.Conn, error) {
	d, err := proxy.SOCKS5("tcp", "127.0.0.1:1080", nil, nsDialer{p.ns})
	if err != nil {
		return nil, err
	}
	return d.(proxy.ContextDialer).DialContext(ctx, "tcp", p.target+":8080")
}

type nsDialer struct{ ns *natlab.Namespace }

func (d nsDialer) Dial(network, addr string) (net.Conn, error) {
	return d.ns.DialContext(context.Background(), network, addr)
}

func (d nsDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return d.ns.DialContext(ctx, network, addr)
}

// natLogLevel is the initiators' --log-level: $NATLAB_LOG_LEVEL, else
// warn. With NATLAB_LOG_LEVEL, stop prints each initiator's output to
// stderr, for a timeline of its connect.
func natLogLevel() string { return cmp.Or(os.Getenv("NATLAB_LOG_LEVEL"), "warn") }

// stop stops the initiator and waits for it to exit.
func (p *natPair) stop(tb *benchTB) {
	p.proc.Signal(syscall.SIGTERM)
	select {
	case <-p.proc.Done():
	case <-time.After(10 * time.Second):
		tb.Fatalf("%s: weft up did not exit 10 s after SIGTERM", p.label)
	}
	if os.Getenv("NATLAB_LOG_LEVEL") != "" {
		fmt.Fprintf(os.Stderr, "==== %s\n%s\n", p.label, p.proc.Output())
	}
	// WireGuard refuses an initiation whose timestamp is not after the
	// last one (see section 3): leave a gap before the next start.
	time.Sleep(200 * time.Millisecond)
}

// download fetches n bytes from the target's /bulk and returns MB/s.
func (p *natPair) download(n int64) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := p.dial(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	start := time.Now()
	fmt.Fprintf(c, "GET /bulk?n=%d HTTP/1.0\r\nHost: %s\r\n\r\n", n, p.target)
	resp, err := http.ReadResponse(bufio.NewReaderSize(c, 64<<10), nil)
	if err != nil {
		return 0, err
	}
	got, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return 0, err
	}
	if got != n {
		return 0, fmt.Errorf("bulk download: %d of %d bytes", got, n)
	}
	return float64(n) / time.Since(start).Seconds() / 1e6, nil
}

// bulkHandler answers / with a line and /bulk?n=BYTES with that many
// bytes.
func bulkHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hello\n") })
	buf := make([]byte, 256<<10)
	mux.HandleFunc("/bulk", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.ParseInt(r.FormValue("n"), 10, 64)
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		for n > 0 {
			k, err := w.Write(buf[:min(int64(len(buf)), n)])
			if err != nil {
				return
			}
			n -= int64(k)
		}
	})
	return mux
}

func msf(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }

func medianDur(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// benchTB lets the bench use internal/natlab, which is written for tests:
// Fatal and Skip end the section (see run), Cleanup registers with close.
// Methods natlab does not call are the nil embedded testing.TB's: calling
// them panics.
type benchTB struct {
	testing.TB
	name string

	mu       sync.Mutex // guards cleanups, failed
	cleanups []func()
	failed   bool
}

// benchStop is the panic value of Fatal and Skip.
type benchStop struct {
	msg  string
	skip bool
}

func (b *benchTB) Helper()      {}
func (b *benchTB) Name() string { return b.name }
func (b *benchTB) Logf(format string, args ...any) {
	if os.Getenv("NATLAB_VERBOSE") != "" {
		fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	}
}
func (b *benchTB) Log(args ...any) { b.Logf("%s", fmt.Sprint(args...)) }
func (b *benchTB) Errorf(format string, args ...any) {
	b.mu.Lock()
	b.failed = true
	b.mu.Unlock()
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}
func (b *benchTB) Fatalf(format string, args ...any) {
	b.mu.Lock()
	b.failed = true
	b.mu.Unlock()
	panic(benchStop{msg: fmt.Sprintf(format, args...)})
}
func (b *benchTB) Fatal(args ...any)                { b.Fatalf("%s", fmt.Sprint(args...)) }
func (b *benchTB) Skip(args ...any)                 { panic(benchStop{msg: fmt.Sprint(args...), skip: true}) }
func (b *benchTB) Skipf(format string, args ...any) { b.Skip(fmt.Sprintf(format, args...)) }
func (b *benchTB) Failed() bool                     { b.mu.Lock(); defer b.mu.Unlock(); return b.failed }
func (b *benchTB) Cleanup(f func())                 { b.mu.Lock(); b.cleanups = append(b.cleanups, f); b.mu.Unlock() }
func (b *benchTB) TempDir() string {
	d, err := os.MkdirTemp("", "weft-bench-natlab-")
	if err != nil {
		b.Fatalf("%v", err)
	}
	b.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// run runs f, turning Fatal and Skip into an error.
func (b *benchTB) run(f func()) (err error) {
	defer func() {
		if v := recover(); v != nil {
			s, ok := v.(benchStop)
			if !ok {
				panic(v)
			}
			if s.skip {
				err = errors.New("skipped: " + s.msg)
			} else {
				err = errors.New(s.msg)
			}
		}
	}()
	f()
	return nil
}

// close runs the cleanups, last registered first.
func (b *benchTB) close() {
	b.mu.Lock()
	fns := b.cleanups
	b.cleanups = nil
	b.mu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
}
