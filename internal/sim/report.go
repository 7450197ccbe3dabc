package sim

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Describe names a configuration's Byzantine mix and churn for the table
// (and clients, when there are any).
func (c Config) Describe() (byz, churn string) {
	c = c.withDefaults()
	byz = "0%"
	if c.Byzantine > 0 {
		names := make([]string, len(c.Kinds))
		for i, k := range c.Kinds {
			names[i] = k.String()
		}
		if slices.Equal(c.Kinds, []Kind{Silent, Dropping, Eclipse, Stale, Forged}) {
			names = []string{"mixed"}
		}
		byz = fmt.Sprintf("%g%% %s", 100*c.Byzantine, strings.Join(names, "+"))
	}
	churn = "none"
	if c.Churn > 0 {
		churn = fmt.Sprintf("%g/min", c.Churn)
	}
	if c.Clients > 0 {
		churn += fmt.Sprintf(", %g%% clients", 100*c.Clients)
	}
	return byz, churn
}

// WriteTable prints results as an aligned table.
func WriteTable(w io.Writer, rs []Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "N\tByzantine\tchurn/clients\tlookups\tsuccess\thops p50\tp99\ttime p50\tp99\tmsgs/lookup p50\tp99\tmean\tgossip reach\trounds\tvirtual\treqs/node\twall\theap/node\t")
	for _, r := range rs {
		byz, churn := r.Config.Describe()
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%.2f%%\t%d\t%d\t%s\t%s\t%d\t%d\t%.1f\t%d/%d\t%d\t%s\t%.1f\t%s\t%s\t\n",
			r.Config.N, byz, churn, r.Lookups, 100*r.Success(),
			r.HopsMedian, r.HopsP99, ms(r.TimeMedian), ms(r.TimeP99),
			r.MsgsMedian, r.MsgsP99, r.MsgsMean,
			r.GossipReached, r.GossipHonest, r.GossipRounds, ms(r.GossipTime),
			float64(r.GossipRequests)/float64(max(1, r.GossipHonest)),
			r.Wall.Round(100*time.Millisecond), kib(r.HeapPerNode))
	}
	return tw.Flush()
}

func ms(d time.Duration) string {
	if d >= time.Second {
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
	return fmt.Sprintf("%dms", d.Milliseconds())
}

func kib(b int64) string { return fmt.Sprintf("%.1fKiB", float64(b)/1024) }
