package sim

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/weft-net/weft/addr"
	"github.com/weft-net/weft/dht"
)

// Config describes one simulation run. Zero fields take the defaults noted.
type Config struct {
	// N is the number of nodes at the start. Required.
	N int

	// Byzantine is the fraction of the N nodes that misbehave, dealt
	// round-robin over Kinds (nil means all five Byzantine kinds).
	Byzantine float64
	Kinds     []Kind

	// Clients is the fraction of honest nodes that run as DHT clients
	// (dht.Options.Client): in nobody's table, but looking up and pulling
	// gossip like the rest.
	Clients float64

	// Churn is how many honest servers leave, and how many new nodes join
	// by a real Bootstrap, per virtual minute during the lookup phase.
	Churn float64

	// Latency is the mean one-way link latency (each pair gets a fixed
	// factor in [0.5, 1.5)); zero means 50 ms. Loss is the probability
	// that a packet is lost. DropAnswer is the fraction of requests a
	// Dropping node answers; zero means 0.5.
	Latency    time.Duration
	Loss       float64
	DropAnswer float64

	// Records is how many honest owners Put their node record (under
	// NodeKey of the owner); zero means min(N/2, 1000). Lookups is how
	// many Gets are made, by random live honest nodes for random published
	// keys, spread over Window of virtual time; zero means 1000 over two
	// minutes.
	Records int
	Lookups int
	Window  time.Duration

	// Timeout bounds each DHT request; zero means 1 s.
	Timeout time.Duration

	// GossipInterval is the gossip round interval (each node runs rounds
	// on its own timer with a random phase); zero means 500 ms. Fanout is
	// GossipOptions.Fanout; zero means its default. MaxGossipTime bounds
	// the gossip phase; zero means 30 s.
	GossipInterval time.Duration
	Fanout         int
	MaxGossipTime  time.Duration

	// MaintainInterval is how often every live honest node runs
	// DHT.Maintain; zero means 15 s.
	MaintainInterval time.Duration
}

func (c Config) withDefaults() Config {
	if c.Kinds == nil {
		c.Kinds = []Kind{Silent, Dropping, Eclipse, Stale, Forged}
	}
	if c.Latency == 0 {
		c.Latency = 50 * time.Millisecond
	}
	if c.DropAnswer == 0 {
		c.DropAnswer = 0.5
	}
	if c.Records == 0 {
		c.Records = min(c.N/2, 1000)
	}
	if c.Lookups == 0 {
		c.Lookups = 1000
	}
	if c.Window == 0 {
		c.Window = 2 * time.Minute
	}
	if c.Timeout == 0 {
		c.Timeout = time.Second
	}
	if c.GossipInterval == 0 {
		c.GossipInterval = 500 * time.Millisecond
	}
	if c.MaxGossipTime == 0 {
		c.MaxGossipTime = 30 * time.Second
	}
	if c.MaintainInterval == 0 {
		c.MaintainInterval = 15 * time.Second
	}
	return c
}

// Result is what a run measured. Times are virtual.
type Result struct {
	Config Config

	Lookups, Succeeded  int
	HopsMedian, HopsP99 int
	TimeMedian, TimeP99 time.Duration
	MsgsMedian, MsgsP99 int
	MsgsMean            float64

	Puts, PutsFailed int
	Joins, Leaves    int
	JoinsFailed      int
	Evicted          int // table entries evicted by Maintain's pings

	GossipHonest   int           // live honest nodes that should receive the revocation
	GossipReached  int           // of those, how many did
	GossipRounds   int           // rounds until the last one did
	GossipTime     time.Duration // virtual time until the last one did
	GossipRequests int64         // gossip requests sent in the gossip phase

	HeapPerNode int64 // live heap after setup, per node
	Messages    int64 // requests sent over the whole run

	// Wall is the real time the run took; the caller sets it, since
	// inside a synctest bubble the time package tells virtual time.
	Wall time.Duration
}

// Success is the fraction of lookups that returned the latest record.
func (r Result) Success() float64 { return float64(r.Succeeded) / float64(max(1, r.Lookups)) }

// Sim is one simulation.
type Sim struct {
	cfg  Config
	nw   *network
	recs *records
	log  *slog.Logger

	byz      []dht.Contact // Byzantine servers, sorted by NodeKey
	byzKeys  []dht.Key
	owners   []dht.Key // published keys
	ownerSet map[int]bool
}

// Run builds the network, runs the lookup phase (with churn), then the
// gossip phase, and returns what it measured. It uses the time package for
// latency, timeouts and the clocks of every node, so inside a
// testing/synctest bubble all of it runs on virtual time; outside one it
// runs in real time.
//
// Initial routing tables are seeded from a global view through
// Table.Seen (for each node and each bucket, up to k random nodes of that
// bucket's range, with the true RTT), which is what a converged network's
// tables look like; joins during churn use the real Bootstrap.
func Run(ctx context.Context, cfg Config) (Result, error) {
	cfg = cfg.withDefaults()
	if cfg.N < 2 {
		return Result{}, fmt.Errorf("sim: N %d is too small", cfg.N)
	}
	s := &Sim{cfg: cfg, recs: newRecords(), log: slog.New(slog.DiscardHandler), ownerSet: make(map[int]bool)}
	s.nw = &network{cfg: &s.cfg, sim: s}
	res := Result{Config: cfg}
	defer s.close()

	if err := s.build(); err != nil {
		return res, err
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	res.HeapPerNode = int64(ms.HeapAlloc) / int64(cfg.N)

	s.put(ctx, &res)
	s.lookups(ctx, &res)
	s.gossip(ctx, &res)
	for i := range s.nw.calls {
		res.Messages += s.nw.calls[i].Load()
	}
	return res, ctx.Err()
}

func nodeID(i int) addr.NodeID {
	return addr.NodeID(sha256.Sum256(binary.BigEndian.AppendUint64([]byte("sim-node"), uint64(i))))
}

// newNode creates node i (not yet up).
func (s *Sim) newNode(i int, kind Kind, client bool) (*node, error) {
	n := &node{idx: i, id: nodeID(i), peer: peerOf(i), kind: kind, client: client, handlers: make(map[dht.MsgType]dht.Handler)}
	n.key = dht.NodeKey(n.id)
	st, err := dht.NewStore(dht.StoreOptions{Validator: s.recs, SweepInterval: -1})
	if err != nil {
		return nil, err
	}
	n.st = st
	d, err := dht.New(dht.Options{
		Self:      n.contact(),
		Transport: &transport{nw: s.nw, self: n},
		Store:     st,
		Validator: s.recs,
		Identify:  s.identify,
		Timeout:   s.cfg.Timeout,
		Client:    client,
	})
	if err != nil {
		st.Close()
		return nil, err
	}
	n.d = d
	return n, nil
}

func (s *Sim) identify(p dht.Peer) (addr.NodeID, bool) {
	n := s.nw.byPeer(p)
	if n == nil || n.client {
		return addr.NodeID{}, false
	}
	return n.id, true
}

type keyed struct {
	key dht.Key
	n   *node
}

func (s *Sim) build() error {
	cfg := s.cfg
	kinds := make([]Kind, cfg.N)
	nByz := int(float64(cfg.N)*cfg.Byzantine + 0.5)
	for i := range nByz {
		kinds[i] = cfg.Kinds[i%len(cfg.Kinds)]
	}
	rand.Shuffle(len(kinds), func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
	for i := range cfg.N {
		client := kinds[i] == Honest && rand.Float64() < cfg.Clients
		n, err := s.newNode(i, kinds[i], client)
		if err != nil {
			return err
		}
		s.nw.nodes = append(s.nw.nodes, n)
	}
	// Global view: servers sorted by key.
	var servers []keyed
	for _, n := range s.nw.nodes {
		if !n.client {
			servers = append(servers, keyed{n.key, n})
		}
	}
	slices.SortFunc(servers, func(a, b keyed) int { return bytes.Compare(a.key[:], b.key[:]) })
	for _, kn := range servers {
		if kn.n.kind != Honest {
			s.byz = append(s.byz, kn.n.contact())
			s.byzKeys = append(s.byzKeys, kn.key)
		}
	}
	k := dht.DefaultK
	for _, n := range s.nw.nodes {
		tab := n.d.Table()
		for b := 0; b < dht.NumBuckets; b++ {
			lo, hi := bucketRange(servers, n.key, b)
			if lo >= hi {
				if !sharesPrefix(servers, n.key, b) {
					break
				}
				continue
			}
			for _, j := range pick(hi-lo, k) {
				m := servers[lo+j].n
				tab.Seen(m.contact(), 2*s.nw.latency(n.idx, m.idx))
			}
		}
		n.up.Store(true)
	}
	return nil
}

// bucketRange returns the range of servers whose common-prefix length with
// self is exactly b: those sharing self's first b bits and differing at
// bit b.
func bucketRange(servers []keyed, self dht.Key, b int) (int, int) {
	p := self
	p[b/8] ^= 0x80 >> (b % 8)
	return prefixRange(servers, p, b+1)
}

// sharesPrefix reports whether any server other than self shares self's
// first b+1 bits (so deeper buckets may still be non-empty).
func sharesPrefix(servers []keyed, self dht.Key, b int) bool {
	lo, hi := prefixRange(servers, self, b+1)
	n := hi - lo
	if lo < hi && slices.ContainsFunc(servers[lo:hi], func(k keyed) bool { return k.key == self }) {
		n--
	}
	return n > 0
}

// prefixRange returns the range of servers whose first bits bits equal p's.
func prefixRange(servers []keyed, p dht.Key, bits int) (int, int) {
	lo, hi := p, p
	for i := bits; i < dht.NumBuckets; i++ {
		lo[i/8] &^= 0x80 >> (i % 8)
		hi[i/8] |= 0x80 >> (i % 8)
	}
	a := sort.Search(len(servers), func(i int) bool { return bytes.Compare(servers[i].key[:], lo[:]) >= 0 })
	b := sort.Search(len(servers), func(i int) bool { return bytes.Compare(servers[i].key[:], hi[:]) > 0 })
	return a, b
}

// pick returns min(n, k) distinct indexes in [0, n).
func pick(n, k int) []int {
	if n <= k {
		out := make([]int, n)
		for i := range out {
			out[i] = i
		}
		return out
	}
	seen := make(map[int]bool, k)
	out := make([]int, 0, k)
	for len(out) < k {
		if j := rand.IntN(n); !seen[j] {
			seen[j] = true
			out = append(out, j)
		}
	}
	return out
}

// colluders returns the n Byzantine servers closest to target.
func (s *Sim) colluders(target dht.Key, n int) []dht.Contact {
	i := sort.Search(len(s.byzKeys), func(i int) bool { return bytes.Compare(s.byzKeys[i][:], target[:]) >= 0 })
	lo, hi := max(0, i-2*n), min(len(s.byz), i+2*n)
	cs := slices.Clone(s.byz[lo:hi])
	slices.SortFunc(cs, func(a, b dht.Contact) int {
		return dht.CompareDistance(target, dht.NodeKey(a.ID), dht.NodeKey(b.ID))
	})
	return cs[:min(n, len(cs))]
}

func (s *Sim) nodes() []*node {
	s.nw.mu.RLock()
	defer s.nw.mu.RUnlock()
	return slices.Clone(s.nw.nodes)
}

// randomHonest returns a random live honest node (servers only if
// serversOnly).
func (s *Sim) randomHonest(serversOnly bool) *node {
	ns := s.nodes()
	for {
		n := ns[rand.IntN(len(ns))]
		if n.kind == Honest && n.up.Load() && (!serversOnly || !n.client) {
			return n
		}
	}
}

// put has Records honest owners publish their node record, concurrently.
func (s *Sim) put(ctx context.Context, res *Result) {
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	for len(s.ownerSet) < s.cfg.Records {
		n := s.randomHonest(false)
		if s.ownerSet[n.idx] {
			continue
		}
		s.ownerSet[n.idx] = true
		s.owners = append(s.owners, n.key)
		v := s.recs.publish(n.key, 2, time.Now().Add(24*time.Hour), n.id[:])
		wg.Go(func() {
			time.Sleep(rand.N(10 * time.Second))
			_, err := n.d.Put(ctx, n.key, v)
			mu.Lock()
			res.Puts++
			if err != nil {
				res.PutsFailed++
			}
			mu.Unlock()
		})
	}
	wg.Wait()
}

// lookups runs the Gets, with churn and maintenance alongside.
func (s *Sim) lookups(ctx context.Context, res *Result) {
	bg, stop := context.WithCancel(ctx)
	var bgwg sync.WaitGroup
	bgwg.Go(func() { s.churn(bg, ctx, res) })
	bgwg.Go(func() { s.maintain(bg, res) })

	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		hops []int
		msgs []int
		durs []time.Duration
	)
	for range s.cfg.Lookups {
		wg.Go(func() {
			time.Sleep(rand.N(s.cfg.Window))
			n := s.randomHonest(false)
			key := s.owners[rand.IntN(len(s.owners))]
			rec, st, err := n.d.Get(ctx, key)
			ok := err == nil && rec.Seq == s.recs.seqOf(key)
			mu.Lock()
			defer mu.Unlock()
			res.Lookups++
			if ok {
				res.Succeeded++
			}
			hops = append(hops, st.Hops)
			msgs = append(msgs, st.Messages)
			durs = append(durs, st.Duration)
		})
	}
	wg.Wait()
	stop()
	bgwg.Wait()
	res.HopsMedian, res.HopsP99 = pct(hops, 0.5), pct(hops, 0.99)
	res.MsgsMedian, res.MsgsP99 = pct(msgs, 0.5), pct(msgs, 0.99)
	res.TimeMedian, res.TimeP99 = pct(durs, 0.5), pct(durs, 0.99)
	total := 0
	for _, m := range msgs {
		total += m
	}
	res.MsgsMean = float64(total) / float64(max(1, len(msgs)))
}

// churn makes one honest server leave and one new node join by a real
// Bootstrap, Churn times per virtual minute, until stop is done. Joins
// under way then finish (under ctx).
func (s *Sim) churn(stop, ctx context.Context, res *Result) {
	if s.cfg.Churn <= 0 {
		return
	}
	every := time.Duration(float64(time.Minute) / s.cfg.Churn)
	var wg sync.WaitGroup
	defer wg.Wait()
	var mu sync.Mutex
	for {
		if sleep(stop, every) != nil {
			return
		}
		// Leave: a live honest server, not an owner (owners republish on
		// return in a real network; here their records must stay
		// reachable through the k replicas anyway).
		for {
			n := s.randomHonest(true)
			if !s.ownerSet[n.idx] {
				n.up.Store(false)
				break
			}
		}
		// Join.
		s.nw.mu.Lock()
		i := len(s.nw.nodes)
		s.nw.mu.Unlock()
		n, err := s.newNode(i, Honest, false)
		if err != nil {
			continue
		}
		s.nw.mu.Lock()
		s.nw.nodes = append(s.nw.nodes, n)
		s.nw.mu.Unlock()
		mu.Lock()
		res.Joins++
		res.Leaves++
		mu.Unlock()
		seeds := []dht.Peer{s.randomHonest(true).peer, s.randomHonest(true).peer, s.randomHonest(true).peer}
		wg.Go(func() {
			n.up.Store(true)
			if err := n.d.Bootstrap(ctx, seeds); err != nil && ctx.Err() == nil {
				mu.Lock()
				res.JoinsFailed++
				mu.Unlock()
			}
		})
	}
}

// maintain runs DHT.Maintain on every live honest server every
// MaintainInterval.
func (s *Sim) maintain(ctx context.Context, res *Result) {
	for sleep(ctx, s.cfg.MaintainInterval) == nil {
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, n := range s.nodes() {
			if n.kind != Honest || !n.up.Load() {
				continue
			}
			wg.Go(func() {
				st, _ := n.d.Maintain(ctx)
				mu.Lock()
				res.Evicted += st.Evicted
				mu.Unlock()
			})
		}
		wg.Wait()
	}
}

// gossip publishes one revocation from a random honest server and runs
// rounds on every live node until every live honest node has it.
func (s *Sim) gossip(ctx context.Context, res *Result) {
	var honest []*node
	for _, n := range s.nodes() {
		if n.kind != Honest || !n.up.Load() {
			continue
		}
		honest = append(honest, n)
		g, err := dht.NewGossip(dht.GossipOptions{
			Transport: &transport{nw: s.nw, self: n},
			Table:     n.d.Table(),
			Validate:  s.recs.validateRevocation,
			Deliver:   func([]byte) { n.delivered.Store(time.Now().UnixNano()) },
			Identify:  s.identify,
			Fanout:    s.cfg.Fanout,
			// A round waits for its requests: bound them by the round
			// interval, not the DHT timeout, so a silent peer cannot
			// stretch a node's rounds.
			Timeout: s.cfg.GossipInterval,
		})
		if err != nil {
			continue
		}
		n.g = g
	}
	res.GossipHonest = len(honest)
	before := s.nw.calls[dht.MsgGossip].Load()

	pub := s.randomHonest(true)
	t0 := time.Now()
	pub.delivered.Store(t0.UnixNano())
	rctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, n := range honest {
		wg.Go(func() {
			// Random phase, then one round per interval.
			if sleep(rctx, rand.N(s.cfg.GossipInterval)) != nil {
				return
			}
			for {
				n.g.Round(rctx)
				if sleep(rctx, s.cfg.GossipInterval) != nil {
					return
				}
			}
		})
	}
	var victim [32]byte
	copy(victim[:], s.randomHonest(true).id[:])
	pub.g.Publish(ctx, s.recs.revocation(victim, t0))
	deadline := t0.Add(s.cfg.MaxGossipTime)
	for time.Now().Before(deadline) {
		reached := 0
		for _, n := range honest {
			if n.delivered.Load() != 0 {
				reached++
			}
		}
		res.GossipReached = reached
		if reached == len(honest) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	wg.Wait()
	var last int64
	for _, n := range honest {
		last = max(last, n.delivered.Load())
	}
	res.GossipTime = time.Duration(last - t0.UnixNano())
	res.GossipRounds = int((res.GossipTime + s.cfg.GossipInterval - 1) / s.cfg.GossipInterval)
	res.GossipRequests = s.nw.calls[dht.MsgGossip].Load() - before
}

func (s *Sim) close() {
	var wg sync.WaitGroup
	for _, n := range s.nodes() {
		wg.Go(func() {
			if n.g != nil {
				n.g.Close()
			}
			n.d.Close()
			n.st.Close()
		})
	}
	wg.Wait()
}

func pct[T int | time.Duration](xs []T, p float64) T {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}
