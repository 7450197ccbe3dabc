package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/weft-net/weft"
)

func init() {
	register(&command{name: "dht", usage: "[records | lookup NAME|NODEID]",
		summary: "the DHT: routing table and role, stored records, or a traced lookup", run: runDHT})
}

func runDHT(ctx context.Context, e *env, args []string) error {
	var state string
	var asJSON bool
	fs := newFlagSet(e, commands["dht"], &state)
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, `Usage:
  weft dht [--json]                      routing table (bucket, node, name, address, RTT, last seen, failures), role, records held
  weft dht records [--json]              records this node stores: key, kind, owner, seq, expiry
  weft dht lookup NAME|NODEID [--json]   look NAME up in the DHT now: the record and the path the lookup took

Flags:
`)
		fs.PrintDefaults()
	}
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	api := newAPIClient(stateDir(state))
	sub := ""
	if len(pos) > 0 {
		sub = pos[0]
	}
	switch {
	case sub == "" && len(pos) == 0:
		var st weft.DHTStatus
		if err := api.do(ctx, "GET", "/v1/dht", nil, &st); err != nil {
			return err
		}
		if asJSON {
			return printJSON(e.stdout, st)
		}
		printDHTStatus(e.stdout, st)
		return nil
	case sub == "records" && len(pos) == 1:
		var recs []weft.DHTRecord
		if err := api.do(ctx, "GET", "/v1/dht/records", nil, &recs); err != nil {
			return err
		}
		if asJSON {
			return printJSON(e.stdout, recs)
		}
		printDHTRecords(e.stdout, recs)
		return nil
	case sub == "lookup" && len(pos) == 2:
		var res weft.LookupResult
		if err := api.do(ctx, "GET", "/v1/dht/lookup?host="+url.QueryEscape(pos[1]), nil, &res); err != nil {
			return err
		}
		if asJSON {
			if err := printJSON(e.stdout, res); err != nil {
				return err
			}
		} else {
			printLookup(e.stdout, res)
		}
		if res.Record == nil {
			if !asJSON {
				fmt.Fprintf(e.stderr, "weft dht lookup: %s\n", res.Error)
			}
			return errReported
		}
		return nil
	}
	fs.Usage()
	return errUsage
}

func printDHTStatus(w io.Writer, st weft.DHTStatus) {
	how := "observed"
	if st.RoleForced {
		how = "configured"
	}
	fmt.Fprintf(w, "role      %s (%s: %s)\n", st.Role, how, st.RoleReason)
	if len(st.Rendezvous) > 0 {
		fmt.Fprintf(w, "rendezvous %v\n", st.Rendezvous)
	}
	fmt.Fprintf(w, "records   %d stored (%d refused)\n", st.Records, st.StoreRefused)
	fmt.Fprintf(w, "table     %d contacts, k=%d\n\n", len(st.Contacts), st.K)
	if len(st.Contacts) == 0 {
		fmt.Fprintln(w, "no contacts yet: is a bootstrap node reachable? (`weft status` shows them)")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BUCKET\tNODE ID\tNAME\tADDRESS\tRTT\tLAST SEEN\tFAILURES")
	for _, c := range st.Contacts {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d\n", c.Bucket, c.NodeID.Short(), orDash(c.Name), c.Addr,
			rttString(c.RTTms), ago(c.LastSeen), c.Failures)
	}
	tw.Flush()
}

func printDHTRecords(w io.Writer, recs []weft.DHTRecord) {
	if len(recs) == 0 {
		fmt.Fprintln(w, "no records stored")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tKIND\tOWNER\tNODE ID\tSEQ\tEXPIRES")
	for _, r := range recs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\tin %s\n", r.Key.Short(), r.Kind, r.Owner, r.NodeID.Short(), r.Seq,
			time.Until(r.Expires).Round(time.Second))
	}
	tw.Flush()
}

func printLookup(w io.Writer, res weft.LookupResult) {
	fmt.Fprintf(w, "lookup    %s (key %s)\n", res.Host, res.Key.Short())
	fmt.Fprintf(w, "took      %.1f ms, %d messages, %d hops, %d of %d disjoint paths found it\n",
		res.DurationMs, res.Messages, res.Hops, res.PathsSucceeded, res.Paths)
	if p := res.Record; p != nil {
		fmt.Fprintf(w, "found     %s  %s  %s  node %s\n", p.Name, p.IPv4, p.IPv6, p.NodeID.Short())
		eps := make([]string, len(p.Endpoints))
		for i, ep := range p.Endpoints {
			eps[i] = ep.String()
		}
		fmt.Fprintf(w, "          endpoints %s; seq %d, expires in %s\n", strings.Join(eps, ", "), p.Seq, time.Until(p.Expires).Round(time.Second))
		if len(p.Rendezvous) > 0 {
			fmt.Fprintf(w, "          a DHT client, reached through %v\n", p.Rendezvous)
		}
	} else {
		fmt.Fprintf(w, "not found %s\n", res.Error)
	}
	if len(res.Queries) == 0 {
		fmt.Fprintln(w, "\nno requests sent (answered from this node's store)")
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "AT\tTO\tNAME\tREQUEST\tRTT\tRESULT")
	for _, q := range res.Queries {
		result := "answered"
		if q.Error != "" {
			result = q.Error
		}
		fmt.Fprintf(tw, "%.1f ms\t%s\t%s\t%s\t%s\t%s\n", q.AtMs, q.To, orDash(q.Name), q.Msg, rttString(q.RTTms), result)
	}
	tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func rttString(ms float64) string {
	if ms == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f ms", ms)
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return time.Since(t).Round(time.Second).String() + " ago"
}
