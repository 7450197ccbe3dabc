package sim

import (
	"flag"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var (
	full = flag.Bool("sim.full", false, "run the N=10,000 scenarios (make sim)")
	simN = flag.Int("sim.n", 0, "override N of every scenario")
)

// run runs cfg in a synctest bubble, so that latency, timeouts and every
// node's clock are virtual, and returns its result with the wall time set.
func run(t *testing.T, cfg Config) Result {
	t.Helper()
	var (
		res Result
		err error
	)
	start := time.Now()
	synctest.Test(t, func(t *testing.T) {
		res, err = Run(t.Context(), cfg)
	})
	res.Wall = time.Since(start)
	if err != nil {
		t.Fatalf("run %+v: %v", cfg, err)
	}
	return res
}

// scenario is one row of the table and the targets it must meet.
type scenario struct {
	cfg        Config
	minSuccess float64 // fraction of Gets returning the latest record
	maxHops    int     // median
	maxMsgs    float64 // mean messages per lookup
}

// Gossip targets, for every scenario: every live honest node reached in
// at most maxGossipRounds rounds and under maxGossipTime of virtual time
// (50 ms mean link latency, 500 ms rounds).
const (
	maxGossipRounds = 8
	maxGossipTime   = 5 * time.Second
)

func scenarios() []scenario {
	if *full {
		const n = 10_000
		return []scenario{
			{Config{N: n}, 1, 4, 60},
			{Config{N: n, Churn: 100}, 1, 4, 60},
			{Config{N: n, Byzantine: 0.2, Churn: 100}, 0.995, 4, 60},
			{Config{N: n, Byzantine: 0.3, Churn: 100}, 0.97, 4, 60},
			{Config{N: n, Byzantine: 0.2, Churn: 100, Clients: 0.1}, 0.995, 4, 60},
		}
	}
	// Scaled down to run inside go test ./... in seconds; the targets are
	// the full ones, with room for the fewer lookups (one failure in 300
	// is 0.3%).
	n, lookups := 1000, 300
	if testing.Short() {
		n, lookups = 300, 100
	}
	return []scenario{
		{Config{N: n, Lookups: lookups}, 1, 4, 60},
		{Config{N: n, Lookups: lookups, Byzantine: 0.2, Churn: 20, Clients: 0.1}, 0.99, 4, 60},
		{Config{N: n, Lookups: lookups, Byzantine: 0.3, Churn: 20}, 0.95, 4, 60},
	}
}

// TestSimulate runs the DHT and gossip simulator and checks the targets.
// make sim runs it with -sim.full (N=10,000) and prints the table.
func TestSimulate(t *testing.T) {
	var rows []Result
	defer func() {
		var b strings.Builder
		WriteTable(&b, rows)
		t.Logf("\n%s", b.String())
	}()
	for _, sc := range scenarios() {
		if *simN > 0 {
			sc.cfg.N = *simN
		}
		r := run(t, sc.cfg)
		rows = append(rows, r)
		byz, churn := sc.cfg.Describe()
		name := byz + ", churn " + churn
		if s := r.Success(); s < sc.minSuccess {
			t.Errorf("%s: lookup success %.2f%%, want >= %.2f%%", name, 100*s, 100*sc.minSuccess)
		}
		if r.HopsMedian > sc.maxHops {
			t.Errorf("%s: median hops %d, want <= %d", name, r.HopsMedian, sc.maxHops)
		}
		if r.MsgsMean > sc.maxMsgs {
			t.Errorf("%s: %.1f messages per lookup, want <= %g", name, r.MsgsMean, sc.maxMsgs)
		}
		if r.GossipReached != r.GossipHonest {
			t.Errorf("%s: gossip reached %d of %d honest nodes", name, r.GossipReached, r.GossipHonest)
		}
		if r.GossipRounds > maxGossipRounds || r.GossipTime >= maxGossipTime {
			t.Errorf("%s: gossip took %d rounds, %v; want <= %d rounds, < %v", name, r.GossipRounds, r.GossipTime, maxGossipRounds, maxGossipTime)
		}
		if r.PutsFailed > 0 || r.JoinsFailed > 0 {
			t.Errorf("%s: %d of %d puts and %d of %d joins failed", name, r.PutsFailed, r.Puts, r.JoinsFailed, r.Joins)
		}
	}
}
