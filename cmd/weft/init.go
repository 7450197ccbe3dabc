package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/weft-net/weft"
)

func init() {
	register(&command{name: "init", summary: "create a new one-anchor network; this node is its anchor", run: runInit})
}

func runInit(ctx context.Context, e *env, args []string) error {
	var opts weft.InitOptions
	var asJSON bool
	fs := newFlagSet(e, commands["init"], &opts.StateDir)
	fs.StringVar(&opts.Network, "network", "weft", "network `NAME`")
	fs.StringVar(&opts.Name, "name", "", "this node's `NAME` (default: the host name)")
	fs.StringVar(&opts.Domain, "domain", "weft.internal", "DNS `DOMAIN` of the overlay")
	fs.StringVar(&opts.IPv4Prefix, "ipv4-prefix", "100.64.0.0/10", "IPv4 `PREFIX` overlay addresses are chosen from")
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	opts.StateDir = stateDir(opts.StateDir)
	m, err := weft.Init(opts)
	if err != nil {
		return err
	}
	return printMembership(e, m, asJSON, "created network")
}

func printMembership(e *env, m weft.Membership, asJSON bool, verb string) error {
	if asJSON {
		return json.NewEncoder(e.stdout).Encode(m)
	}
	fmt.Fprintf(e.stdout, "%s %q (%s)\n", verb, m.Network, m.NetworkID.Short())
	fmt.Fprintf(e.stdout, "  node     %s.%s\n", m.Name, m.Domain)
	fmt.Fprintf(e.stdout, "  node id  %s\n", m.NodeID)
	fmt.Fprintf(e.stdout, "  ipv4     %s\n  ipv6     %s\n", m.IPv4, m.IPv6)
	fmt.Fprintf(e.stdout, "  state    %s\n", m.StateDir)
	if m.Anchor {
		fmt.Fprintln(e.stdout, "  role     anchor (run `weft up`, then `weft invite` to add nodes)")
	} else {
		fmt.Fprintln(e.stdout, "  role     member (run `weft up` to connect)")
	}
	return nil
}

// stateDir applies the default state directory.
func stateDir(s string) string {
	if s != "" {
		return s
	}
	return weft.DefaultStateDir()
}
