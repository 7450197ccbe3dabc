package dht

import (
	"context"
	"time"
)

// Defaults and bounds of the replication hand-off.
const (
	// DefaultHandOff is how many records one new contact is handed
	// (Options.HandOff). It equals DefaultStoreBurst, so a receiving
	// store's per-sender rate limit takes them all at once.
	DefaultHandOff = 20

	// handOffEvery is how often one contact is handed records: a contact
	// that flaps in and out of the table is not sent them each time.
	handOffEvery = 10 * time.Minute

	// handOffQueue bounds the contacts waiting for a hand-off, and
	// handOffMemory the contacts remembered for handOffEvery.
	handOffQueue  = 64
	handOffMemory = 4096
)

// handOffState is the hand-off queue, drained by at most one goroutine.
type handOffState struct {
	queue   []Contact         // contacts waiting
	running bool              // a worker drains queue
	last    map[Key]time.Time // when each contact was last queued
}

// handOff queues a contact that just became a live table entry
// (TableOptions.Added) for Kademlia's replication hand-off: the records
// in our Store that it is closer to than we are, and for which we are
// among the k closest nodes we know, are stored on it, at most HandOff of
// them. Otherwise a record put while the network was smaller would stay
// on nodes that lookups, which converge on the k closest, no longer ask,
// until its owner republished it. Queued contacts are served one at a
// time by one goroutine, which Close cancels and waits for.
func (d *DHT) handOff(c Contact) {
	if d.client || d.store == nil || d.handOffMax <= 0 {
		return
	}
	id := NodeKey(c.ID)
	now := d.now()
	d.handMu.Lock()
	if t, ok := d.hand.last[id]; ok && now.Sub(t) < handOffEvery {
		d.handMu.Unlock()
		return
	}
	if len(d.hand.queue) >= handOffQueue {
		d.handMu.Unlock()
		d.log.Debug("record hand-off queue full", "contact", id.Short())
		return
	}
	if len(d.hand.last) >= handOffMemory {
		clear(d.hand.last)
	}
	d.hand.last[id] = now
	d.hand.queue = append(d.hand.queue, c)
	start := !d.hand.running
	d.hand.running = true
	d.handMu.Unlock()
	if !start {
		return
	}
	ctx, end, err := d.begin(d.base)
	if err != nil { // closed
		d.handMu.Lock()
		d.hand.running, d.hand.queue = false, nil
		d.handMu.Unlock()
		return
	}
	go func() {
		defer end()
		for {
			d.handMu.Lock()
			if len(d.hand.queue) == 0 || ctx.Err() != nil {
				d.hand.running, d.hand.queue = false, nil
				d.handMu.Unlock()
				return
			}
			c := d.hand.queue[0]
			d.hand.queue = d.hand.queue[1:]
			d.handMu.Unlock()
			d.handOffTo(ctx, c)
		}
	}()
}

// handOffRecords returns the records (at most max) that a node with key
// them should receive from us: it is closer to their key than we are,
// and fewer than k of the live contacts we know are closer than we are.
// (Then it is among the k closest too.)
func (d *DHT) handOffRecords(them Key, max int) []Record {
	var known []Key
	for _, e := range d.table.Entries() {
		if e.Key != them {
			known = append(known, e.Key)
		}
	}
	var out []Record
	d.store.Range(func(r Record) bool {
		if CompareDistance(r.Key, them, d.self) >= 0 {
			return true
		}
		closer := 0
		for _, x := range known {
			if CompareDistance(r.Key, x, d.self) < 0 {
				if closer++; closer >= d.k {
					return true
				}
			}
		}
		out = append(out, r)
		return len(out) < max
	})
	return out
}

// handOffTo stores on c the records it should hold (handOffRecords). It
// stops at the first request that gets no answer.
func (d *DHT) handOffTo(ctx context.Context, c Contact) {
	recs := d.handOffRecords(NodeKey(c.ID), d.handOffMax)
	stored := 0
	for _, r := range recs {
		body, err := StoreRequest{Key: r.Key, Value: r.Value}.MarshalBinary()
		if err != nil {
			continue
		}
		b, _, err := d.callContact(ctx, NodeKey(c.ID), c.Peer, MsgStore, body)
		if err != nil {
			d.log.Debug("record hand-off failed", "to", c.Peer, "err", err)
			break
		}
		var resp StoreResponse
		if err := resp.UnmarshalBinary(b); err != nil {
			d.offence(NodeKey(c.ID), "malformed STORE reply", err)
			break
		}
		if resp.Status == StatusOK {
			stored++
		}
	}
	if len(recs) > 0 {
		d.log.Debug("handed records to a new contact", "to", NodeKey(c.ID).Short(), "records", len(recs), "stored", stored)
	}
}
