package dht

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/weft-net/weft/addr"
)

// Defaults for Options.
const (
	DefaultAlpha    = 3
	DefaultDisjoint = 3

	// MinAdaptiveTimeout is the least a request to a contact with a
	// measured RTT waits (see Options.Timeout).
	MinAdaptiveTimeout = 300 * time.Millisecond
)

// ErrNoContacts means a lookup had nobody to ask: the routing table is
// empty and no seed answered. Bootstrap from a reachable node first.
var ErrNoContacts = errors.New("no DHT contacts; bootstrap from a reachable node")

// ErrDHTClosed means the DHT has been closed.
var ErrDHTClosed = errors.New("dht closed")

// Options configures a DHT.
type Options struct {
	// Self is this node: its ID (whose NodeKey is its Kademlia key) and
	// where others reach it. Required (non-zero ID).
	Self Contact

	// Transport carries the requests both ways. Required. New registers
	// the Server's handlers on it, wrapped so that every request teaches
	// the routing table its sender (see Identify).
	Transport Transport

	// Store holds the records this node serves. Required unless Client
	// is set (a client may pass one to keep its own records too); the DHT
	// does not own it, so the caller closes it.
	Store *Store

	// Client makes this a DHT client (a node behind NAT): New registers
	// no handlers, so it never answers FIND_NODE, FIND_VALUE, STORE or
	// PING and never enters other nodes' tables by answering, and Put
	// stores only on remote nodes. Bootstrap, FindNode, Get and Put work
	// as for a server. Package weft also keeps clients out of tables in
	// Identify.
	Client bool

	// Validator checks every record a lookup returns and every record
	// before it is published. Required.
	Validator Validator

	// Admit gates the routing table (TableOptions.Admit): package weft
	// verifies the contact's membership certificate there. Nil admits
	// everyone.
	Admit func(Contact) bool

	// Identify maps the authenticated sender of a request to its node ID
	// so that nodes asking us enter our table (the transport authenticates
	// the Peer's key; package weft knows the node behind it from the
	// certificate exchanged with it). Nil means the table learns only from
	// nodes that answer our requests.
	Identify func(Peer) (addr.NodeID, bool)

	// Now is the clock. Nil means time.Now.
	Now func() time.Time

	// Logger receives lookup detail at Debug and offences at Info. Nil
	// discards.
	Logger *slog.Logger

	// K is the bucket size and replication factor. Zero means DefaultK.
	K int

	// Alpha is the number of requests in flight per lookup path. Zero
	// means DefaultAlpha.
	Alpha int

	// Disjoint is the number of disjoint paths a Get takes. Zero means
	// DefaultDisjoint.
	Disjoint int

	// Timeout bounds each request. Zero means DefaultTimeout. A request
	// to a table contact whose round trip has been measured waits
	// 3×RTT instead, at least MinAdaptiveTimeout and at most Timeout, so
	// a contact that died costs a lookup a fraction of a second (and,
	// counted by Table.Failed, is evicted after MaxFailures), not Timeout
	// per request.
	Timeout time.Duration

	// HandOff is how many records a contact new to the table is handed
	// (Kademlia's replication on joins, see DHT): those in the Store it is
	// closer to than this node, when this node is among the k closest.
	// Zero means DefaultHandOff; negative disables the hand-off.
	HandOff int

	// RefreshInterval, MaxFailures, MaxOffences and Replacements are
	// passed to the Table; zero means their defaults.
	RefreshInterval time.Duration
	MaxFailures     int
	MaxOffences     int
	Replacements    int
}

// DHT is a Kademlia node: a routing table (Table), a Server answering
// FIND_NODE, FIND_VALUE and STORE from the table and the Store, and
// iterative lookups over the Transport. The owner drives Refresh,
// Maintain and Republish on its own schedule (package weft on timers,
// internal/sim on virtual time); the only goroutine the DHT starts between
// calls is the replication hand-off to new contacts (Options.HandOff),
// one at a time, which Close cancels and waits for. All methods are safe
// for concurrent use.
//
// Learning contacts: every node that answers one of our requests is
// offered to the table (Table.Seen, with the measured RTT); every node
// that sends us a request is offered too when Options.Identify names it.
// This is done by wrapping the Transport's handlers, so Server is
// unchanged. Contacts merely named in replies are only lookup candidates
// until they answer themselves, so hearsay cannot fill the table.
type DHT struct {
	self       Key
	me         Contact
	tr         Transport
	store      *Store
	validator  Validator
	identify   func(Peer) (addr.NodeID, bool)
	now        func() time.Time
	log        *slog.Logger
	k          int
	alpha      int
	disjoint   int
	timeout    time.Duration
	table      *Table
	server     *Server // nil for a client
	client     bool
	handOffMax int

	handMu sync.Mutex // guards hand
	hand   handOffState

	base      context.Context // cancelled by Close
	cancel    context.CancelFunc
	closeOnce sync.Once
	ops       sync.WaitGroup // running lookups

	mu     sync.Mutex // guards closed
	closed bool
}

// New returns a DHT and registers its server on opts.Transport.
func New(opts Options) (*DHT, error) {
	switch {
	case opts.Self.ID.IsZero():
		return nil, errors.New("dht new: Options.Self.ID must be non-zero")
	case opts.Transport == nil:
		return nil, errors.New("dht new: Options.Transport must be non-nil")
	case opts.Store == nil && !opts.Client:
		return nil, errors.New("dht new: Options.Store must be non-nil for a server (or set Options.Client)")
	case opts.Validator == nil:
		return nil, errors.New("dht new: Options.Validator must be non-nil")
	}
	d := &DHT{
		self:       NodeKey(opts.Self.ID),
		me:         opts.Self,
		tr:         opts.Transport,
		store:      opts.Store,
		validator:  opts.Validator,
		identify:   opts.Identify,
		now:        opts.Now,
		log:        opts.Logger,
		k:          opts.K,
		alpha:      opts.Alpha,
		disjoint:   opts.Disjoint,
		timeout:    opts.Timeout,
		client:     opts.Client,
		handOffMax: opts.HandOff,
		hand:       handOffState{last: make(map[Key]time.Time)},
	}
	if d.handOffMax == 0 {
		d.handOffMax = DefaultHandOff
	}
	if d.now == nil {
		d.now = time.Now
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	d.log = d.log.With("component", "dht", "self", d.self.Short())
	if d.k <= 0 {
		d.k = DefaultK
	}
	if d.k > MaxContacts {
		return nil, fmt.Errorf("dht new: K %d exceeds MaxContacts %d", d.k, MaxContacts)
	}
	if d.alpha <= 0 {
		d.alpha = DefaultAlpha
	}
	if d.disjoint <= 0 {
		d.disjoint = DefaultDisjoint
	}
	if d.timeout <= 0 {
		d.timeout = DefaultTimeout
	}
	d.base, d.cancel = context.WithCancel(context.Background())
	d.table = NewTable(TableOptions{
		Self:            d.self,
		K:               d.k,
		Replacements:    opts.Replacements,
		Admit:           opts.Admit,
		Added:           d.handOff,
		Now:             d.now,
		RefreshInterval: opts.RefreshInterval,
		MaxFailures:     opts.MaxFailures,
		MaxOffences:     opts.MaxOffences,
	})
	if d.client {
		return d, nil
	}
	srv, err := NewServer(ServerOptions{
		Transport: learningTransport{d},
		Store:     d.store,
		Closest:   d.table.Closest,
		Logger:    opts.Logger,
	})
	if err != nil {
		d.cancel()
		return nil, fmt.Errorf("dht new: %w", err)
	}
	d.server = srv
	return d, nil
}

// learningTransport registers the Server's handlers on the DHT's Transport,
// wrapped to offer each request's sender to the table and to refuse
// requests after Close.
type learningTransport struct{ d *DHT }

func (l learningTransport) Call(ctx context.Context, to Peer, t MsgType, body []byte) ([]byte, error) {
	return l.d.tr.Call(ctx, to, t, body)
}

func (l learningTransport) Handle(t MsgType, h Handler) {
	d := l.d
	d.tr.Handle(t, func(ctx context.Context, from Peer, body []byte) ([]byte, error) {
		if d.base.Err() != nil {
			return nil, ErrDHTClosed
		}
		if d.identify != nil {
			if id, ok := d.identify(from); ok && !id.IsZero() {
				d.table.Seen(Contact{ID: id, Peer: from}, 0)
			}
		}
		return h(ctx, from, body)
	})
}

// Table returns the routing table, for inspection (`weft dht`) and for
// the node to Evict revoked nodes.
func (d *DHT) Table() *Table { return d.table }

// Client reports whether d is a DHT client (Options.Client).
func (d *DHT) Client() bool { return d.client }

// Self returns this node's contact.
func (d *DHT) Self() Contact { return d.me }

// Close cancels running lookups and hand-offs, waits for them to return,
// and makes the server refuse further requests. It is idempotent and returns nil. It
// does not close the Store.
func (d *DHT) Close() error {
	d.closeOnce.Do(func() {
		d.mu.Lock()
		d.closed = true
		d.mu.Unlock()
		d.cancel()
	})
	d.ops.Wait()
	return nil
}

// begin starts an operation: a context cancelled by the caller or by
// Close. end must be called when it returns.
func (d *DHT) begin(ctx context.Context) (context.Context, func(), error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, nil, ErrDHTClosed
	}
	d.ops.Add(1)
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(d.base, cancel)
	return ctx, func() { stop(); cancel(); d.ops.Done() }, nil
}

// call sends one request bounded by the per-request timeout and returns
// the reply and its round-trip time.
func (d *DHT) call(ctx context.Context, to Peer, t MsgType, body []byte) ([]byte, time.Duration, error) {
	return d.callWithin(ctx, d.timeout, to, t, body)
}

// callContact is call to the table contact id, bounded by the timeout its
// measured RTT allows (timeoutFor).
func (d *DHT) callContact(ctx context.Context, id Key, to Peer, t MsgType, body []byte) ([]byte, time.Duration, error) {
	return d.callWithin(ctx, d.timeoutFor(id), to, t, body)
}

func (d *DHT) callWithin(ctx context.Context, timeout time.Duration, to Peer, t MsgType, body []byte) ([]byte, time.Duration, error) {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	b, err := d.tr.Call(cctx, to, t, body)
	return b, time.Since(start), err
}

// timeoutFor returns the timeout of a request to contact id: 3×its
// smoothed RTT within [MinAdaptiveTimeout, Timeout], or Timeout when no
// RTT has been measured.
func (d *DHT) timeoutFor(id Key) time.Duration {
	rtt := d.table.RTT(id)
	if rtt <= 0 {
		return d.timeout
	}
	return min(max(3*rtt, MinAdaptiveTimeout), d.timeout)
}

func (d *DHT) validate(key Key, value []byte) (Record, error) {
	now := d.now()
	seq, expires, err := d.validator.Validate(key, value, now)
	if err != nil {
		return Record{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if !expires.After(now) {
		return Record{}, fmt.Errorf("%w at %s (seq %d)", ErrExpired, expires.UTC().Format(time.RFC3339), seq)
	}
	return Record{Key: key, Value: value, Seq: seq, Expires: expires}, nil
}

// offence scores a contact down for a bad reply.
func (d *DHT) offence(id Key, what string, err error) {
	evicted := d.table.Offence(id)
	d.log.Info("dht peer misbehaved", "peer", id.Short(), "what", what, "err", err, "evicted", evicted)
}

// Bootstrap joins the DHT through seeds (transport addresses, e.g. the
// configured bootstrap nodes): it asks each seed for the nodes closest to
// this one, looks up its own key from those (filling the nearby buckets
// and announcing this node to its neighbours), then refreshes every
// bucket up to the deepest non-empty one. Any one answering seed
// suffices; with none, Bootstrap returns an error wrapping ErrNoContacts.
// Seeds already in the table need not be passed again.
func (d *DHT) Bootstrap(ctx context.Context, seeds []Peer) error {
	ctx, end, err := d.begin(ctx)
	if err != nil {
		return err
	}
	defer end()
	body, _ := FindNodeRequest{Target: d.self}.MarshalBinary()
	var (
		mu       sync.Mutex
		contacts []Contact
		wg       sync.WaitGroup
	)
	for _, s := range dedupe(seeds) {
		wg.Go(func() {
			b, rtt, err := d.call(ctx, s, MsgFindNode, body)
			if err != nil {
				d.log.Debug("bootstrap seed failed", "seed", s, "err", err)
				return
			}
			var resp FindNodeResponse
			if err := resp.UnmarshalBinary(b); err != nil {
				d.log.Debug("bootstrap seed sent garbage", "seed", s, "err", err)
				return
			}
			if d.identify != nil {
				if id, ok := d.identify(s); ok {
					d.table.Seen(Contact{ID: id, Peer: s}, rtt)
				}
			}
			mu.Lock()
			contacts = append(contacts, resp.Contacts...)
			mu.Unlock()
		})
	}
	wg.Wait()
	res, _, err := d.findNode(ctx, d.self, contacts)
	if err != nil {
		return fmt.Errorf("dht bootstrap: %w", err)
	}
	if len(res) == 0 {
		return fmt.Errorf("dht bootstrap: %w", ErrNoContacts)
	}
	deepest := d.table.BucketIndex(NodeKey(res[0].ID))
	for i := 0; i < deepest && i < NumBuckets; i++ {
		if _, _, err := d.findNode(ctx, d.table.RandomKeyInBucket(i), nil); err != nil && ctx.Err() != nil {
			return fmt.Errorf("dht bootstrap: %w", ctx.Err())
		}
	}
	d.log.Debug("bootstrapped", "contacts", d.table.Len())
	return nil
}

// Ping sends a PING to peer and returns the round-trip time. A reply
// offers the peer to the table when Options.Identify names it.
func (d *DHT) Ping(ctx context.Context, to Peer) (time.Duration, error) {
	ctx, end, err := d.begin(ctx)
	if err != nil {
		return 0, err
	}
	defer end()
	rtt, err := d.ping(ctx, d.timeout, to)
	if err != nil {
		return 0, fmt.Errorf("dht ping %s: %w", to, err)
	}
	if d.identify != nil {
		if id, ok := d.identify(to); ok && !id.IsZero() {
			d.table.Seen(Contact{ID: id, Peer: to}, rtt)
		}
	}
	return rtt, nil
}

func (d *DHT) ping(ctx context.Context, timeout time.Duration, to Peer) (time.Duration, error) {
	var nb [8]byte
	rand.Read(nb[:])
	nonce := binary.BigEndian.Uint64(nb[:])
	body, _ := PingRequest{Nonce: nonce}.MarshalBinary()
	b, rtt, err := d.callWithin(ctx, timeout, to, MsgPing, body)
	if err != nil {
		return 0, err
	}
	var resp PingResponse
	if err := resp.UnmarshalBinary(b); err != nil {
		return 0, err
	}
	if resp.Nonce != nonce {
		return 0, fmt.Errorf("%w: PING reply echoes nonce %x, sent %x", ErrMalformed, resp.Nonce, nonce)
	}
	return rtt, nil
}

// MaintainStats says what one Maintain call did.
type MaintainStats struct {
	Pinged  int // least-recently-seen entries pinged
	Evicted int // of those, evicted for not answering (a replacement took their place)
}

// Maintain applies Kademlia's eviction rule: it pings every entry
// Table.PingCandidates names (the least recently seen entry of each full
// bucket where a newcomer waits in the replacement cache), concurrently,
// each up to MaxFailures times. An entry that answers moves to the tail of
// its bucket and the newcomer keeps waiting; one that never answers (and
// was not heard from meanwhile) is evicted and the best replacement takes
// its place. The DHT starts no goroutines between calls, so the owner
// calls Maintain on its own schedule: often (every few seconds) is cheap,
// since a call with no candidates sends nothing. All pings have returned
// when Maintain returns.
func (d *DHT) Maintain(ctx context.Context) (MaintainStats, error) {
	ctx, end, err := d.begin(ctx)
	if err != nil {
		return MaintainStats{}, err
	}
	defer end()
	cands := d.table.PingCandidates()
	evicted := make([]bool, len(cands))
	var wg sync.WaitGroup
	for i, e := range cands {
		wg.Go(func() {
			for range d.table.maxFailures {
				rtt, err := d.ping(ctx, d.timeoutFor(e.Key), e.Contact.Peer)
				if err == nil {
					d.table.Seen(e.Contact, rtt)
					return
				}
				if ctx.Err() != nil {
					return
				}
			}
			evicted[i] = d.table.EvictUnseen(e.Key, e.LastSeen)
		})
	}
	wg.Wait()
	st := MaintainStats{Pinged: len(cands)}
	for _, ev := range evicted {
		if ev {
			st.Evicted++
		}
	}
	if st.Evicted > 0 {
		d.log.Debug("evicted unresponsive contacts", "pinged", st.Pinged, "evicted", st.Evicted)
	}
	if err := ctx.Err(); err != nil {
		return st, fmt.Errorf("dht maintain: %w", err)
	}
	return st, nil
}

// Refresh looks up a random key in every bucket Table.Stale reports (no
// lookup into its range for RefreshInterval) and returns how many it
// refreshed. It stops early when ctx is done.
func (d *DHT) Refresh(ctx context.Context) (int, error) {
	ctx, end, err := d.begin(ctx)
	if err != nil {
		return 0, err
	}
	defer end()
	n := 0
	for _, i := range d.table.Stale() {
		if ctx.Err() != nil {
			return n, fmt.Errorf("dht refresh: %w", ctx.Err())
		}
		d.findNode(ctx, d.table.RandomKeyInBucket(i), nil) // marks bucket i refreshed
		n++
	}
	return n, nil
}

// FindNode returns the k nodes closest to target that answered, closest
// first, found by an iterative lookup with Alpha requests in flight that
// ends when the k closest candidates still in play have all answered.
func (d *DHT) FindNode(ctx context.Context, target Key) ([]Contact, LookupStats, error) {
	ctx, end, err := d.begin(ctx)
	if err != nil {
		return nil, LookupStats{}, err
	}
	defer end()
	cs, st, err := d.findNode(ctx, target, nil)
	if err != nil {
		return nil, st, fmt.Errorf("dht find node %s: %w", target.Short(), err)
	}
	return cs, st, nil
}

func (d *DHT) findNode(ctx context.Context, target Key, extra []Contact) ([]Contact, LookupStats, error) {
	start := d.now()
	d.table.MarkLookup(target)
	p := newPath(d, 0, target, false, nil)
	for _, c := range d.table.Closest(target, d.k) {
		p.add(c, 1)
	}
	for _, c := range extra {
		p.add(c, 1)
	}
	st := LookupStats{Paths: 1}
	if len(p.cands) == 0 {
		return nil, st, ErrNoContacts
	}
	p.run(ctx)
	st.Messages = p.messages
	st.Duration = d.now().Sub(start)
	ans := p.answered(d.k)
	out := make([]Contact, len(ans))
	for i, c := range ans {
		out[i] = c.c
	}
	if len(ans) > 0 {
		st.Hops = ans[0].hop
		if p.converged() {
			st.PathsSucceeded = 1
		}
	}
	if len(out) == 0 {
		if err := ctx.Err(); err != nil {
			return nil, st, err
		}
		return nil, st, ErrNoContacts
	}
	return out, st, nil
}

// Get looks key up over Disjoint disjoint paths (S/Kademlia): the closest
// contacts in the table are dealt round-robin to the paths, and no node is
// asked by more than one path, so a Byzantine node can sit on one path
// only. Each path asks FIND_VALUE iteratively until a node returns a
// record the Validator accepts (invalid, expired or undecodable answers
// score the sender down and the path goes on). Of all valid records found,
// and the Store's own, the highest sequence number wins; contacts that
// returned an older one are scored down too, so a node serving stale
// records is evicted after MaxOffences. If no valid record is found, Get
// returns a *QueryError wrapping ErrNotFound.
func (d *DHT) Get(ctx context.Context, key Key) (Record, LookupStats, error) {
	ctx, end, err := d.begin(ctx)
	if err != nil {
		return Record{}, LookupStats{}, err
	}
	defer end()
	start := d.now()
	d.table.MarkLookup(key)
	seeds := d.table.Closest(key, d.k)
	nPaths := min(d.disjoint, len(seeds))
	st := LookupStats{Paths: nPaths}
	var best *found
	if d.store != nil { // a client may have none
		if rec, ok := d.store.Get(key); ok {
			best = &found{rec: rec, from: d.self, hop: 0}
		}
	}
	var all []found
	if nPaths > 0 {
		cl := &claims{owner: make(map[Key]int)}
		paths := make([]*path, nPaths)
		for i := range paths {
			paths[i] = newPath(d, i, key, true, cl)
		}
		for i, c := range seeds {
			paths[i%nPaths].add(c, 1)
			cl.claim(NodeKey(c.ID), i%nPaths)
		}
		var wg sync.WaitGroup
		for _, p := range paths {
			wg.Go(func() { p.run(ctx) })
		}
		wg.Wait()
		for _, p := range paths {
			st.Messages += p.messages
			if len(p.found) > 0 {
				st.PathsSucceeded++
			}
			all = append(all, p.found...)
		}
	}
	for i := range all {
		if best == nil || better(all[i].rec, best.rec) {
			best = &all[i]
		}
	}
	st.Duration = d.now().Sub(start)
	if best == nil {
		q := &QueryError{Op: "get", Key: key, Err: ErrNotFound}
		if nPaths == 0 {
			q.Err = ErrNoContacts
		}
		if err := ctx.Err(); err != nil {
			q.Failures = append(q.Failures, ServerError{Err: err})
		}
		return Record{}, st, q
	}
	for _, f := range all {
		if f.rec.Seq < best.rec.Seq {
			d.offence(f.from, "stale record", fmt.Errorf("seq %d, latest %d", f.rec.Seq, best.rec.Seq))
		}
	}
	st.Hops = best.hop
	return best.rec, st, nil
}

// Put validates value and stores it on the k nodes closest to key (found
// by FindNode), and in the local Store when this node is itself among the
// k closest. It returns how many nodes (counting this one) stored it or
// already held it. With none, it returns a *QueryError wrapping
// ErrNotStored and each node's reason (so errors.Is(err, ErrReplay) works).
func (d *DHT) Put(ctx context.Context, key Key, value []byte) (int, error) {
	rec, err := d.validate(key, value)
	if err != nil {
		return 0, fmt.Errorf("dht put %s: %w", key.Short(), err)
	}
	ctx, end, err := d.begin(ctx)
	if err != nil {
		return 0, err
	}
	defer end()
	return d.put(ctx, rec)
}

func (d *DHT) put(ctx context.Context, rec Record) (int, error) {
	key := rec.Key
	q := &QueryError{Op: "put", Key: key, Err: ErrNotStored}
	closest, _, err := d.findNode(ctx, key, nil)
	if err != nil && !errors.Is(err, ErrNoContacts) {
		q.Failures = append(q.Failures, ServerError{Err: err})
		return 0, q
	}
	stored := 0
	// A client stores only remotely: nobody can fetch from it.
	if !d.client && (len(closest) < d.k || CompareDistance(key, d.self, NodeKey(closest[len(closest)-1].ID)) < 0) {
		if err := d.store.Put(Peer{}, key, rec.Value); err == nil {
			stored++
		} else {
			q.Failures = append(q.Failures, ServerError{Server: d.me.Peer, Err: err})
		}
	}
	body, err := StoreRequest{Key: key, Value: rec.Value}.MarshalBinary()
	if err != nil {
		return 0, fmt.Errorf("dht put %s: %w", key.Short(), err)
	}
	errs := make([]error, len(closest))
	var wg sync.WaitGroup
	for i, c := range closest {
		wg.Go(func() {
			b, _, err := d.callContact(ctx, NodeKey(c.ID), c.Peer, MsgStore, body)
			if err != nil {
				errs[i] = err
				return
			}
			var resp StoreResponse
			if err := resp.UnmarshalBinary(b); err != nil {
				d.offence(NodeKey(c.ID), "malformed STORE reply", err)
				errs[i] = err
				return
			}
			if resp.Status != StatusOK {
				errs[i] = &StoreError{Key: key, Reason: resp.Status.Err(), Seq: rec.Seq, StoredSeq: resp.StoredSeq, Detail: resp.Detail}
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err == nil {
			stored++
			continue
		}
		q.Failures = append(q.Failures, ServerError{Server: closest[i].Peer, Err: err})
	}
	if stored == 0 {
		return 0, q
	}
	d.log.Debug("put", "key", key.Short(), "seq", rec.Seq, "stored", stored, "asked", len(closest))
	return stored, nil
}

// Republish stores every record the Store holds on the current k closest
// nodes to its key (Kademlia's replication; the owner's periodic
// republish of its own records is a Put). It returns how many records
// reached at least one node, and the first error otherwise met. Receiving
// stores rate-limit per peer, so a node holding many records should
// spread republishing out (StoreOptions.StoreRate).
func (d *DHT) Republish(ctx context.Context) (int, error) {
	ctx, end, err := d.begin(ctx)
	if err != nil {
		return 0, err
	}
	defer end()
	if d.store == nil {
		return 0, nil
	}
	var recs []Record
	d.store.Range(func(r Record) bool { recs = append(recs, r); return true })
	n := 0
	var first error
	for _, r := range recs {
		if ctx.Err() != nil {
			return n, fmt.Errorf("dht republish: %w", ctx.Err())
		}
		if _, err := d.put(ctx, r); err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		n++
	}
	return n, first
}
