package dht

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Validator decides whether value is a valid record for key at time now and
// extracts its sequence number and expiry. It is injected (package weft
// passes one backed by trust) so that dht does not depend on how records
// are signed. Validate must be safe for concurrent use and must check
// everything that makes a record acceptable — signatures, certificate,
// that the record belongs under key — since stores and clients accept any
// record it passes. Records whose expires is not after now are rejected
// whether or not Validate checks it.
type Validator interface {
	Validate(key Key, value []byte, now time.Time) (seq uint64, expires time.Time, err error)
}

// ValidatorFunc adapts a function to Validator.
type ValidatorFunc func(key Key, value []byte, now time.Time) (uint64, time.Time, error)

// Validate calls f.
func (f ValidatorFunc) Validate(key Key, value []byte, now time.Time) (uint64, time.Time, error) {
	return f(key, value, now)
}

// Record is a validated value with the sequence number and expiry its
// Validator reported.
type Record struct {
	Key     Key
	Value   []byte
	Seq     uint64
	Expires time.Time
}

// Defaults for StoreOptions.
const (
	DefaultMaxRecordSize = 6 << 10
	DefaultMaxTotalSize  = 64 << 20
	DefaultStoreRate     = 1.0 // stores per second per peer
	DefaultStoreBurst    = 20
	DefaultMaxPeers      = 1 << 16
	DefaultSweepInterval = time.Minute

	// recordOverhead is what one record costs against MaxTotalSize beyond
	// its value: key, bookkeeping and map overhead, roughly.
	recordOverhead = 128
)

// StoreOptions configures a Store.
type StoreOptions struct {
	// Validator checks every record before it is stored. Required.
	Validator Validator

	// Now is the clock. Nil means time.Now.
	Now func() time.Time

	// Logger receives rejections and sweeps. Nil discards.
	Logger *slog.Logger

	// MaxRecordSize caps one record's value in bytes. Zero means
	// DefaultMaxRecordSize; it may not exceed MaxValueSize.
	MaxRecordSize int

	// MaxTotalSize caps the bytes held by all records (values plus a fixed
	// per-record overhead). Zero means DefaultMaxTotalSize.
	MaxTotalSize int

	// StoreRate is how many stores per second one peer (by transport key)
	// may make on average, and StoreBurst how many it may make at once.
	// Zero means DefaultStoreRate and DefaultStoreBurst; a negative
	// StoreRate disables the limit.
	StoreRate  float64
	StoreBurst int

	// MaxPeers bounds the number of per-peer rate-limit buckets kept. When
	// full, refilled buckets are dropped first, then arbitrary ones (which
	// only ever makes a peer's limit more lenient). Zero means
	// DefaultMaxPeers.
	MaxPeers int

	// SweepInterval is how often a background goroutine drops expired
	// records and idle rate-limit buckets. Zero means DefaultSweepInterval;
	// negative means no goroutine, and the owner calls Sweep (the
	// simulator does, on virtual time). Expired records are never served
	// either way.
	SweepInterval time.Duration
}

// StoreStats counts what a Store holds and what it has done.
type StoreStats struct {
	Records int // records held
	Bytes   int // bytes charged against MaxTotalSize

	Accepted    uint64 // new records and higher sequence numbers stored
	Unchanged   uint64 // identical records stored again (idempotent)
	Replayed    uint64 // rejected with ErrReplay
	Conflicts   uint64 // rejected with ErrConflict
	Invalid     uint64 // rejected with ErrInvalid
	Expired     uint64 // rejected with ErrExpired
	TooLarge    uint64 // rejected with ErrTooLarge
	Full        uint64 // rejected with ErrFull
	RateLimited uint64 // rejected with ErrRateLimited
	Swept       uint64 // expired records dropped
}

// Store is an in-memory record store: for each key it keeps the valid,
// unexpired record with the highest sequence number. It is safe for
// concurrent use.
type Store struct {
	validator  Validator
	now        func() time.Time
	log        *slog.Logger
	maxRecord  int
	maxTotal   int
	sweepEvery time.Duration

	closeOnce sync.Once
	stop      chan struct{} // closed by Close
	done      chan struct{} // closed when the sweeper exits

	mu      sync.Mutex // guards the fields below
	closed  bool
	records map[Key]*entry
	total   int // bytes charged for records
	limiter limiter
	stats   StoreStats
}

type entry struct {
	value   []byte
	seq     uint64
	expires time.Time
}

func cost(value []byte) int { return len(value) + recordOverhead }

// NewStore returns a Store and, unless opts.SweepInterval is negative,
// starts its sweeper goroutine; Close stops it.
func NewStore(opts StoreOptions) (*Store, error) {
	if opts.Validator == nil {
		return nil, errors.New("dht new store: StoreOptions.Validator must be non-nil")
	}
	s := &Store{
		validator:  opts.Validator,
		now:        opts.Now,
		log:        opts.Logger,
		maxRecord:  opts.MaxRecordSize,
		maxTotal:   opts.MaxTotalSize,
		sweepEvery: opts.SweepInterval,
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
		records:    make(map[Key]*entry),
		limiter:    newLimiter(opts.StoreRate, opts.StoreBurst, opts.MaxPeers),
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("component", "dht-store")
	switch {
	case s.maxRecord == 0:
		s.maxRecord = DefaultMaxRecordSize
	case s.maxRecord < 0 || s.maxRecord > MaxValueSize:
		return nil, fmt.Errorf("dht new store: MaxRecordSize %d out of range 1..%d", s.maxRecord, MaxValueSize)
	}
	switch {
	case s.maxTotal == 0:
		s.maxTotal = DefaultMaxTotalSize
	case s.maxTotal < 0:
		return nil, fmt.Errorf("dht new store: negative MaxTotalSize %d", s.maxTotal)
	}
	if s.limiter.rate == 0 {
		s.limiter.rate = DefaultStoreRate
	}
	switch {
	case s.limiter.burst == 0:
		s.limiter.burst = DefaultStoreBurst
	case s.limiter.burst < 0:
		return nil, fmt.Errorf("dht new store: negative StoreBurst %d", opts.StoreBurst)
	}
	if s.limiter.max <= 0 {
		s.limiter.max = DefaultMaxPeers
	}
	if s.sweepEvery == 0 {
		s.sweepEvery = DefaultSweepInterval
	}
	if s.sweepEvery > 0 {
		go s.sweeper()
	} else {
		close(s.done)
	}
	return s, nil
}

// Close stops the sweeper and makes later Puts fail with ErrClosed; Get
// keeps answering from what is held. Close is idempotent and always
// returns nil.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.stop)
	})
	<-s.done
	return nil
}

func (s *Store) sweeper() {
	defer close(s.done)
	t := time.NewTicker(s.sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.Sweep()
		}
	}
}

// Put stores value under key on behalf of from, whose transport key is
// charged against the rate limit. It returns nil if the record was stored
// or an identical one was already held, and otherwise a *StoreError that
// wraps ErrRateLimited, ErrTooLarge, ErrInvalid, ErrExpired, ErrReplay,
// ErrConflict or ErrFull; or ErrClosed.
//
// A zero from is the local node itself and is exempt from rate limits.
//
// Precedence: the record with the higher sequence number wins; an equal
// sequence number is accepted only with identical bytes; an expired
// record held for the key counts as absent.
func (s *Store) Put(from Peer, key Key, value []byte) error {
	now := s.now()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fmt.Errorf("dht store %s: %w", key.Short(), ErrClosed)
	}
	// The zero Peer is the node itself, storing locally: not rate-limited.
	allowed := from == (Peer{}) || s.limiter.allowLocked(from.Key, now)
	if !allowed {
		s.stats.RateLimited++
	}
	s.mu.Unlock()
	if !allowed {
		s.log.Debug("store rate limited", "peer", from, "key", key.Short())
		return &StoreError{Key: key, Reason: ErrRateLimited, Detail: s.limiter.String()}
	}
	if len(value) > s.maxRecord {
		s.count(&s.stats.TooLarge)
		return &StoreError{Key: key, Reason: ErrTooLarge, Detail: fmt.Sprintf("%d bytes, limit %d", len(value), s.maxRecord)}
	}

	// Validation (signature checks) runs unlocked.
	seq, expires, err := s.validator.Validate(key, value, now)
	if err != nil {
		s.count(&s.stats.Invalid)
		s.log.Info("rejected invalid record", "peer", from, "key", key.Short(), "err", err)
		return &StoreError{Key: key, Reason: ErrInvalid, Err: err, Detail: err.Error()}
	}
	if !expires.After(now) {
		s.count(&s.stats.Expired)
		return &StoreError{Key: key, Reason: ErrExpired, Seq: seq, Detail: "expired at " + expires.UTC().Format(time.RFC3339)}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("dht store %s: %w", key.Short(), ErrClosed)
	}
	old := s.records[key]
	if old != nil && !old.expires.After(now) {
		s.dropLocked(key, old)
		s.stats.Swept++
		old = nil
	}
	if old != nil {
		switch {
		case seq < old.seq:
			s.stats.Replayed++
			s.log.Debug("rejected stale record", "peer", from, "key", key.Short(), "seq", seq, "stored_seq", old.seq)
			return &StoreError{Key: key, Reason: ErrReplay, Seq: seq, StoredSeq: old.seq}
		case seq == old.seq && bytes.Equal(value, old.value):
			s.stats.Unchanged++
			return nil
		case seq == old.seq:
			s.stats.Conflicts++
			s.log.Info("rejected conflicting record", "peer", from, "key", key.Short(), "seq", seq)
			return &StoreError{Key: key, Reason: ErrConflict, Seq: seq, StoredSeq: old.seq}
		}
	}
	oldCost := 0
	if old != nil {
		oldCost = cost(old.value)
	}
	if s.total-oldCost+cost(value) > s.maxTotal {
		s.sweepLocked(now)
		if old != nil && s.records[key] == nil {
			oldCost = 0
		}
		if s.total-oldCost+cost(value) > s.maxTotal {
			s.stats.Full++
			s.log.Warn("record store full; raise MaxTotalSize", "key", key.Short(), "bytes", s.total, "limit", s.maxTotal)
			return &StoreError{Key: key, Reason: ErrFull, Seq: seq, Detail: fmt.Sprintf("%d of %d bytes used", s.total, s.maxTotal)}
		}
	}
	if old != nil {
		s.dropLocked(key, old)
	}
	e := &entry{value: bytes.Clone(value), seq: seq, expires: expires}
	if e.value == nil {
		e.value = []byte{}
	}
	s.records[key] = e
	s.total += cost(e.value)
	s.stats.Accepted++
	s.log.Debug("stored record", "peer", from, "key", key.Short(), "seq", seq, "expires", expires)
	return nil
}

// Get returns the record held for key, if any and unexpired. The returned
// Value is a copy.
func (s *Store) Get(key Key) (Record, bool) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.records[key]
	if e == nil || !e.expires.After(now) {
		return Record{}, false
	}
	return Record{Key: key, Value: bytes.Clone(e.value), Seq: e.seq, Expires: e.expires}, true
}

// Range calls f with every unexpired record (a copy), in no particular
// order, until f returns false. It holds no lock while f runs.
func (s *Store) Range(f func(Record) bool) {
	now := s.now()
	s.mu.Lock()
	recs := make([]Record, 0, len(s.records))
	for k, e := range s.records {
		if e.expires.After(now) {
			recs = append(recs, Record{Key: k, Value: bytes.Clone(e.value), Seq: e.seq, Expires: e.expires})
		}
	}
	s.mu.Unlock()
	for _, r := range recs {
		if !f(r) {
			return
		}
	}
}

// Seq returns the sequence number held for key, if any and unexpired.
func (s *Store) Seq(key Key) (uint64, bool) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.records[key]
	if e == nil || !e.expires.After(now) {
		return 0, false
	}
	return e.seq, true
}

// Delete drops the record held for key (for example after a revocation)
// and reports whether there was one. It does not stop the record from
// being stored again; the Validator must refuse it for that.
func (s *Store) Delete(key Key) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.records[key]
	if e == nil {
		return false
	}
	s.dropLocked(key, e)
	return true
}

// Sweep drops expired records and refilled rate-limit buckets now, and
// returns how many records it dropped.
func (s *Store) Sweep() int {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.sweepLocked(now)
	s.limiter.pruneLocked(now)
	if n > 0 {
		s.log.Debug("swept expired records", "count", n, "remaining", len(s.records))
	}
	return n
}

// Len returns the number of records held, expired or not.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.records)
}

// Stats returns a snapshot of the counters.
func (s *Store) Stats() StoreStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Records = len(s.records)
	st.Bytes = s.total
	return st
}

func (s *Store) count(c *uint64) {
	s.mu.Lock()
	*c++
	s.mu.Unlock()
}

func (s *Store) sweepLocked(now time.Time) int {
	n := 0
	for k, e := range s.records {
		if !e.expires.After(now) {
			s.dropLocked(k, e)
			n++
		}
	}
	s.stats.Swept += uint64(n)
	return n
}

func (s *Store) dropLocked(k Key, e *entry) {
	delete(s.records, k)
	s.total -= cost(e.value)
}

// limiter is a set of per-peer token buckets. Its owner's mutex guards it.
type limiter struct {
	rate    float64 // tokens per second; negative = unlimited
	burst   float64
	max     int
	buckets map[[32]byte]*bucket
}

// newLimiter is a limiter of rate tokens per second (negative: none),
// burst tokens, for at most max senders at a time.
func newLimiter(rate float64, burst, max int) limiter {
	return limiter{rate: rate, burst: float64(burst), max: max, buckets: make(map[[32]byte]*bucket)}
}

type bucket struct {
	tokens float64
	last   time.Time
}

func (l *limiter) String() string {
	return fmt.Sprintf("limit %g stores/s per peer, burst %g", l.rate, l.burst)
}

func (l *limiter) allowLocked(peer [32]byte, now time.Time) bool {
	if l.rate < 0 {
		return true
	}
	b := l.buckets[peer]
	if b == nil {
		if len(l.buckets) >= l.max {
			l.pruneLocked(now)
			for k := range l.buckets {
				if len(l.buckets) < l.max {
					break
				}
				delete(l.buckets, k)
			}
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[peer] = b
	} else {
		l.refill(b, now)
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func (l *limiter) refill(b *bucket, now time.Time) {
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(l.burst, b.tokens+d.Seconds()*l.rate)
		b.last = now
	}
}

// pruneLocked drops buckets that have refilled: a missing bucket starts
// full, so dropping them changes nothing.
func (l *limiter) pruneLocked(now time.Time) {
	for k, b := range l.buckets {
		l.refill(b, now)
		if b.tokens >= l.burst {
			delete(l.buckets, k)
		}
	}
}
