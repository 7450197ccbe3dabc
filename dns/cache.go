package dns

import (
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

// cacheKey identifies a cached reply: the lowercase FQDN, type and class of
// the question, and the DO bit (forwarded replies differ with it).
type cacheKey struct {
	name   string
	qtype  uint16
	qclass uint16
	do     bool
}

// cacheEntry is one cached reply. msg holds only what a reply needs from
// the cache: Rcode, Authoritative, AuthenticatedData and the Answer, Ns and
// Extra sections (never an OPT), with TTLs as of stored. It is never
// modified after insertion; readers copy it.
type cacheEntry struct {
	key       cacheKey
	msg       *mdns.Msg
	stored    time.Time
	expires   time.Time
	forwarded bool     // from an upstream: only for sources allowed to forward
	tags      []string // node names, IDs and addresses this entry is about, for Invalidate

	prev, next *cacheEntry // LRU list, most recently used at the front
}

// cache is a bounded LRU of replies with per-entry expiry.
type cache struct {
	max int

	mu sync.Mutex // guards the fields below
	// gen counts Flush and Invalidate calls; a reply resolved before one of
	// them is not inserted after it (see put).
	gen     uint64
	entries map[cacheKey]*cacheEntry
	head    *cacheEntry // most recently used
	tail    *cacheEntry // least recently used
}

func newCache(max int) *cache {
	return &cache{max: max, entries: make(map[cacheKey]*cacheEntry)}
}

// generation returns the current generation, to be handed back to put.
func (c *cache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// get returns the live entry for k, or nil. An expired entry is removed.
func (c *cache) get(k cacheKey, now time.Time) *cacheEntry {
	if c.max <= 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[k]
	if e == nil {
		return nil
	}
	if !now.Before(e.expires) {
		c.removeLocked(e)
		return nil
	}
	c.moveToFrontLocked(e)
	return e
}

// put inserts e unless the cache is disabled or a Flush or Invalidate
// happened since generation gen was read, evicting the least recently used
// entries to stay within max.
func (c *cache) put(e *cacheEntry, gen uint64) {
	if c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if old := c.entries[e.key]; old != nil {
		c.removeLocked(old)
	}
	for len(c.entries) >= c.max && c.tail != nil {
		c.removeLocked(c.tail)
	}
	c.entries[e.key] = e
	c.pushFrontLocked(e)
}

// flush removes every entry.
func (c *cache) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	clear(c.entries)
	c.head, c.tail = nil, nil
}

// invalidate removes every entry tagged with tag and returns how many.
func (c *cache) invalidate(tag string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	n := 0
	for e := c.head; e != nil; {
		next := e.next
		for _, t := range e.tags {
			if t == tag {
				c.removeLocked(e)
				n++
				break
			}
		}
		e = next
	}
	return n
}

func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

func (c *cache) removeLocked(e *cacheEntry) {
	delete(c.entries, e.key)
	c.removeLinksLocked(e)
}

func (c *cache) pushFrontLocked(e *cacheEntry) {
	e.prev, e.next = nil, c.head
	if c.head != nil {
		c.head.prev = e
	}
	c.head = e
	if c.tail == nil {
		c.tail = e
	}
}

func (c *cache) moveToFrontLocked(e *cacheEntry) {
	if c.head == e {
		return
	}
	c.removeLinksLocked(e)
	c.pushFrontLocked(e)
}

func (c *cache) removeLinksLocked(e *cacheEntry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		c.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		c.tail = e.prev
	}
	e.prev, e.next = nil, nil
}
