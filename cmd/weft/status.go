package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/weft-net/weft"
)

func init() {
	register(&command{name: "status", summary: "show this node and its peers", run: runStatus})
}

func fetchStatus(ctx context.Context, state string) (weft.Status, error) {
	var st weft.Status
	err := newAPIClient(stateDir(state)).do(ctx, "GET", "/v1/status", nil, &st)
	return st, err
}

func runStatus(ctx context.Context, e *env, args []string) error {
	var state string
	var asJSON bool
	fs := newFlagSet(e, commands["status"], &state)
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	st, err := fetchStatus(ctx, state)
	if err != nil {
		return err
	}
	ts, terr := fetchTrust(ctx, state)
	if asJSON {
		out := statusOutput{Status: st}
		if terr == nil {
			out.Trust = &ts
		}
		return printJSON(e.stdout, out)
	}
	role := "member"
	if st.Anchor {
		role = "anchor"
	}
	fmt.Fprintf(e.stdout, "%s.%s  %s  %s  (%s of network %q %s)\n", st.Name, st.Domain, st.IPv4, st.IPv6, role, st.Network, st.NetworkID.Short())
	fmt.Fprintf(e.stdout, "node id    %s\n", st.NodeID)
	fmt.Fprintf(e.stdout, "listening  udp %s, advertising %v\n", st.Listen, st.Endpoints)
	if len(st.Bootstrap) > 0 {
		fmt.Fprintf(e.stdout, "bootstrap  %d of %d reachable %v\n", st.BootstrapReachable, len(st.Bootstrap), st.Bootstrap)
	}
	fmt.Fprintf(e.stdout, "dht        %s, %d contacts (`weft dht` for the table)\n", st.DHTRole, st.DHTContacts)
	fmt.Fprintf(e.stdout, "cert       valid until %s\n", st.CertExpires.Format(time.DateOnly))
	if r := st.Relay; r != nil {
		fmt.Fprintf(e.stdout, "relay      TURN on %s (advertised %s): %d allocations now, %d made; relayed %s to peers, %s from peers; credentials %d issued, %d refused\n",
			r.Listen, r.Addr, r.Allocations, r.AllocationsTotal, bytesHuman(r.BytesToPeers), bytesHuman(r.BytesFromPeers), r.CredentialsIssued, r.CredentialsRefused)
	}
	if terr == nil {
		fmt.Fprintf(e.stdout, "policy     %s\n", policyLine(ts.Policy))
	}
	if len(st.Rejections) > 0 {
		fmt.Fprintf(e.stdout, "refused    %s\n", formatCounts(st.Rejections))
	}
	if st.SpoofedDrops > 0 {
		fmt.Fprintf(e.stdout, "dropped    %d packets with spoofed source addresses\n", st.SpoofedDrops)
	}
	fmt.Fprintln(e.stdout)
	printPeers(e.stdout, st.Peers)
	return nil
}

// statusOutput is `weft status --json`: the node's status and, under
// "trust", the anchor set, revocations and policy it follows.
type statusOutput struct {
	weft.Status
	Trust *weft.TrustStatus `json:"trust,omitempty"`
}

// formatCounts writes counts by reason, largest first: "revoked 3, expired 1".
func formatCounts(m map[string]uint64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

func printPeers(w io.Writer, peers []weft.PeerStatus) {
	if len(peers) == 0 {
		fmt.Fprintln(w, "no peers yet (peers are added when traffic needs them)")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tNODE ID\tIPV4\tIPV6\tENDPOINT\tPATH\tHANDSHAKE\tRX\tTX")
	for _, p := range peers {
		hs := "never"
		if !p.LastHandshake.IsZero() {
			hs = time.Since(p.LastHandshake).Round(time.Second).String() + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, p.NodeID.Short(), p.IPv4, p.IPv6,
			p.Endpoint, p.Path, hs, bytesHuman(p.RxBytes), bytesHuman(p.TxBytes))
	}
	tw.Flush()
	printPathReasons(w, peers)
}

func bytesHuman(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	v := float64(n) / float64(div)
	if v >= unit-0.05 && exp < len("KMGTPE")-1 {
		// 1023.96 KiB would print as "1024.0 KiB".
		v /= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTPE"[exp])
}
