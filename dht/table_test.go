package dht_test

import (
	"crypto/rand"
	"slices"
	"testing"
	"time"

	"github.com/weft-net/weft/addr"
	"github.com/weft-net/weft/dht"
)

// contactsInBucket returns n contacts (ids derived from seeds starting at
// from) whose keys fall in bucket b of a table for self.
func contactsInBucket(self dht.Key, b, n int) []dht.Contact {
	var out []dht.Contact
	for i := 0; len(out) < n; i++ {
		id := nodeID(100000 + i)
		if self.CommonPrefixLen(dht.NodeKey(id)) == b {
			out = append(out, dht.Contact{ID: id, Peer: peer(len(out) + 1 + 100*b)})
		}
	}
	return out
}

func ids(es []dht.TableEntry) []addr.NodeID {
	var out []addr.NodeID
	for _, e := range es {
		out = append(out, e.Contact.ID)
	}
	return out
}

func TestTableBuckets(t *testing.T) {
	self := dht.NodeKey(nodeID(0))
	tab := dht.NewTable(dht.TableOptions{Self: self, K: 3, Replacements: 2})
	// Contacts land in the bucket of their common-prefix length.
	for b := range 4 {
		for _, c := range contactsInBucket(self, b, 2) {
			if !tab.Seen(c, 0) {
				t.Fatalf("bucket %d: contact not admitted", b)
			}
			if got := tab.BucketIndex(dht.NodeKey(c.ID)); got != b {
				t.Fatalf("BucketIndex = %d, want %d", got, b)
			}
		}
		if live, _ := tab.Bucket(b); len(live) != 2 {
			t.Errorf("bucket %d holds %d, want 2", b, len(live))
		}
	}
	if tab.Len() != 8 {
		t.Errorf("Len = %d, want 8", tab.Len())
	}
	if tab.Seen(dht.Contact{ID: nodeID(0), Peer: peer(1)}, 0) {
		t.Errorf("table admitted its own node")
	}
	if tab.BucketIndex(self) != -1 {
		t.Errorf("BucketIndex(self) != -1")
	}
}

func TestTableLRUAndReplacements(t *testing.T) {
	self := dht.NodeKey(nodeID(0))
	tab := dht.NewTable(dht.TableOptions{Self: self, K: 3, Replacements: 2, MaxFailures: 2})
	cs := contactsInBucket(self, 0, 7)
	for _, c := range cs[:3] {
		tab.Seen(c, 0)
	}
	// Seeing cs[0] again moves it to the tail.
	tab.Seen(cs[0], 10*time.Millisecond)
	live, _ := tab.Bucket(0)
	if want := []addr.NodeID{cs[1].ID, cs[2].ID, cs[0].ID}; !slices.Equal(ids(live), want) {
		t.Fatalf("LRU order %v, want %v", ids(live), want)
	}
	if rtt := tab.RTT(dht.NodeKey(cs[0].ID)); rtt != 10*time.Millisecond {
		t.Errorf("RTT = %v", rtt)
	}
	// A full bucket sends newcomers to the replacement cache, which keeps
	// the most recent Replacements of them.
	for _, c := range cs[3:6] {
		if tab.Seen(c, 0) {
			t.Errorf("contact joined a full bucket")
		}
	}
	_, repl := tab.Bucket(0)
	if want := []addr.NodeID{cs[4].ID, cs[5].ID}; !slices.Equal(ids(repl), want) {
		t.Fatalf("replacements %v, want %v", ids(repl), want)
	}
	// One failure is forgiven; the second evicts and promotes the most
	// recent replacement.
	k1 := dht.NodeKey(cs[1].ID)
	if tab.Failed(k1) {
		t.Fatalf("evicted after one failure")
	}
	if !tab.Failed(k1) {
		t.Fatalf("not evicted after two failures")
	}
	live, repl = tab.Bucket(0)
	if want := []addr.NodeID{cs[2].ID, cs[0].ID, cs[5].ID}; !slices.Equal(ids(live), want) {
		t.Errorf("after eviction live %v, want %v", ids(live), want)
	}
	if want := []addr.NodeID{cs[4].ID}; !slices.Equal(ids(repl), want) {
		t.Errorf("after eviction replacements %v, want %v", ids(repl), want)
	}
	// A success resets the failure count.
	k2 := dht.NodeKey(cs[2].ID)
	tab.Failed(k2)
	tab.Seen(cs[2], 0)
	if tab.Failed(k2) {
		t.Errorf("evicted although it answered in between")
	}
	// Evict removes and promotes; the evicted node may come back.
	if !tab.Evict(dht.NodeKey(cs[0].ID)) || tab.Contains(dht.NodeKey(cs[0].ID)) {
		t.Errorf("Evict did not remove")
	}
	if !tab.Contains(dht.NodeKey(cs[4].ID)) {
		t.Errorf("replacement not promoted after Evict")
	}
	if tab.Evict(dht.NodeKey(cs[6].ID)) {
		t.Errorf("Evict of an unknown contact reported true")
	}
	tab.Evict(k2)
	if !tab.Seen(cs[0], 0) {
		t.Errorf("evicted contact could not come back to a bucket with room")
	}
}

func TestTableOffencesBan(t *testing.T) {
	self := dht.NodeKey(nodeID(0))
	tab := dht.NewTable(dht.TableOptions{Self: self, MaxOffences: 2})
	c := contactsInBucket(self, 1, 1)[0]
	k := dht.NodeKey(c.ID)
	tab.Seen(c, 0)
	if tab.Offence(k) || !tab.Contains(k) {
		t.Fatalf("evicted after one offence")
	}
	if !tab.Offence(k) || tab.Contains(k) || !tab.Banned(k) {
		t.Fatalf("not evicted and banned after two offences")
	}
	if tab.Seen(c, 0) {
		t.Errorf("banned contact re-admitted")
	}
}

func TestTableAdmit(t *testing.T) {
	self := dht.NodeKey(nodeID(0))
	cs := contactsInBucket(self, 0, 2)
	var asked []addr.NodeID
	tab := dht.NewTable(dht.TableOptions{Self: self, Admit: func(c dht.Contact) bool {
		asked = append(asked, c.ID)
		return c.ID == cs[0].ID
	}})
	if !tab.Seen(cs[0], 0) {
		t.Errorf("admitted contact refused")
	}
	if tab.Seen(cs[1], 0) || tab.Contains(dht.NodeKey(cs[1].ID)) {
		t.Errorf("refused contact entered the table")
	}
	tab.Seen(cs[0], 0) // known: Admit not asked again
	if len(asked) != 2 {
		t.Errorf("Admit called %d times, want 2", len(asked))
	}
}

// TestTableKeyChange: a known ID seen with another transport key must pass
// Admit again; refused, the entry keeps its key and address. A new address
// under the same key (the node moved) needs no Admit.
func TestTableKeyChange(t *testing.T) {
	self := dht.NodeKey(nodeID(0))
	c := contactsInBucket(self, 0, 1)[0]
	id := dht.NodeKey(c.ID)
	hijack := c
	hijack.Peer = peer(999)
	moved := c
	moved.Peer.Addr = peer(998).Addr
	rotated := c
	rotated.Peer.Key = peer(997).Key

	for _, tc := range []struct {
		name      string
		contact   dht.Contact
		allow     bool // Admit's answer for the new key
		wantAsked bool
		want      dht.Peer // the entry's Peer afterwards
		wantAdded bool
	}{
		{"hijack refused", hijack, false, true, c.Peer, false},
		{"address change", moved, false, false, moved.Peer, false},
		{"key rotation admitted", rotated, true, true, rotated.Peer, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var asked, added int
			tab := dht.NewTable(dht.TableOptions{
				Self: self,
				Admit: func(x dht.Contact) bool {
					if x.Peer == c.Peer {
						return true
					}
					asked++
					return tc.allow
				},
				Added: func(dht.Contact) { added++ },
			})
			if !tab.Seen(c, 0) || added != 1 {
				t.Fatalf("original contact not admitted (Added called %d times)", added)
			}
			live := tab.Seen(tc.contact, time.Millisecond)
			if live != (tc.want == tc.contact.Peer) {
				t.Errorf("Seen = %v", live)
			}
			if (asked > 0) != tc.wantAsked {
				t.Errorf("Admit asked %d times, want asked: %v", asked, tc.wantAsked)
			}
			es := tab.Entries()
			if len(es) != 1 || dht.NodeKey(es[0].Contact.ID) != id || es[0].Contact.Peer != tc.want {
				t.Fatalf("entries %+v, want %v at %v", es, c.ID, tc.want)
			}
			if (added == 2) != tc.wantAdded {
				t.Errorf("Added called %d times in all", added)
			}
		})
	}
}

func TestTableClosest(t *testing.T) {
	self := dht.NodeKey(nodeID(0))
	tab := dht.NewTable(dht.TableOptions{Self: self})
	var keys []dht.Key
	for i := 1; i <= 300; i++ {
		c := dht.Contact{ID: nodeID(i), Peer: peer(i)}
		if tab.Seen(c, 0) {
			keys = append(keys, dht.NodeKey(c.ID))
		}
	}
	for range 20 {
		var target dht.Key
		rand.Read(target[:])
		got := tab.Closest(target, 20)
		want := slices.Clone(keys)
		slices.SortFunc(want, func(a, b dht.Key) int { return dht.CompareDistance(target, a, b) })
		if len(got) != 20 {
			t.Fatalf("Closest returned %d", len(got))
		}
		for i, c := range got {
			if dht.NodeKey(c.ID) != want[i] {
				t.Fatalf("Closest[%d] wrong", i)
			}
		}
	}
}

func TestTableEntriesByRTT(t *testing.T) {
	self := dht.NodeKey(nodeID(0))
	tab := dht.NewTable(dht.TableOptions{Self: self})
	// Seen with these RTTs, in this order; 0 is never measured.
	rtts := []time.Duration{0, 30 * time.Millisecond, 10 * time.Millisecond, 0, 20 * time.Millisecond}
	for i, rtt := range rtts {
		if !tab.Seen(dht.Contact{ID: nodeID(i + 1), Peer: peer(i + 1)}, rtt) {
			t.Fatalf("contact %d not admitted", i+1)
		}
	}
	var got []time.Duration
	for _, e := range tab.EntriesByRTT() {
		got = append(got, e.RTT)
	}
	want := []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 30 * time.Millisecond, 0, 0}
	if !slices.Equal(got, want) {
		t.Errorf("EntriesByRTT RTTs = %v, want %v (fastest first, unmeasured last)", got, want)
	}
}

func TestTableRefresh(t *testing.T) {
	clk := newClock()
	self := dht.NodeKey(nodeID(0))
	tab := dht.NewTable(dht.TableOptions{Self: self, Now: clk.Now, RefreshInterval: time.Hour})
	for b := range 3 {
		for _, c := range contactsInBucket(self, b, 1) {
			tab.Seen(c, 0)
		}
	}
	if s := tab.Stale(); len(s) != 0 {
		t.Errorf("fresh table has stale buckets %v", s)
	}
	clk.Advance(time.Hour)
	if s, want := tab.Stale(), []int{0, 1, 2, 3}; !slices.Equal(s, want) {
		t.Errorf("Stale = %v, want %v", s, want)
	}
	for _, b := range []int{0, 2} {
		k := tab.RandomKeyInBucket(b)
		if got := self.CommonPrefixLen(k); got != b {
			t.Errorf("RandomKeyInBucket(%d) has prefix %d", b, got)
		}
		tab.MarkLookup(k)
	}
	if s, want := tab.Stale(), []int{1, 3}; !slices.Equal(s, want) {
		t.Errorf("Stale after lookups = %v, want %v", s, want)
	}
	for b := range dht.NumBuckets {
		if got := self.CommonPrefixLen(tab.RandomKeyInBucket(b)); got != b {
			t.Fatalf("RandomKeyInBucket(%d) has prefix %d", b, got)
		}
	}
}

func TestXORMetric(t *testing.T) {
	for range 100 {
		var a, b, c dht.Key
		rand.Read(a[:])
		rand.Read(b[:])
		rand.Read(c[:])
		if a.Distance(b) != b.Distance(a) {
			t.Fatal("distance not symmetric")
		}
		if !a.Distance(a).IsZero() {
			t.Fatal("distance to self not zero")
		}
		// d(a,c) = d(a,b) XOR d(b,c): the XOR metric's identity, and
		// the common prefix with a target decides bucket-level order.
		if a.Distance(c) != a.Distance(b).Distance(b.Distance(c)) {
			t.Fatal("XOR identity broken")
		}
		if ab, ac := a.CommonPrefixLen(b), a.CommonPrefixLen(c); ab > ac && dht.CompareDistance(a, b, c) >= 0 {
			t.Fatal("longer common prefix is not closer")
		}
	}
}
