package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/weft-net/weft"
)

func init() {
	register(&command{name: "invite", summary: "print an invite token (one line) that lets a node join", run: runInvite})
}

func runInvite(ctx context.Context, e *env, args []string) error {
	var state, name string
	var ttl time.Duration
	var uses int
	var endpoints listFlag
	fs := newFlagSet(e, commands["invite"], &state)
	fs.StringVar(&name, "name", "", "bind the invite to this node `NAME` (default: the joiner picks)")
	fs.DurationVar(&ttl, "ttl", 24*time.Hour, "how long the invite is valid")
	fs.IntVar(&uses, "uses", 1, "how many nodes may join with it")
	fs.Var(&endpoints, "endpoint", "anchor `ADDR:PORT` to name in the token when the node is not running (repeatable)")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if ttl <= 0 || uses <= 0 {
		return errors.New("--ttl and --uses must be positive")
	}
	state = stateDir(state)
	var tok string
	c := newAPIClient(state)
	var out struct{ Token string }
	err := c.do(ctx, "POST", "/v1/invite", inviteRequest{Name: name, TTL: ttl, Uses: uses}, &out)
	var nr errNotRunning
	switch {
	case err == nil && len(endpoints) == 0:
		tok = out.Token
	case err == nil || errors.As(err, &nr):
		// The node is down (or the user named endpoints): sign from the
		// state directory.
		var eps []netip.AddrPort
		for _, s := range endpoints {
			ap, perr := netip.ParseAddrPort(s)
			if perr != nil {
				return fmt.Errorf("--endpoint %q: want IP:PORT: %w", s, perr)
			}
			eps = append(eps, ap)
		}
		tok, err = weft.InviteOffline(state, weft.InviteOptions{Name: name, TTL: ttl, Uses: uses}, eps)
		if err != nil {
			return err
		}
	default:
		return err
	}
	fmt.Fprintln(e.stdout, tok)
	return nil
}
