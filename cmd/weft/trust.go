package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/weft-net/weft"
	"github.com/weft-net/weft/trust"
)

func init() {
	register(&command{name: "trust", usage: "[SUBCOMMAND]",
		summary: "anchors, threshold, revocations, policy; approve joins; cosign and publish statements", run: runTrust})
	for _, c := range []*command{
		{name: "status", summary: "the anchor set, threshold t, tolerance f, chain seq, revocations and policy in force", run: runTrustStatus},
		{name: "pending", summary: "on an anchor: join requests without invite waiting for this operator", run: runTrustPending},
		{name: "approve", usage: "HOST", summary: "on an anchor: approve a pending join (name or node-ID prefix)", run: runTrustApprove},
		{name: "reject", usage: "HOST", summary: "on an anchor: reject a pending join (name or node-ID prefix)", run: runTrustReject},
		{name: "genesis", summary: "print the network's genesis token (for `weft join --genesis`)", run: runTrustGenesis},
		{name: "cosign", usage: "TOKEN", summary: "on an anchor: add this anchor's endorsement to an invite, revocation, anchor-set change or policy", run: runTrustCosign},
		{name: "publish", usage: "TOKEN", summary: "apply a complete revocation, anchor-set change or policy here and spread it", run: runTrustPublish},
		{name: "change", summary: "on an anchor: propose a new anchor set (--add, --remove, --threshold)", run: runTrustChange},
		{name: "policy", summary: "on an anchor: propose a policy (--rule ..., repeatable) replacing the one in force", run: runTrustPolicy},
	} {
		c.name = "trust " + c.name
		trustCommands = append(trustCommands, c)
	}
}

// trustCommands are the subcommands of `weft trust`, in help order.
var trustCommands []*command

func runTrust(ctx context.Context, e *env, args []string) error {
	sub := "status"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub, args = args[0], args[1:]
	} else if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		printTrustUsage(e.stderr)
		return nil
	}
	for _, c := range trustCommands {
		if c.name == "trust "+sub {
			err := c.run(ctx, e, args)
			if err != nil && !errors.Is(err, errUsage) && !errors.Is(err, flag.ErrHelp) {
				// Name the subcommand: "weft trust policy: ...".
				fmt.Fprintf(e.stderr, "weft %s: %v\n", c.name, err)
				return errReported
			}
			return err
		}
	}
	fmt.Fprintf(e.stderr, "weft trust: unknown subcommand %q\n\n", sub)
	printTrustUsage(e.stderr)
	return errUsage
}

func printTrustUsage(w io.Writer) {
	fmt.Fprintln(w, "Usage: weft trust SUBCOMMAND [flags] [args]   (default: status)\n\nSubcommands:")
	for _, c := range trustCommands {
		fmt.Fprintf(w, "  %-26s %s\n", strings.TrimPrefix(c.name, "trust ")+" "+c.usage, c.summary)
	}
	fmt.Fprintln(w, "\nRun `weft trust SUBCOMMAND -h` for its flags.")
}

// trustCmd returns the subcommand called name ("trust status").
func trustCmd(name string) *command {
	for _, c := range trustCommands {
		if c.name == name {
			return c
		}
	}
	panic("no command " + name)
}

func fetchTrust(ctx context.Context, state string) (weft.TrustStatus, error) {
	var ts weft.TrustStatus
	err := newAPIClient(stateDir(state)).do(ctx, "GET", "/v1/trust", nil, &ts)
	return ts, err
}

func runTrustStatus(ctx context.Context, e *env, args []string) error {
	var state string
	var asJSON bool
	fs := newFlagSet(e, trustCmd("trust status"), &state)
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	ts, err := fetchTrust(ctx, state)
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(e.stdout, ts)
	}
	printTrust(e.stdout, ts)
	return nil
}

func printTrust(w io.Writer, ts weft.TrustStatus) {
	fmt.Fprintf(w, "network      %s\n", ts.NetworkID)
	fmt.Fprintf(w, "anchor set   seq %d: %d anchors, threshold t=%d, tolerates f=%d Byzantine\n",
		ts.SetSeq, len(ts.Anchors), ts.Threshold, ts.Tolerance)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  NAME\tNODE ID\tIPV4")
	for _, a := range ts.Anchors {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", a.Name, a.NodeID, a.IPv4)
	}
	tw.Flush()
	if len(ts.Revocations) == 0 {
		fmt.Fprintln(w, "revocations  none")
	} else {
		fmt.Fprintf(w, "revocations  %d\n", len(ts.Revocations))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  NODE ID\tREVOKED\tREASON")
		for _, r := range ts.Revocations {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", r.NodeID, r.Created.UTC().Format(time.RFC3339), r.Reason)
		}
		tw.Flush()
	}
	if !strings.HasPrefix(ts.Policy, "policy:") {
		fmt.Fprintf(w, "policy       %s\n", ts.Policy)
		return
	}
	fmt.Fprint(w, ts.Policy)
	if !strings.HasSuffix(ts.Policy, "\n") {
		fmt.Fprintln(w)
	}
}

// policyLine is the first line of a policy description, without its
// "policy: " label.
func policyLine(desc string) string {
	line, _, _ := strings.Cut(desc, "\n")
	return strings.TrimPrefix(line, "policy: ")
}

func runTrustPending(ctx context.Context, e *env, args []string) error {
	var state string
	var asJSON bool
	fs := newFlagSet(e, trustCmd("trust pending"), &state)
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	var list []pendingJoin
	if err := newAPIClient(stateDir(state)).do(ctx, "GET", "/v1/trust/pending", nil, &list); err != nil {
		return err
	}
	if asJSON {
		return printJSON(e.stdout, list)
	}
	if len(list) == 0 {
		fmt.Fprintln(e.stdout, "no join requests waiting (nodes ask with `weft join --genesis TOKEN`)")
		return nil
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Received.Before(list[j].Received) })
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tNODE ID\tIPV4\tTAGS\tASKED\tSTATE\tWHY")
	for _, p := range list {
		tags := strings.Join(p.Tags, ",")
		if tags == "" {
			tags = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s ago\t%s\t%s\n", p.Name, p.NodeID.Short(), p.IPv4, tags,
			time.Since(p.Received).Round(time.Second), p.State, p.Why)
	}
	tw.Flush()
	fmt.Fprintln(e.stdout, "approve with `weft trust approve NAME`, refuse with `weft trust reject NAME --why REASON`")
	return nil
}

func runTrustApprove(ctx context.Context, e *env, args []string) error {
	return runTrustDecide(ctx, e, args, true)
}

func runTrustReject(ctx context.Context, e *env, args []string) error {
	return runTrustDecide(ctx, e, args, false)
}

// runTrustDecide is `weft trust approve` and `weft trust reject`.
func runTrustDecide(ctx context.Context, e *env, args []string, approve bool) error {
	c := trustCmd("trust approve")
	if !approve {
		c = trustCmd("trust reject")
	}
	var state, why string
	var asJSON bool
	fs := newFlagSet(e, c, &state)
	if !approve {
		fs.StringVar(&why, "why", "", "the reason, shown to the joining node")
	}
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fmt.Fprintf(e.stderr, "weft %s: want exactly one HOST (a name or node-ID prefix from `weft trust pending`), got %d arguments\n", c.name, len(pos))
		fs.Usage()
		return errUsage
	}
	path := "/v1/trust/reject"
	if approve {
		path = "/v1/trust/approve"
	}
	var res decisionResult
	if err := newAPIClient(stateDir(state)).do(ctx, "POST", path, decisionRequest{Host: pos[0], Why: why}, &res); err != nil {
		return err
	}
	if asJSON {
		return printJSON(e.stdout, res)
	}
	if approve {
		fmt.Fprintf(e.stdout, "approved %s on this anchor; it is admitted once %d anchors have approved it\n", res.Host, res.Threshold)
	} else {
		fmt.Fprintf(e.stdout, "rejected %s on this anchor\n", res.Host)
	}
	return nil
}

func runTrustGenesis(ctx context.Context, e *env, args []string) error {
	var state string
	var asJSON bool
	fs := newFlagSet(e, trustCmd("trust genesis"), &state)
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	state = stateDir(state)
	var out tokenRequest
	err := newAPIClient(state).do(ctx, "GET", "/v1/trust/genesis", nil, &out)
	var nr errNotRunning
	if errors.As(err, &nr) {
		// The genesis never changes: the state directory has it too.
		g, gerr := trust.LoadGenesis(state)
		if gerr != nil {
			if !weft.HasMembership(state) {
				return weft.ErrNotJoined
			}
			return gerr
		}
		out.Token, err = g.Encode(), nil
	}
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(e.stdout, out)
	}
	fmt.Fprintln(e.stdout, out.Token)
	return nil
}

func runTrustCosign(ctx context.Context, e *env, args []string) error {
	var state string
	var asJSON bool
	fs := newFlagSet(e, trustCmd("trust cosign"), &state)
	fs.BoolVar(&asJSON, "json", false, "print JSON: token, endorsements, threshold, published")
	tok, err := oneToken(fs, args, "the token another anchor printed")
	if err != nil {
		return err
	}
	var res weft.StatementResult
	if err := newAPIClient(stateDir(state)).do(ctx, "POST", "/v1/trust/cosign", tokenRequest{Token: tok}, &res); err != nil {
		return err
	}
	if strings.HasPrefix(tok, trust.InvitePrefix) {
		if asJSON {
			return printJSON(e.stdout, res)
		}
		fmt.Fprintln(e.stdout, res.Token)
		reportInvite(e, res.Endorsements, res.Threshold)
		return nil
	}
	return reportStatement(e, res, asJSON)
}

// reportStatement prints a statement token on stdout and how far it is on
// stderr, or the whole result as JSON.
func reportStatement(e *env, res weft.StatementResult, asJSON bool) error {
	if asJSON {
		return printJSON(e.stdout, res)
	}
	fmt.Fprintln(e.stdout, res.Token)
	if res.Published {
		fmt.Fprintf(e.stderr, "%d of %d endorsements: published; every node applies it within seconds\n", res.Endorsements, res.Threshold)
		return nil
	}
	fmt.Fprintf(e.stderr, "%d of %d endorsements: pass it to another anchor with `weft trust cosign TOKEN`\n", res.Endorsements, res.Threshold)
	return nil
}

func runTrustPublish(ctx context.Context, e *env, args []string) error {
	var state string
	var asJSON bool
	fs := newFlagSet(e, trustCmd("trust publish"), &state)
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	tok, err := oneToken(fs, args, "a complete revocation, anchor-set change or policy")
	if err != nil {
		return err
	}
	var res publishResult
	if err := newAPIClient(stateDir(state)).do(ctx, "POST", "/v1/trust/publish", tokenRequest{Token: tok}, &res); err != nil {
		return err
	}
	if asJSON {
		return printJSON(e.stdout, res)
	}
	if res.Fresh {
		fmt.Fprintln(e.stdout, "published: applied here and sent to the network")
	} else {
		fmt.Fprintln(e.stdout, "already in force here; nothing to send")
	}
	return nil
}

func runTrustChange(ctx context.Context, e *env, args []string) error {
	var state string
	var add, remove listFlag
	var threshold int
	var asJSON bool
	fs := newFlagSet(e, trustCmd("trust change"), &state)
	fs.Var(&add, "add", "add the anchor with this descriptor `TOKEN` (`weft keygen` on the new anchor; repeatable)")
	fs.Var(&remove, "remove", "remove the anchor with this `NAME` or node ID (repeatable)")
	fs.IntVar(&threshold, "threshold", 0, "threshold `N` of the new set (default floor(2n/3)+1 of its size)")
	fs.BoolVar(&asJSON, "json", false, "print JSON: token, endorsements, threshold, published")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if len(add) == 0 && len(remove) == 0 && threshold == 0 {
		fmt.Fprintln(e.stderr, "weft trust change: give at least one of --add, --remove, --threshold")
		fs.Usage()
		return errUsage
	}
	if threshold < 0 {
		return errors.New("--threshold must be positive")
	}
	for _, d := range add {
		if !strings.HasPrefix(d, trust.DescriptorPrefix) {
			return fmt.Errorf("--add %.24q…: want an anchor descriptor (%s…) printed by `weft keygen` on the new anchor", d, trust.DescriptorPrefix)
		}
	}
	var res weft.StatementResult
	if err := newAPIClient(stateDir(state)).do(ctx, "POST", "/v1/trust/change", changeRequest{Add: add, Remove: remove, Threshold: threshold}, &res); err != nil {
		return err
	}
	return reportStatement(e, res, asJSON)
}

// ruleFlag collects --rule values whole (rules contain commas).
type ruleFlag []string

func (r *ruleFlag) String() string     { return strings.Join(*r, "; ") }
func (r *ruleFlag) Set(s string) error { *r = append(*r, s); return nil }

func runTrustPolicy(ctx context.Context, e *env, args []string) error {
	var state string
	var rules ruleFlag
	var asJSON bool
	fs := newFlagSet(e, trustCmd("trust policy"), &state)
	fs.Var(&rules, "rule", "allow `'from=TAGS to=TAGS [proto=tcp|udp|icmp|*] [ports=22,80-89]'` (repeatable; TAGS comma-separated or *)")
	fs.BoolVar(&asJSON, "json", false, "print JSON: token, endorsements, threshold, published")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if len(rules) == 0 {
		fmt.Fprintln(e.stderr, "weft trust policy: give at least one --rule (with a policy, whatever no rule allows is denied; --rule 'from=* to=*' allows everything)")
		fs.Usage()
		return errUsage
	}
	if _, err := parseRules(rules); err != nil {
		return err
	}
	var res weft.StatementResult
	if err := newAPIClient(stateDir(state)).do(ctx, "POST", "/v1/trust/policy", policyRequest{Rules: rules}, &res); err != nil {
		return err
	}
	return reportStatement(e, res, asJSON)
}
