package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/weft-net/weft"
	"github.com/weft-net/weft/trust"
)

func init() {
	register(&command{name: "invite",
		summary: "print an invite token (one line) that lets a node join; `invite cosign TOKEN` adds this anchor's endorsement", run: runInvite})
}

// inviteCosignCmd is `weft invite cosign`, dispatched by runInvite.
var inviteCosignCmd = &command{name: "invite cosign", usage: "TOKEN",
	summary: "add this anchor's endorsement to an invite made on another anchor and print the new token"}

func runInvite(ctx context.Context, e *env, args []string) error {
	if len(args) > 0 && args[0] == "cosign" {
		return runInviteCosign(ctx, e, args[1:])
	}
	var state, name string
	var ttl time.Duration
	var uses int
	var asJSON bool
	var endpoints, tags listFlag
	fs := newFlagSet(e, commands["invite"], &state)
	fs.StringVar(&name, "name", "", "bind the invite to this node `NAME` (default: the joiner picks)")
	fs.DurationVar(&ttl, "ttl", 24*time.Hour, "how long the invite is valid")
	fs.IntVar(&uses, "uses", 1, "how many nodes may join with it")
	fs.Var(&tags, "tags", "policy `TAGS` written into the certificates of nodes joining with it (comma-separated or repeated)")
	fs.Var(&endpoints, "endpoint", "anchor `ADDR:PORT` to name in the token when the node is not running (repeatable)")
	fs.BoolVar(&asJSON, "json", false, "print JSON: token, endorsements, threshold")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if ttl <= 0 || uses <= 0 {
		return errors.New("--ttl and --uses must be positive")
	}
	if err := checkTags(tags); err != nil {
		return err
	}
	opts := weft.InviteOptions{Name: name, TTL: ttl, Uses: uses, Tags: tags}
	state = stateDir(state)
	var tok string
	c := newAPIClient(state)
	var out inviteResult
	err := c.do(ctx, "POST", "/v1/invite", inviteRequest{Name: name, TTL: ttl, Uses: uses, Tags: tags}, &out)
	var nr errNotRunning
	switch {
	case err == nil && len(endpoints) == 0:
		tok = out.Token
	case err == nil || errors.As(err, &nr):
		// The node is down (or the user named endpoints): sign from the
		// state directory.
		eps, perr := parseAddrPorts("--endpoint", endpoints)
		if perr != nil {
			return perr
		}
		tok, err = weft.InviteOffline(state, opts, eps)
		if err != nil {
			return err
		}
	default:
		return err
	}
	k, t := inviteProgress(tok)
	if asJSON {
		return printJSON(e.stdout, inviteResult{Token: tok, Endorsements: k, Threshold: t})
	}
	fmt.Fprintln(e.stdout, tok)
	if t > 1 {
		// One-anchor networks are done here; say nothing.
		reportInvite(e, k, t)
	}
	return nil
}

func runInviteCosign(ctx context.Context, e *env, args []string) error {
	var state string
	var asJSON bool
	fs := newFlagSet(e, inviteCosignCmd, &state)
	fs.BoolVar(&asJSON, "json", false, "print JSON: token, endorsements, threshold")
	tok, err := oneToken(fs, args, "the invite token another anchor printed")
	if err != nil {
		return err
	}
	var res weft.StatementResult
	if err := newAPIClient(stateDir(state)).do(ctx, "POST", "/v1/invite/cosign", tokenRequest{Token: tok}, &res); err != nil {
		return err
	}
	if asJSON {
		return printJSON(e.stdout, res)
	}
	fmt.Fprintln(e.stdout, res.Token)
	reportInvite(e, res.Endorsements, res.Threshold)
	return nil
}

// reportInvite says on stderr how far an invite is.
func reportInvite(e *env, k, t int) {
	if k >= t {
		fmt.Fprintf(e.stderr, "%d of %d endorsements: the invite is complete; the new node joins with `weft join TOKEN`\n", k, t)
		return
	}
	fmt.Fprintf(e.stderr, "%d of %d endorsements: pass it to another anchor with `weft invite cosign TOKEN`\n", k, t)
}

// inviteProgress returns how many endorsements an invite token carries
// and how many its network's current anchor set needs (0, 0 if the token
// does not parse).
func inviteProgress(tok string) (k, t int) {
	inv, err := trust.ParseInvite(tok)
	if err != nil {
		return 0, 0
	}
	view := trust.NewView(inv.Genesis)
	view.ApplyChain(inv.Chain) // a bad chain leaves the genesis set: still a fair count
	return len(inv.Endorsements), view.Set().Threshold
}

// checkTags validates policy tags (DNS labels), naming the flag.
func checkTags(tags []string) error {
	if len(tags) > trust.MaxTags {
		return fmt.Errorf("--tags: %d tags, at most %d allowed", len(tags), trust.MaxTags)
	}
	for _, t := range tags {
		if err := checkTag(t); err != nil {
			return fmt.Errorf("--tags %q: %w", t, err)
		}
	}
	return nil
}

// parseAddrPorts parses IP:PORT flag values.
func parseAddrPorts(flagName string, list []string) ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	for _, s := range list {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return nil, fmt.Errorf("%s %q: want IP:PORT, e.g. 203.0.113.7:41641", flagName, s)
		}
		out = append(out, ap)
	}
	return out, nil
}
