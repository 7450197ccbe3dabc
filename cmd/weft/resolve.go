package main

import (
	"context"
	"fmt"
	"net/url"
	"strings"
)

func init() {
	register(&command{name: "resolve", usage: "NAME", summary: "look up an overlay name, node ID or address: addresses and record facts", run: runResolve})
}

func runResolve(ctx context.Context, e *env, args []string) error {
	var state string
	var asJSON bool
	fs := newFlagSet(e, commands["resolve"], &state)
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fmt.Fprintln(e.stderr, "weft resolve takes exactly one NAME")
		fs.Usage()
		return errUsage
	}
	var res resolveResult
	if err := newAPIClient(stateDir(state)).do(ctx, "GET", "/v1/resolve?host="+url.QueryEscape(pos[0]), nil, &res); err != nil {
		return err
	}
	if asJSON {
		return printJSON(e.stdout, res)
	}
	fmt.Fprintf(e.stdout, "%s\n  node id    %s\n  ipv4       %s\n  ipv6       %s\n", res.Name, res.NodeID, res.IPv4, res.IPv6)
	if len(res.Endpoints) > 0 {
		fmt.Fprintf(e.stdout, "  endpoints  %s\n", strings.Join(res.Endpoints, ", "))
	}
	if res.Expires != "" {
		fmt.Fprintf(e.stdout, "  record     seq %d, expires %s\n", res.Seq, res.Expires)
	}
	if len(res.Tags) > 0 {
		fmt.Fprintf(e.stdout, "  tags       %s\n", strings.Join(res.Tags, ", "))
	}
	return nil
}
