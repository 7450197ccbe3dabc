// Command bench measures weft's data plane against its baselines and prints
// a table (also written to bench/results.txt):
//
//   - throughput of one TCP stream over loopback: plain kernel TCP, two bare
//     wireguard-go devices with the upstream tun/netstack over real UDP
//     sockets (the baseline), and two weft nodes in one process;
//   - memory of the real daemon (bin/weft up): idle RSS and peak RSS while a
//     stream passes through a SOCKS5 proxy on one daemon and an --expose on
//     the other;
//   - time from weft.Start of an already joined node to the first byte read
//     from a server on another node;
//   - kernel TUN mode (root only): iperf3 through weft --tun between two
//     network namespaces beside stock wireguard-go and the raw veth pair,
//     ping RTT, and the overlay DNS server's queries/s and p99;
//   - the NAT lab (root only): nodes behind NAT routers in network
//     namespaces, time from `weft up` to first byte for a direct and a
//     relayed pair, and relay throughput against direct.
//
// Run it with `make bench` from the repository root (it needs bin/weft).
// Ratios are against the baseline measured in the same run, so they hold
// up better than the absolute numbers on a noisy machine.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"runtime"
	"strings"
	"time"
)

func main() {
	var (
		streamMiB = flag.Int("stream-mib", 512, "MiB sent per throughput run")
		reps      = flag.Int("reps", 3, "throughput runs per configuration (median reported)")
		memMiB    = flag.Int("mem-mib", 1024, "MiB pushed through the daemons for peak RSS")
		ttfbRuns  = flag.Int("ttfb-runs", 10, "time-to-first-byte runs")
		weftBin   = flag.String("weft", "bin/weft", "path of the weft binary for the memory runs")
		out       = flag.String("out", "bench/results.txt", "file the table is written to (empty: none)")
		only      = flag.String("only", "", "comma-separated subset of: throughput, memory, ttfb, tun, nat")
		denv      = flag.String("daemon-env", "", "extra VAR=VALUE,... for the daemons (e.g. GOGC=50), for experiments")
		tunRounds = flag.Int("tun-rounds", 3, "iperf3 rounds per path in TUN mode (median reported)")
		tunSecs   = flag.Int("tun-secs", 3, "seconds per iperf3 run in TUN mode")
		natRuns   = flag.Int("nat-runs", 7, "time-to-first-byte runs per pair in the NAT lab (median reported)")
		natMiB    = flag.Int("nat-mib", 256, "MiB per bulk download in the NAT lab")
		natRounds = flag.Int("nat-rounds", 3, "bulk downloads per path in the NAT lab (median reported)")
		dnsLoad   = flag.String(dnsLoadFlag, "", "internal: run dns.Load against `ADDR:PORT` and print JSON")
		dnsNames  = flag.String("dns-names", "", "internal: comma-separated names for --"+dnsLoadFlag)
	)
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("bench: ")
	if *dnsLoad != "" {
		if err := runDNSLoad(*dnsLoad, strings.Split(*dnsNames, ",")); err != nil {
			log.Fatalf("dns load: %v", err)
		}
		return
	}
	runtime.GOMAXPROCS(2)

	if *denv != "" {
		daemonEnv = strings.Split(*denv, ",")
	}
	want := func(s string) bool { return *only == "" || strings.Contains(*only, s) }
	var r report
	r.header()
	start := time.Now()
	if want("throughput") {
		if err := r.throughput(int64(*streamMiB)<<20, *reps); err != nil {
			log.Fatalf("throughput: %v", err)
		}
	}
	if want("memory") {
		if err := r.memory(*weftBin, int64(*memMiB)<<20); err != nil {
			log.Fatalf("memory: %v", err)
		}
	}
	if want("ttfb") {
		if err := r.ttfb(*ttfbRuns); err != nil {
			log.Fatalf("time to first byte: %v", err)
		}
	}
	if want("tun") {
		if err := r.tunMode(*weftBin, *tunRounds, *tunSecs); err != nil {
			log.Fatalf("TUN mode: %v", err)
		}
	}
	if want("nat") {
		if err := r.natLab(*weftBin, *natRuns, *natMiB, *natRounds); err != nil {
			log.Fatalf("NAT lab: %v", err)
		}
	}
	r.linef("")
	r.linef("total bench time %s", time.Since(start).Round(100*time.Millisecond))
	if *out != "" {
		if err := os.WriteFile(*out, []byte(r.b.String()), 0o644); err != nil {
			log.Fatalf("write %s: %v", *out, err)
		}
		fmt.Fprintf(os.Stderr, "bench: table written to %s\n", *out)
	}
}

// report is the table, printed as it is built.
type report struct {
	b strings.Builder
}

func (r *report) linef(format string, args ...any) {
	s := fmt.Sprintf(format, args...) + "\n"
	r.b.WriteString(s)
	io.WriteString(os.Stdout, s)
}

func (r *report) header() {
	host, _ := os.Hostname()
	r.linef("weft bench  %s  %s/%s  GOMAXPROCS=%d  NumCPU=%d  %s  host %s",
		time.Now().Format("2006-01-02 15:04"), runtime.GOOS, runtime.GOARCH,
		runtime.GOMAXPROCS(0), runtime.NumCPU(), runtime.Version(), host)
}
