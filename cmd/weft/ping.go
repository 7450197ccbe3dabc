package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"time"

	"github.com/weft-net/weft"
)

func init() {
	register(&command{name: "ping", usage: "NAME",
		summary: "ping a peer over the path WireGuard uses (direct or relay) and say why the path is what it is", run: runPing})
}

// runPing sends sealed control pings to the peer's WireGuard endpoint (for
// a relayed peer, through the relay), one a second: each reply's round
// trip is the path's, without the overlay's TCP/IP stack.
func runPing(ctx context.Context, e *env, args []string) error {
	var state string
	var asJSON bool
	var count int
	var interval time.Duration
	fs := newFlagSet(e, commands["ping"], &state)
	fs.BoolVar(&asJSON, "json", false, "print one JSON object per reply")
	fs.IntVar(&count, "c", 4, "stop after `N` replies (0: until interrupted)")
	fs.DurationVar(&interval, "i", time.Second, "wait `DURATION` between pings")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return errUsage
	}
	host := pos[0]
	api := newAPIClient(stateDir(state))
	sent, got := 0, 0
	var lastReason string
	for count <= 0 || sent < count {
		if sent > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(interval):
			}
		}
		sent++
		var res weft.PingResult
		err := api.do(ctx, "GET", "/v1/ping?host="+url.QueryEscape(host), nil, &res)
		if err != nil {
			if _, ok := err.(errNotRunning); ok {
				return err
			}
			fmt.Fprintf(e.stderr, "weft ping %s: %v\n", host, err)
			continue
		}
		got++
		res.Seq = sent
		if asJSON {
			if err := printJSON(e.stdout, res); err != nil {
				return err
			}
			continue
		}
		if res.Reason != lastReason {
			fmt.Fprintf(e.stdout, "%s: %s\n", res.Name, res.Reason)
			lastReason = res.Reason
		}
		via := res.Endpoint.String()
		if res.Relay.IsValid() {
			via = "relay " + res.Relay.String()
		}
		fmt.Fprintf(e.stdout, "reply from %s: seq=%d path=%s via %s time=%s\n", res.Name, sent, res.Path, via, fmtRTT(res.RTT))
	}
	if !asJSON {
		fmt.Fprintf(e.stdout, "%d sent, %d replies\n", sent, got)
	}
	if got == 0 {
		return errReported
	}
	return nil
}

func fmtRTT(d time.Duration) string {
	return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
}

// printPathReasons says, under the peer table, why each peer's path is
// what it is.
func printPathReasons(w io.Writer, peers []weft.PeerStatus) {
	for _, p := range peers {
		if p.Reason != "" {
			fmt.Fprintf(w, "  %s: %s\n", p.Name, p.Reason)
		}
	}
}
