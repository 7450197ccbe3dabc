package dns

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

// LoadResult is what Load measured.
type LoadResult struct {
	Queries  int           // queries answered with NOERROR
	QPS      float64       // Queries per second of wall time
	P50, P99 time.Duration // latency percentiles of those queries
	Errors   int           // timeouts (1 s), socket errors and replies other than NOERROR
}

// loadTimeout is how long Load waits for one reply.
const loadTimeout = time.Second

// Load sends A queries for names (round robin, from each worker) to a DNS
// server over UDP for duration d, with concurrency workers each keeping one
// query in flight on its own socket, and reports throughput and latency. It
// is the measuring half of `make bench` for cached overlay names, with no
// need for dnsperf. Concurrency below 1 means 1. It stops early, with what
// it measured so far, when ctx is done.
func Load(ctx context.Context, server netip.AddrPort, names []string, concurrency int, d time.Duration) (LoadResult, error) {
	if len(names) == 0 {
		return LoadResult{}, errors.New("dns load: no names to query")
	}
	if d <= 0 {
		return LoadResult{}, fmt.Errorf("dns load: duration %v must be positive", d)
	}
	if !server.IsValid() {
		return LoadResult{}, fmt.Errorf("dns load: %v is not a server address and port", server)
	}
	concurrency = max(concurrency, 1)
	queries := make([][]byte, len(names))
	for i, n := range names {
		m := new(mdns.Msg)
		m.SetQuestion(mdns.Fqdn(n), mdns.TypeA)
		b, err := m.Pack()
		if err != nil {
			return LoadResult{}, fmt.Errorf("dns load: name %q: %w", n, err)
		}
		queries[i] = b
	}
	conns := make([]*net.UDPConn, concurrency)
	for i := range conns {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(server))
		if err != nil {
			for _, c := range conns[:i] {
				c.Close()
			}
			return LoadResult{}, fmt.Errorf("dns load: %w", err)
		}
		conns[i] = c
	}

	start := time.Now()
	end := start.Add(d)
	if dl, ok := ctx.Deadline(); ok && dl.Before(end) {
		end = dl
	}
	type result struct {
		lat    []time.Duration
		errors int
	}
	results := make([]result, concurrency)
	var wg sync.WaitGroup
	for w := range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := conns[w]
			defer c.Close()
			stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Now()) })
			defer stop()
			r := &results[w]
			buf := make([]byte, 65535)
			q := make([]byte, 0, 512)
			id := uint16(w << 8)
			for i := w; ctx.Err() == nil; i++ {
				now := time.Now()
				if !now.Before(end) {
					return
				}
				id++
				q = append(q[:0], queries[i%len(queries)]...)
				binary.BigEndian.PutUint16(q, id)
				if _, err := c.Write(q); err != nil {
					r.errors++
					continue
				}
				deadline := now.Add(loadTimeout)
				c.SetReadDeadline(deadline)
				for {
					n, err := c.Read(buf)
					if err != nil {
						if time.Now().Before(end) && ctx.Err() == nil {
							r.errors++ // else cut off by the end of the run
						}
						break
					}
					if n < headerLen || binary.BigEndian.Uint16(buf) != id || buf[2]&0x80 == 0 {
						continue // a late reply to an earlier query
					}
					if buf[3]&0xf != mdns.RcodeSuccess {
						r.errors++
					} else {
						r.lat = append(r.lat, time.Since(now))
					}
					break
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)

	var res LoadResult
	var all []time.Duration
	for _, r := range results {
		all = append(all, r.lat...)
		res.Errors += r.errors
	}
	res.Queries = len(all)
	if elapsed > 0 {
		res.QPS = float64(res.Queries) / elapsed.Seconds()
	}
	if len(all) > 0 {
		slices.Sort(all)
		res.P50 = all[len(all)*50/100]
		res.P99 = all[min(len(all)*99/100, len(all)-1)]
	}
	return res, nil
}
