package main

import (
	"context"
	"fmt"

	"github.com/weft-net/weft"
	"github.com/weft-net/weft/addr"
	"github.com/weft-net/weft/trust"
)

func init() {
	register(&command{name: "keygen", summary: "make this machine's anchor key and print its anchor descriptor (for `weft init --anchors`)", run: runKeygen})
}

// keygenResult is the JSON form of `weft keygen`.
type keygenResult struct {
	Descriptor string   `json:"descriptor"`
	Name       string   `json:"name"`
	NodeID     string   `json:"node_id"`
	Endpoints  []string `json:"endpoints"`
	StateDir   string   `json:"state_dir"`
}

func runKeygen(ctx context.Context, e *env, args []string) error {
	var state, name string
	var endpoints listFlag
	var asJSON bool
	fs := newFlagSet(e, commands["keygen"], &state)
	fs.StringVar(&name, "name", "", "this anchor's node `NAME` (default: the host name)")
	fs.Var(&endpoints, "endpoint", "UDP `ADDR:PORT` where this anchor will be reachable, written into the genesis (repeatable; what `weft up --listen` will use)")
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	eps, err := parseAddrPorts("--endpoint", endpoints)
	if err != nil {
		return err
	}
	if len(eps) > trust.MaxAnchorEndpoints {
		return fmt.Errorf("--endpoint: %d addresses, at most %d allowed", len(eps), trust.MaxAnchorEndpoints)
	}
	state = stateDir(state)
	tok, err := weft.Keygen(state, name, eps)
	if err != nil {
		return err
	}
	d, err := trust.ParseAnchorDescriptor(tok)
	if err != nil {
		return err
	}
	if asJSON {
		res := keygenResult{Descriptor: tok, Name: d.Name, NodeID: addr.NodeIDFromKey(d.SignKey).String(), Endpoints: []string{}, StateDir: state}
		for _, ap := range d.Endpoints {
			res.Endpoints = append(res.Endpoints, ap.String())
		}
		return printJSON(e.stdout, res)
	}
	fmt.Fprintln(e.stdout, tok)
	fmt.Fprintf(e.stderr, "anchor %s (node %s): the private key stays in %s.\n", d.Name, addr.NodeIDFromKey(d.SignKey).Short(), state)
	if len(eps) == 0 {
		fmt.Fprintln(e.stderr, "no --endpoint: joining nodes will need --anchor ADDR:PORT or an invite from this anchor to reach it.")
	}
	fmt.Fprintln(e.stderr, "Give this line to whoever assembles the network: `weft init --anchors TOKEN,TOKEN,...`")
	return nil
}
