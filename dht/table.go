package dht

import (
	"crypto/rand"
	"math"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"time"
)

// Defaults for TableOptions.
const (
	DefaultK               = 20
	DefaultReplacements    = 20
	DefaultRefreshInterval = time.Hour
	DefaultMaxFailures     = 2
	DefaultMaxOffences     = 3
)

// NumBuckets is the number of buckets of a Table: one per common-prefix
// length 0..255 with the table's own key (a contact with the node's own key
// is never added).
const NumBuckets = KeySize * 8

// TableOptions configures a Table.
type TableOptions struct {
	// Self is the node's own Kademlia key (NodeKey of its node ID).
	// Contacts are bucketed by their common-prefix length with it.
	Self Key

	// K is the bucket size. Zero means DefaultK.
	K int

	// Replacements caps each bucket's replacement cache. Zero means
	// DefaultReplacements; negative means no cache.
	Replacements int

	// Admit decides whether a contact may enter the table (package weft
	// verifies the node's membership certificate there). It is called
	// without the table's lock held, once per new contact, and again when
	// a known contact shows up with another transport key (Peer.Key): a
	// refused key change leaves the entry as it was, so nobody can take
	// over a known ID by announcing it with their own key. Nil admits
	// every contact.
	Admit func(Contact) bool

	// Added, if set, is called without the table's lock held whenever a
	// contact becomes a live entry that was not one: new and admitted to
	// a bucket with room, promoted from the replacement cache, or
	// readmitted under a new key. DHT uses it to hand the newcomer the
	// records it is now responsible for. It must not block.
	Added func(Contact)

	// Now is the clock. Nil means time.Now.
	Now func() time.Time

	// RefreshInterval is how long a bucket may go without a lookup into
	// its range before Stale reports it. Zero means DefaultRefreshInterval.
	RefreshInterval time.Duration

	// MaxFailures is how many consecutive unanswered requests evict a
	// contact. Zero means DefaultMaxFailures.
	MaxFailures int

	// MaxOffences is how many offences (garbage replies, invalid or stale
	// records) evict a contact and keep it out of the table. Zero means
	// DefaultMaxOffences.
	MaxOffences int
}

// TableEntry is a snapshot of one routing-table contact.
type TableEntry struct {
	Contact  Contact
	Key      Key           // NodeKey(Contact.ID)
	RTT      time.Duration // smoothed round-trip time; 0 if never measured
	LastSeen time.Time
	Failures int // consecutive unanswered requests
	Offences int // garbage replies and bad records
}

type tentry struct {
	TableEntry
}

type kbucket struct {
	live         []*tentry // LRU order: least recently seen first
	replacements []*tentry // most recently seen last
	lastLookup   time.Time // last lookup into this bucket's range
	pingDue      bool      // a newcomer waits while the bucket is full
}

// Table is a Kademlia routing table: NumBuckets buckets of up to K contacts
// indexed by the common-prefix length of the contact's key with Self (the
// fully split form of the Kademlia tree), each in least-recently-seen order
// with a replacement cache. It is safe for concurrent use.
//
// Policy (Kademlia's, with S/Kademlia's preference for old contacts): a
// contact heard from moves to the tail of its bucket; a new contact joins a
// bucket with room, and otherwise waits in the replacement cache. A contact
// that fails MaxFailures requests in a row, or commits MaxOffences
// offences, is evicted and the most recently seen replacement (lowest RTT
// among equally recent ones) takes its place. Offenders are remembered and
// not re-admitted.
//
// Liveness (Kademlia's eviction rule): when a newcomer finds its bucket
// full it waits in the replacement cache and the bucket's least recently
// seen live entry becomes due for a PING; PingCandidates hands those out
// and DHT.Maintain pings them, moving an answering entry to the tail and
// replacing a silent one with the best replacement. Old contacts that stay
// alive are thus never pushed out by newcomers, and dead ones do not
// linger until a lookup happens to hit them.
type Table struct {
	self        Key
	k           int
	maxRepl     int
	admit       func(Contact) bool
	added       func(Contact)
	now         func() time.Time
	refresh     time.Duration
	maxFailures int
	maxOffences int

	mu      sync.Mutex // guards the fields below
	buckets [NumBuckets]kbucket
	index   map[Key]*tentry // live and replacement entries
	banned  map[Key]bool    // evicted for offences
	created time.Time
}

// NewTable returns an empty Table.
func NewTable(opts TableOptions) *Table {
	t := &Table{
		self:        opts.Self,
		k:           opts.K,
		maxRepl:     opts.Replacements,
		admit:       opts.Admit,
		added:       opts.Added,
		now:         opts.Now,
		refresh:     opts.RefreshInterval,
		maxFailures: opts.MaxFailures,
		maxOffences: opts.MaxOffences,
		index:       make(map[Key]*tentry),
		banned:      make(map[Key]bool),
	}
	if t.k <= 0 {
		t.k = DefaultK
	}
	if t.maxRepl == 0 {
		t.maxRepl = DefaultReplacements
	}
	if t.maxRepl < 0 {
		t.maxRepl = 0
	}
	if t.now == nil {
		t.now = time.Now
	}
	if t.refresh <= 0 {
		t.refresh = DefaultRefreshInterval
	}
	if t.maxFailures <= 0 {
		t.maxFailures = DefaultMaxFailures
	}
	if t.maxOffences <= 0 {
		t.maxOffences = DefaultMaxOffences
	}
	t.created = t.now()
	return t
}

// Self returns the table's own key.
func (t *Table) Self() Key { return t.self }

// BucketIndex returns the bucket id falls in: its common-prefix length with
// Self, or -1 for Self itself.
func (t *Table) BucketIndex(id Key) int {
	cpl := t.self.CommonPrefixLen(id)
	if cpl >= NumBuckets {
		return -1
	}
	return cpl
}

// Seen records that c answered a request or sent one (rtt is the measured
// round trip, 0 if unknown). A known contact moves to the tail of its
// bucket, its failure count reset and its address updated (the node may
// have moved); a replacement is promoted if its bucket has room. A known
// contact with a different transport key is passed to Admit again and
// left unchanged if refused. A new contact is passed to Admit and, if
// admitted, joins its bucket or, if full, the bucket's replacement cache.
// Seen reports whether c is now a live table entry.
func (t *Table) Seen(c Contact, rtt time.Duration) bool {
	id := NodeKey(c.ID)
	b := t.BucketIndex(id)
	if b < 0 {
		return false
	}
	t.mu.Lock()
	if t.banned[id] {
		t.mu.Unlock()
		return false
	}
	rekey := false
	if e := t.index[id]; e != nil {
		if e.Contact.Peer.Key == c.Peer.Key || t.admit == nil {
			live, promoted := t.touchLocked(b, e, c, rtt)
			t.mu.Unlock()
			t.notify(promoted, c)
			return live
		}
		rekey = true
	}
	t.mu.Unlock()

	if t.admit != nil && !t.admit(c) {
		return false
	}

	t.mu.Lock()
	if t.banned[id] {
		t.mu.Unlock()
		return false
	}
	if e := t.index[id]; e != nil { // known, or raced with another Seen
		wasLive := slices.Contains(t.buckets[b].live, e)
		live, promoted := t.touchLocked(b, e, c, rtt)
		t.mu.Unlock()
		// A readmitted key change is a new node behind the ID as far as
		// the records it should hold are concerned.
		t.notify(promoted || (rekey && wasLive && live), c)
		return live
	}
	e := &tentry{TableEntry{Contact: c, Key: id, RTT: rtt, LastSeen: t.now()}}
	t.index[id] = e
	kb := &t.buckets[b]
	if len(kb.live) < t.k {
		kb.live = append(kb.live, e)
		t.mu.Unlock()
		t.notify(true, c)
		return true
	}
	t.addReplacementLocked(kb, e)
	kb.pingDue = kb.pingDue || t.maxRepl > 0
	t.mu.Unlock()
	return false
}

// notify calls the Added hook for c if added.
func (t *Table) notify(added bool, c Contact) {
	if added && t.added != nil {
		t.added(c)
	}
}

// touchLocked updates a known entry and moves it to the tail of its list.
// It reports whether the entry is live and whether it just became so
// (promoted from the replacement cache).
func (t *Table) touchLocked(b int, e *tentry, c Contact, rtt time.Duration) (live, promoted bool) {
	e.Contact.Peer = c.Peer // the node may have moved
	e.LastSeen = t.now()
	e.Failures = 0
	if rtt > 0 {
		if e.RTT == 0 {
			e.RTT = rtt
		} else {
			e.RTT = (7*e.RTT + rtt) / 8
		}
	}
	kb := &t.buckets[b]
	if i := slices.Index(kb.live, e); i >= 0 {
		kb.live = append(slices.Delete(kb.live, i, i+1), e)
		return true, false
	}
	i := slices.Index(kb.replacements, e)
	kb.replacements = slices.Delete(kb.replacements, i, i+1)
	if len(kb.live) < t.k {
		kb.live = append(kb.live, e)
		return true, true
	}
	kb.replacements = append(kb.replacements, e)
	kb.pingDue = true
	return false, false
}

func (t *Table) addReplacementLocked(kb *kbucket, e *tentry) {
	if t.maxRepl == 0 {
		delete(t.index, e.Key)
		return
	}
	if len(kb.replacements) >= t.maxRepl {
		delete(t.index, kb.replacements[0].Key)
		kb.replacements = slices.Delete(kb.replacements, 0, 1)
	}
	kb.replacements = append(kb.replacements, e)
}

// Failed records that id did not answer a request (or did not answer in
// time: a timeout counts). After MaxFailures consecutive failures the
// contact is evicted; Failed reports whether it was.
func (t *Table) Failed(id Key) bool {
	t.mu.Lock()
	e := t.index[id]
	if e == nil {
		t.mu.Unlock()
		return false
	}
	e.Failures++
	if e.Failures < t.maxFailures {
		t.mu.Unlock()
		return false
	}
	t.removeAndNotify(id)
	return true
}

// Offence records that id sent garbage or a bad record. After MaxOffences
// the contact is evicted and banned from the table; Offence reports
// whether that happened now.
func (t *Table) Offence(id Key) bool {
	t.mu.Lock()
	e := t.index[id]
	if e == nil {
		t.mu.Unlock()
		return false
	}
	e.Offences++
	if e.Offences < t.maxOffences {
		t.mu.Unlock()
		return false
	}
	t.banned[id] = true
	t.removeAndNotify(id)
	return true
}

// Evict removes id from the table (live or replacement) and promotes a
// replacement into its place. It does not stop id from being re-added;
// package weft calls it for a revoked node, whose Admit then fails.
func (t *Table) Evict(id Key) bool {
	t.mu.Lock()
	return t.removeAndNotify(id)
}

// removeAndNotify is removeLocked with t.mu held on entry; it unlocks
// and tells the Added hook of a promoted replacement.
func (t *Table) removeAndNotify(id Key) bool {
	removed, promoted := t.removeLocked(id)
	t.mu.Unlock()
	if promoted != nil {
		t.notify(true, *promoted)
	}
	return removed
}

// removeLocked removes id and returns the replacement promoted into its
// place, if any.
func (t *Table) removeLocked(id Key) (bool, *Contact) {
	e := t.index[id]
	if e == nil {
		return false, nil
	}
	delete(t.index, id)
	kb := &t.buckets[t.BucketIndex(id)]
	if i := slices.Index(kb.replacements, e); i >= 0 {
		kb.replacements = slices.Delete(kb.replacements, i, i+1)
		return true, nil
	}
	i := slices.Index(kb.live, e)
	kb.live = slices.Delete(kb.live, i, i+1)
	if n := len(kb.replacements); n > 0 {
		// Most recently seen first; among those seen at the same time,
		// the lowest measured RTT.
		best := n - 1
		for j := n - 2; j >= 0; j-- {
			r, b := kb.replacements[j], kb.replacements[best]
			if !r.LastSeen.Equal(b.LastSeen) {
				break
			}
			if r.RTT > 0 && (b.RTT == 0 || r.RTT < b.RTT) {
				best = j
			}
		}
		p := kb.replacements[best]
		kb.replacements = slices.Delete(kb.replacements, best, best+1)
		kb.live = append(kb.live, p)
		c := p.Contact
		return true, &c
	}
	return true, nil
}

// PingCandidates returns, for every full bucket where a newcomer has
// arrived since the last call, the least recently seen live entry: the one
// Kademlia pings before letting the newcomer in. Each call consumes the
// buckets' due marks, so a bucket's head is handed out once per arrival
// burst. DHT.Maintain is the usual caller; an owner with its own PING can
// use this with Seen (answered) and EvictUnseen (silent).
func (t *Table) PingCandidates() []TableEntry {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []TableEntry
	for i := range t.buckets {
		kb := &t.buckets[i]
		if !kb.pingDue {
			continue
		}
		kb.pingDue = false
		if len(kb.live) > 0 && len(kb.replacements) > 0 {
			out = append(out, kb.live[0].TableEntry)
		}
	}
	return out
}

// EvictUnseen evicts id, promoting a replacement, unless it was seen after
// lastSeen (it answered something else meanwhile). It reports whether id
// was evicted. A failed PING of a PingCandidates entry ends here.
func (t *Table) EvictUnseen(id Key, lastSeen time.Time) bool {
	t.mu.Lock()
	e := t.index[id]
	if e == nil || e.LastSeen.After(lastSeen) {
		t.mu.Unlock()
		return false
	}
	return t.removeAndNotify(id)
}

// KeyOf returns the table key of the live or replacement entry reached at
// the transport key pk (the authenticated sender of a request), so that a
// handler knowing only the Peer can score it.
func (t *Table) KeyOf(pk [32]byte) (Key, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, e := range t.index {
		if e.Contact.Peer.Key == pk {
			return id, true
		}
	}
	return Key{}, false
}

// Contains reports whether id is a live entry.
func (t *Table) Contains(id Key) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.index[id]
	if e == nil {
		return false
	}
	return slices.Contains(t.buckets[t.BucketIndex(id)].live, e)
}

// Banned reports whether id was evicted for offences.
func (t *Table) Banned(id Key) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.banned[id]
}

// RTT returns id's smoothed round-trip time, 0 if unknown.
func (t *Table) RTT(id Key) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.index[id]; e != nil {
		return e.RTT
	}
	return 0
}

// Len returns the number of live entries.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for i := range t.buckets {
		n += len(t.buckets[i].live)
	}
	return n
}

// Bucket returns snapshots of bucket i's live entries (LRU order, least
// recently seen first) and replacement cache.
func (t *Table) Bucket(i int) (live, replacements []TableEntry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	kb := &t.buckets[i]
	for _, e := range kb.live {
		live = append(live, e.TableEntry)
	}
	for _, e := range kb.replacements {
		replacements = append(replacements, e.TableEntry)
	}
	return live, replacements
}

// Entries returns snapshots of every live entry, bucket by bucket.
func (t *Table) Entries() []TableEntry {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []TableEntry
	for i := range t.buckets {
		for _, e := range t.buckets[i].live {
			out = append(out, e.TableEntry)
		}
	}
	return out
}

// EntriesByRTT returns snapshots of every live entry, fastest first; those
// whose RTT was never measured come last.
func (t *Table) EntriesByRTT() []TableEntry {
	es := t.Entries()
	slices.SortFunc(es, func(a, b TableEntry) int {
		switch {
		case a.RTT == b.RTT:
			return 0
		case a.RTT == 0:
			return 1
		case b.RTT == 0:
			return -1
		case a.RTT < b.RTT:
			return -1
		}
		return 1
	})
	return es
}

// Closest returns up to n live contacts closest to target by XOR distance,
// closest first. It is ServerOptions.Closest for a DHT's Server.
func (t *Table) Closest(target Key, n int) []Contact {
	es := t.closestEntries(target, n)
	out := make([]Contact, len(es))
	for i, e := range es {
		out[i] = e.Contact
	}
	return out
}

func (t *Table) closestEntries(target Key, n int) []TableEntry {
	t.mu.Lock()
	all := make([]TableEntry, 0, len(t.index))
	for i := range t.buckets {
		for _, e := range t.buckets[i].live {
			all = append(all, e.TableEntry)
		}
	}
	t.mu.Unlock()
	slices.SortFunc(all, func(a, b TableEntry) int { return CompareDistance(target, a.Key, b.Key) })
	if len(all) > n {
		all = all[:n]
	}
	return all
}

// MarkLookup records a lookup for target, which refreshes the bucket
// target falls in.
func (t *Table) MarkLookup(target Key) {
	b := t.BucketIndex(target)
	if b < 0 {
		return
	}
	t.mu.Lock()
	t.buckets[b].lastLookup = t.now()
	t.mu.Unlock()
}

// Stale returns the buckets due for a refresh lookup: those, up to one
// past the deepest non-empty bucket (deeper ones cannot be told apart from
// it by any node we know), with no lookup into their range for
// RefreshInterval. A bucket never looked up counts from the table's
// creation.
func (t *Table) Stale() []int {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	deepest := -1
	for i := range t.buckets {
		if len(t.buckets[i].live) > 0 {
			deepest = i
		}
	}
	var out []int
	for i := 0; i <= deepest+1 && i < NumBuckets; i++ {
		last := t.buckets[i].lastLookup
		if last.IsZero() {
			last = t.created
		}
		if now.Sub(last) >= t.refresh {
			out = append(out, i)
		}
	}
	return out
}

// RandomKeyInBucket returns a random key whose common-prefix length with
// Self is exactly i: a target for refreshing bucket i.
func (t *Table) RandomKeyInBucket(i int) Key {
	var k Key
	rand.Read(k[:])
	// Copy Self's first i bits, flip bit i, keep the rest random.
	for bit := range i {
		byteI, mask := bit/8, byte(0x80>>(bit%8))
		k[byteI] = k[byteI]&^mask | t.self[byteI]&mask
	}
	byteI, mask := i/8, byte(0x80>>(i%8))
	k[byteI] = k[byteI]&^mask | (^t.self[byteI])&mask
	return k
}

// Sample returns up to n distinct live contacts spread over the ID space:
// each pick first chooses a non-empty bucket with probability equal to the
// share of the ID space it covers (bucket i covers 2^-(i+1); the deepest
// non-empty bucket stands for everything deeper) and then a random entry
// in it. A Kademlia table is dense near its own key, so picking entries
// uniformly would favour close nodes; this approximates a uniform sample
// of the network instead, which is what gossip fan-out needs.
func (t *Table) Sample(n int) []Contact {
	t.mu.Lock()
	defer t.mu.Unlock()
	deepest := -1
	total := 0
	for i := range t.buckets {
		if l := len(t.buckets[i].live); l > 0 {
			deepest = i
			total += l
		}
	}
	n = min(n, total)
	if n <= 0 {
		return nil
	}
	weights := make([]float64, deepest+1)
	left := make([]int, deepest+1) // entries not yet picked per bucket
	for i := range weights {
		if left[i] = len(t.buckets[i].live); left[i] > 0 {
			weights[i] = math.Ldexp(1, -(i + 1))
		}
	}
	weights[deepest] = math.Ldexp(1, -deepest)
	picked := make(map[*tentry]bool, n)
	out := make([]Contact, 0, n)
	for len(out) < n {
		sum := 0.0
		for _, w := range weights {
			sum += w
		}
		r := mrand.Float64() * sum
		b := 0
		for b < deepest && (r >= weights[b] || weights[b] == 0) {
			r -= weights[b]
			b++
		}
		if weights[b] == 0 { // rounding at the end of the range
			for weights[b] == 0 {
				b--
			}
		}
		live := t.buckets[b].live
		for {
			e := live[mrand.IntN(len(live))]
			if !picked[e] {
				picked[e] = true
				out = append(out, e.Contact)
				break
			}
		}
		if left[b]--; left[b] == 0 {
			weights[b] = 0
		}
	}
	return out
}
