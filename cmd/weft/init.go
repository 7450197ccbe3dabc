package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/weft-net/weft"
	"github.com/weft-net/weft/trust"
)

func init() {
	register(&command{name: "init", summary: "create a network (one anchor, or several with --anchors), or install a genesis on an anchor (--genesis)", run: runInit})
}

func runInit(ctx context.Context, e *env, args []string) error {
	var opts weft.InitOptions
	var asJSON bool
	var anchors, endpoints, changes listFlag
	var genesis string
	fs := newFlagSet(e, commands["init"], &opts.StateDir)
	fs.StringVar(&opts.Network, "network", "weft", "network `NAME`")
	fs.StringVar(&opts.Name, "name", "", "this node's `NAME` (default: the host name; with --anchors the descriptors name the anchors)")
	fs.StringVar(&opts.Domain, "domain", "weft.internal", "DNS `DOMAIN` of the overlay")
	fs.StringVar(&opts.IPv4Prefix, "ipv4-prefix", "100.64.0.0/10", "IPv4 `PREFIX` overlay addresses are chosen from")
	fs.Var(&anchors, "anchors", "anchor descriptor `TOKENS` (`weft keygen` on each anchor), comma-separated or repeated: create a multi-anchor network")
	fs.IntVar(&opts.Threshold, "threshold", 0, "with --anchors: endorsements `N` needed to admit or revoke (default floor(2n/3)+1)")
	fs.Var(&endpoints, "endpoint", "one-anchor network: UDP `ADDR:PORT` this anchor is reachable at, written into the genesis (repeatable)")
	fs.StringVar(&genesis, "genesis", "", "install this genesis `TOKEN` (printed by `weft init --anchors`) on one of its anchors")
	fs.Var(&changes, "change", "with --genesis, on an anchor added later: the anchor-set change `TOKEN`s since the genesis, in order (repeatable)")
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if err := checkInitFlags(len(anchors) > 0, genesis != "", len(endpoints) > 0, len(changes) > 0, opts.Threshold); err != nil {
		return err
	}
	eps, err := parseAddrPorts("--endpoint", endpoints)
	if err != nil {
		return err
	}
	opts.Endpoints, opts.Anchors = eps, anchors
	opts.StateDir = stateDir(opts.StateDir)
	var m weft.Membership
	switch {
	case genesis != "":
		m, err = weft.InitFromGenesis(opts.StateDir, genesis, changes...)
	default:
		m, err = weft.Init(opts)
	}
	if err != nil {
		return err
	}
	switch {
	case asJSON:
		return printJSON(e.stdout, m)
	case len(anchors) > 0:
		// The product is the genesis token: alone on stdout, for scripts.
		fmt.Fprintln(e.stdout, m.Genesis)
		g, err := trust.ParseGenesisToken(m.Genesis)
		if err != nil {
			return err
		}
		set := g.Set()
		fmt.Fprintf(e.stderr, "created network %q (%s): %d anchors, %d endorsements needed, tolerates %d Byzantine\n",
			m.Network, m.NetworkID.Short(), len(set.Anchors), set.Threshold, set.Tolerance())
		if m.Anchor {
			fmt.Fprintf(e.stderr, "this node (%s) is one of them; its state is in %s\n", m.Name, m.StateDir)
		}
		fmt.Fprintln(e.stderr, "Give the genesis token above to every other anchor: `weft init --genesis TOKEN`, then `weft up` on each.")
		return nil
	case genesis != "":
		return printMembership(e, m, false, "installed network")
	}
	return printMembership(e, m, false, "created network")
}

// checkInitFlags refuses flag combinations that make no sense together.
func checkInitFlags(anchors, genesis, endpoints, changes bool, threshold int) error {
	switch {
	case changes && !genesis:
		return errors.New("--change needs --genesis (a new anchor installs the genesis and the changes that added it)")
	case anchors && genesis:
		return errors.New("--anchors creates a genesis and --genesis installs one: give one of them")
	case threshold != 0 && !anchors:
		return errors.New("--threshold needs --anchors (a one-anchor network has threshold 1)")
	case threshold < 0:
		return errors.New("--threshold must be positive")
	case endpoints && (anchors || genesis):
		return errors.New("--endpoint is for one-anchor networks; with --anchors or --genesis each anchor names its endpoints in `weft keygen --endpoint`")
	}
	return nil
}

func printMembership(e *env, m weft.Membership, asJSON bool, verb string) error {
	if asJSON {
		return printJSON(e.stdout, m)
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
