package dht

import (
	"context"
	"slices"
	"sync"
	"time"
)

// LookupStats describes one lookup.
type LookupStats struct {
	// Hops is the depth, in referrals from the first contacts asked
	// (hop 1), of the node that gave the answer: the closest node that
	// answered for FindNode, the node whose record won for Get. A record
	// held locally is hop 0.
	Hops int

	// Messages is the number of requests sent.
	Messages int

	// Duration is the wall (or injected-clock) time the lookup took.
	Duration time.Duration

	// Paths is the number of disjoint paths run; PathsSucceeded how many
	// of them ended with a valid record (Get) or with the k closest nodes
	// having answered (FindNode).
	Paths          int
	PathsSucceeded int
}

// candidate states.
const (
	stNew     = iota // not asked yet
	stWaiting        // request in flight
	stDone           // answered
	stFailed         // did not answer, answered garbage, or lied
	stSkipped        // claimed by another disjoint path
)

type candidate struct {
	c     Contact
	id    Key
	hop   int
	state int
	rtt   time.Duration
}

// found is a valid record a node returned during a lookup.
type found struct {
	rec  Record
	from Key
	hop  int
}

// claims keeps the disjoint paths of one lookup disjoint: each node is
// queried by at most one path.
type claims struct {
	mu    sync.Mutex // guards owner
	owner map[Key]int
}

func (c *claims) claim(id Key, path int) bool {
	if c == nil {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.owner[id]; ok {
		return p == path
	}
	c.owner[id] = path
	return true
}

// path is one iterative Kademlia lookup: alpha requests in flight, always
// to the closest candidates not yet asked, until the k closest candidates
// that did not fail have all answered (or, for FIND_VALUE, pathQuorum
// nodes returned a valid record). It runs on the calling goroutine; each request runs on its
// own goroutine and all have returned when run returns.
type path struct {
	d         *DHT
	idx       int
	target    Key
	findValue bool
	claims    *claims

	cands    []*candidate // sorted by distance to target
	byID     map[Key]*candidate
	messages int
	found    []found // valid records (FIND_VALUE)
}

// pathQuorum is how many nodes must return a valid record before a
// FIND_VALUE path stops (or the path converges first): with one, a single
// node serving a stale but validly signed record as the first holder met
// on every path would win.
const pathQuorum = 2

type reply struct {
	cand *candidate
	body []byte
	rtt  time.Duration
	err  error
}

func newPath(d *DHT, idx int, target Key, findValue bool, cl *claims) *path {
	return &path{d: d, idx: idx, target: target, findValue: findValue, claims: cl, byID: make(map[Key]*candidate)}
}

// add makes c a candidate at the given hop unless it is known, is the node
// itself, or is banned.
func (p *path) add(c Contact, hop int) {
	id := NodeKey(c.ID)
	if id == p.d.self || p.byID[id] != nil || p.d.table.Banned(id) {
		return
	}
	cand := &candidate{c: c, id: id, hop: hop, rtt: p.d.table.RTT(id)}
	p.byID[id] = cand
	i, _ := slices.BinarySearchFunc(p.cands, cand, func(a, b *candidate) int { return CompareDistance(p.target, a.id, b.id) })
	p.cands = slices.Insert(p.cands, i, cand)
	// Bound the shortlist: candidates beyond a few k are never asked.
	if limit := 4 * p.d.k; len(p.cands) > limit {
		for _, c := range p.cands[limit:] {
			if c.state == stNew {
				delete(p.byID, c.id)
			}
		}
		clear(p.cands[limit:])
		p.cands = p.cands[:limit]
	}
}

// window returns the k closest candidates still in play.
func (p *path) window() []*candidate {
	var w []*candidate
	for _, c := range p.cands {
		if c.state == stFailed || c.state == stSkipped {
			continue
		}
		w = append(w, c)
		if len(w) == p.d.k {
			break
		}
	}
	return w
}

// converged reports whether every one of the k closest candidates in play
// has answered.
func (p *path) converged() bool {
	for _, c := range p.window() {
		if c.state != stDone {
			return false
		}
	}
	return true
}

// next picks the next candidate to ask from the window: RTT-aware among
// equally close ones, i.e. the longest common prefix with the target
// first, then the lowest known RTT (unknown last), then XOR distance.
func (p *path) next() *candidate {
	var best *candidate
	bestCPL := -1
	for _, c := range p.window() {
		if c.state != stNew {
			continue
		}
		cpl := p.target.CommonPrefixLen(c.id)
		switch {
		case best == nil, cpl > bestCPL:
			best, bestCPL = c, cpl
		case cpl == bestCPL && fasterThan(c.rtt, best.rtt):
			best = c
		}
	}
	return best
}

func fasterThan(a, b time.Duration) bool {
	return a > 0 && (b == 0 || a < b)
}

func (p *path) run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan reply, p.d.alpha)
	inflight := 0
	body := p.request()
	for {
		for inflight < p.d.alpha {
			c := p.next()
			if c == nil {
				break
			}
			if !p.claims.claim(c.id, p.idx) {
				c.state = stSkipped
				continue
			}
			c.state = stWaiting
			inflight++
			p.messages++
			go func() {
				b, rtt, err := p.d.callContact(ctx, c.id, c.c.Peer, p.msgType(), body)
				results <- reply{cand: c, body: b, rtt: rtt, err: err}
			}()
		}
		if inflight == 0 || ctx.Err() != nil {
			break
		}
		r := <-results
		inflight--
		if p.handle(ctx, r) || p.converged() {
			break
		}
	}
	cancel()
	for ; inflight > 0; inflight-- {
		p.handle(ctx, <-results)
	}
}

func (p *path) msgType() MsgType {
	if p.findValue {
		return MsgFindValue
	}
	return MsgFindNode
}

func (p *path) request() []byte {
	var b []byte
	if p.findValue {
		b, _ = FindValueRequest{Key: p.target}.MarshalBinary()
	} else {
		b, _ = FindNodeRequest{Target: p.target}.MarshalBinary()
	}
	return b
}

// handle processes one reply and reports whether the path is finished (a
// valid record was found).
func (p *path) handle(ctx context.Context, r reply) bool {
	c := r.cand
	if r.err != nil {
		c.state = stFailed
		if ctx.Err() == nil {
			p.d.table.Failed(c.id)
		} else {
			c.state = stNew // cancelled, not failed
		}
		return false
	}
	var contacts []Contact
	if p.findValue {
		var resp FindValueResponse
		if err := resp.UnmarshalBinary(r.body); err != nil {
			p.d.offence(c.id, "malformed FIND_VALUE reply", err)
			c.state = stFailed
			return false
		}
		if resp.Found {
			rec, err := p.d.validate(p.target, resp.Value)
			if err != nil {
				p.d.offence(c.id, "invalid record", err)
				c.state = stFailed
				return false
			}
			p.d.table.Seen(c.c, r.rtt)
			c.state = stDone
			p.found = append(p.found, found{rec: rec, from: c.id, hop: c.hop})
			return len(p.found) >= pathQuorum
		}
		contacts = resp.Contacts
	} else {
		var resp FindNodeResponse
		if err := resp.UnmarshalBinary(r.body); err != nil {
			p.d.offence(c.id, "malformed FIND_NODE reply", err)
			c.state = stFailed
			return false
		}
		contacts = resp.Contacts
	}
	p.d.table.Seen(c.c, r.rtt)
	c.state = stDone
	c.rtt = r.rtt
	for _, nc := range contacts {
		p.add(nc, c.hop+1)
	}
	return false
}

// answered returns the candidates that answered, closest first, at most n.
func (p *path) answered(n int) []*candidate {
	var out []*candidate
	for _, c := range p.cands {
		if c.state == stDone {
			out = append(out, c)
			if len(out) == n {
				break
			}
		}
	}
	return out
}
