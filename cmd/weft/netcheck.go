package main

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"text/tabwriter"

	"github.com/weft-net/weft"
	"github.com/weft-net/weft/nat"
)

func init() {
	register(&command{name: "netcheck",
		summary: "find this node's NAT type, public address and reachable STUN servers and relays", run: runNetcheck})
}

func runNetcheck(ctx context.Context, e *env, args []string) error {
	var state string
	var asJSON bool
	fs := newFlagSet(e, commands["netcheck"], &state)
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	var rep weft.NetcheckReport
	if err := newAPIClient(stateDir(state)).do(ctx, "GET", "/v1/netcheck", nil, &rep); err != nil {
		return err
	}
	if asJSON {
		return printJSON(e.stdout, rep)
	}
	w := e.stdout
	switch {
	case !rep.UDP:
		fmt.Fprintln(w, "UDP        blocked outbound: no STUN server answered")
	case rep.NAT != "":
		fmt.Fprintf(w, "NAT        %s (mapping %s, filtering %s)\n", rep.NAT, rep.Mapping, rep.Filtering)
	default:
		fmt.Fprintf(w, "NAT        type unknown (mapping %s, filtering %s)\n", rep.Mapping, rep.Filtering)
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "           %s\n", n)
	}
	if len(rep.Public) > 0 {
		fmt.Fprintf(w, "public     %v\n", rep.Public)
	}
	if rep.PortMapping != "" {
		fmt.Fprintf(w, "portmap    %s\n", rep.PortMapping)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nSERVER\tKIND\tLATENCY\tMAPPED / ERROR")
	row := func(kind string, c weft.ServerCheck) {
		lat, what := "-", c.Error
		if c.Error == "" {
			lat, what = fmtRTT(c.Latency), c.Mapped.String()
		}
		if c.Name != "" {
			kind += " (" + c.Name + ")"
		}
		addr := "-"
		if c.Addr.IsValid() {
			addr = c.Addr.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", addr, kind, lat, what)
	}
	for _, c := range rep.STUN {
		row("stun", c)
	}
	for _, c := range rep.Relays {
		row("relay", c)
	}
	tw.Flush()
	if len(rep.Relays) == 0 {
		fmt.Fprintln(w, "no relay known: peers behind symmetric NAT on both sides cannot be reached (run `weft up --relay` on a public node, or pass --turn to `weft up`)")
	}
	return nil
}

// natFlags are `weft up`'s NAT traversal flags.
type natFlags struct {
	stun, turn listFlag
}

// apply puts the flags into cfg.
func (f *natFlags) apply(cfg *weft.Config) error {
	for _, s := range f.stun {
		ap, err := netip.ParseAddrPort(strings.TrimPrefix(s, "stun:"))
		if err != nil {
			return fmt.Errorf("--stun %q: want HOST:PORT with an IP address, e.g. 203.0.113.1:3478", s)
		}
		cfg.STUNServers = append(cfg.STUNServers, ap)
	}
	for _, s := range f.turn {
		u, err := nat.ParseTURNURL(s)
		if err != nil {
			return fmt.Errorf("--turn: %w", err)
		}
		cfg.TURNServers = append(cfg.TURNServers, u)
	}
	return nil
}
