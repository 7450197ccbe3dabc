package dht_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/weft-net/weft/dht"
)

func newStore(t *testing.T, clk *clock, mod func(*dht.StoreOptions)) *dht.Store {
	t.Helper()
	opts := dht.StoreOptions{
		Validator:     testValidator,
		Now:           clk.Now,
		StoreRate:     -1,
		SweepInterval: -1,
	}
	if mod != nil {
		mod(&opts)
	}
	s, err := dht.NewStore(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestStorePrecedence(t *testing.T) {
	k := key("alice")
	exp := epoch.Add(time.Hour)
	type put struct {
		seq     uint64
		payload string
		expires time.Time // zero means exp
		wantErr error
		wantSeq uint64 // held afterwards
	}
	tests := []struct {
		name string
		puts []put
	}{
		{"first record", []put{{seq: 1, payload: "a", wantSeq: 1}}},
		{"higher seq wins", []put{{seq: 1, payload: "a", wantSeq: 1}, {seq: 2, payload: "b", wantSeq: 2}}},
		{"higher seq skips ahead", []put{{seq: 1, wantSeq: 1}, {seq: 1000, wantSeq: 1000}}},
		{"equal seq same bytes idempotent", []put{{seq: 3, payload: "a", wantSeq: 3}, {seq: 3, payload: "a", wantSeq: 3}}},
		{"equal seq different bytes conflict", []put{{seq: 3, payload: "a", wantSeq: 3}, {seq: 3, payload: "b", wantErr: dht.ErrConflict, wantSeq: 3}}},
		{"lower seq replay", []put{{seq: 5, wantSeq: 5}, {seq: 4, wantErr: dht.ErrReplay, wantSeq: 5}}},
		{"seq zero replay", []put{{seq: 1, wantSeq: 1}, {seq: 0, wantErr: dht.ErrReplay, wantSeq: 1}}},
		{"expired rejected", []put{{seq: 1, expires: epoch, wantErr: dht.ErrExpired}}},
		{"expired rejected keeps held", []put{{seq: 1, wantSeq: 1}, {seq: 9, expires: epoch.Add(-time.Second), wantErr: dht.ErrExpired, wantSeq: 1}}},
		{"longer expiry same seq is conflict", []put{{seq: 2, wantSeq: 2}, {seq: 2, expires: exp.Add(time.Hour), wantErr: dht.ErrConflict, wantSeq: 2}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t, newClock(), nil)
			for i, p := range tt.puts {
				e := p.expires
				if e.IsZero() {
					e = exp
				}
				v := record(k, p.seq, e, p.payload)
				err := s.Put(peer(1), k, v)
				if !errors.Is(err, p.wantErr) || (p.wantErr == nil) != (err == nil) {
					t.Fatalf("put %d (seq %d): err = %v, want %v", i, p.seq, err, p.wantErr)
				}
				rec, ok := s.Get(k)
				if p.wantSeq == 0 {
					if ok {
						t.Fatalf("put %d: holding seq %d, want nothing", i, rec.Seq)
					}
					continue
				}
				if !ok || rec.Seq != p.wantSeq {
					t.Fatalf("put %d: holding %v (ok=%v), want seq %d", i, rec.Seq, ok, p.wantSeq)
				}
			}
		})
	}
}

func TestStoreReplayError(t *testing.T) {
	s := newStore(t, newClock(), nil)
	k := key("a")
	if err := s.Put(peer(1), k, record(k, 7, epoch.Add(time.Hour), "")); err != nil {
		t.Fatal(err)
	}
	err := s.Put(peer(2), k, record(k, 3, epoch.Add(time.Hour), ""))
	se, ok := errors.AsType[*dht.StoreError](err)
	if !ok || se.Seq != 3 || se.StoredSeq != 7 || !errors.Is(err, dht.ErrReplay) {
		t.Fatalf("err = %#v", err)
	}
	t.Log(err)
}

func TestStoreInvalid(t *testing.T) {
	s := newStore(t, newClock(), nil)
	k := key("a")
	v := record(k, 1, epoch.Add(time.Hour), "x")
	tests := []struct {
		name string
		key  dht.Key
		val  []byte
	}{
		{"garbage", k, []byte("garbage")},
		{"wrong key", key("b"), v},
		{"tampered", k, append(v[:len(v)-1:len(v)-1], 'y')},
		{"empty", k, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Put(peer(1), tt.key, tt.val)
			if !errors.Is(err, dht.ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
	if err := s.Put(peer(1), k, append(v[:len(v)-1:len(v)-1], 'y')); !errors.Is(err, errBadMAC) {
		t.Errorf("validator cause not wrapped: %v", err)
	}
	if st := s.Stats(); st.Invalid != 5 || st.Records != 0 {
		t.Errorf("stats = %+v", st)
	}
}

func TestStoreExpiry(t *testing.T) {
	clk := newClock()
	s := newStore(t, clk, nil)
	short, long := key("short"), key("long")
	if err := s.Put(peer(1), short, record(short, 1, epoch.Add(time.Minute), "")); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(peer(1), long, record(long, 1, epoch.Add(time.Hour), "")); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Minute)
	if _, ok := s.Get(short); ok {
		t.Error("expired record served")
	}
	if _, ok := s.Seq(short); ok {
		t.Error("expired record's seq reported")
	}
	if s.Len() != 2 {
		t.Errorf("Len = %d before sweep, want 2", s.Len())
	}
	if n := s.Sweep(); n != 1 {
		t.Errorf("Sweep = %d, want 1", n)
	}
	if _, ok := s.Get(long); !ok || s.Len() != 1 {
		t.Error("unexpired record swept")
	}
	// A record with a lower seq than an expired one is accepted: the
	// expired one is gone.
	if err := s.Put(peer(1), long, record(long, 5, epoch.Add(2*time.Hour), "")); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Hour)
	if err := s.Put(peer(1), long, record(long, 2, epoch.Add(3*time.Hour), "")); err != nil {
		t.Fatalf("put after expiry: %v", err)
	}
	if st := s.Stats(); st.Swept != 2 || st.Records != 1 {
		t.Errorf("stats = %+v", st)
	}
}

func TestStoreSweeperGoroutine(t *testing.T) {
	clk := newClock()
	s, err := dht.NewStore(dht.StoreOptions{Validator: testValidator, Now: clk.Now, SweepInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k := key("a")
	if err := s.Put(peer(1), k, record(k, 1, epoch.Add(time.Second), "")); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for s.Len() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("sweeper did not drop expired record")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestStoreRateLimit(t *testing.T) {
	type step struct {
		advance time.Duration
		peer    int
		n       int // puts
		allowed int // how many succeed
	}
	tests := []struct {
		name  string
		rate  float64
		burst int
		steps []step
	}{
		{"burst then limited", 1, 3, []step{{peer: 1, n: 5, allowed: 3}}},
		{"peers independent", 1, 2, []step{{peer: 1, n: 3, allowed: 2}, {peer: 2, n: 3, allowed: 2}}},
		{"refills at rate", 2, 2, []step{
			{peer: 1, n: 2, allowed: 2},
			{peer: 1, n: 1, allowed: 0},
			{advance: 500 * time.Millisecond, peer: 1, n: 2, allowed: 1},
			{advance: time.Hour, peer: 1, n: 3, allowed: 2}, // capped at burst
		}},
		{"unlimited", -1, 0, []step{{peer: 1, n: 100, allowed: 100}}},
		{"defaults", 0, 0, []step{{peer: 1, n: dht.DefaultStoreBurst + 5, allowed: dht.DefaultStoreBurst}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			s := newStore(t, clk, func(o *dht.StoreOptions) { o.StoreRate, o.StoreBurst = tt.rate, tt.burst })
			k := key("a")
			seq := uint64(0)
			for i, st := range tt.steps {
				clk.Advance(st.advance)
				ok := 0
				for range st.n {
					seq++
					err := s.Put(peer(st.peer), k, record(k, seq, clk.Now().Add(time.Hour), ""))
					switch {
					case err == nil:
						ok++
					case !errors.Is(err, dht.ErrRateLimited):
						t.Fatalf("step %d: %v", i, err)
					}
				}
				if ok != st.allowed {
					t.Fatalf("step %d: %d of %d allowed, want %d", i, ok, st.n, st.allowed)
				}
			}
		})
	}
}

func TestStoreRateLimitChargedBeforeValidation(t *testing.T) {
	calls := 0
	var mu sync.Mutex
	v := dht.ValidatorFunc(func(k dht.Key, b []byte, now time.Time) (uint64, time.Time, error) {
		mu.Lock()
		calls++
		mu.Unlock()
		return testValidator(k, b, now)
	})
	s := newStore(t, newClock(), func(o *dht.StoreOptions) { o.Validator, o.StoreRate, o.StoreBurst = v, 1, 2 })
	for range 10 {
		s.Put(peer(1), key("a"), []byte("garbage"))
	}
	if calls != 2 {
		t.Errorf("validator called %d times, want 2 (the burst)", calls)
	}
	if st := s.Stats(); st.RateLimited != 8 || st.Invalid != 2 {
		t.Errorf("stats = %+v", st)
	}
}

func TestStoreRateLimitMaxPeers(t *testing.T) {
	clk := newClock()
	s := newStore(t, clk, func(o *dht.StoreOptions) { o.StoreRate, o.StoreBurst, o.MaxPeers = 1, 1, 4 })
	k := key("a")
	// Many peers each using their one token: the bucket map stays bounded
	// and evicting a bucket only ever lets a peer through.
	for i := range 100 {
		if err := s.Put(peer(i), k, record(k, uint64(i+1), epoch.Add(time.Hour), "")); err != nil {
			t.Fatalf("peer %d: %v", i, err)
		}
	}
	if err := s.Put(peer(99), k, record(k, 1000, epoch.Add(time.Hour), "")); !errors.Is(err, dht.ErrRateLimited) {
		t.Errorf("recent peer not limited: %v", err)
	}
}

func TestStoreSizeCaps(t *testing.T) {
	t.Run("per record", func(t *testing.T) {
		s := newStore(t, newClock(), func(o *dht.StoreOptions) { o.MaxRecordSize = 100 })
		k := key("a")
		if err := s.Put(peer(1), k, record(k, 1, epoch.Add(time.Hour), string(make([]byte, 52)))); err != nil {
			t.Fatalf("100-byte record: %v", err)
		}
		if err := s.Put(peer(1), k, record(k, 2, epoch.Add(time.Hour), string(make([]byte, 53)))); !errors.Is(err, dht.ErrTooLarge) {
			t.Fatalf("101-byte record: %v", err)
		}
	})
	t.Run("total", func(t *testing.T) {
		clk := newClock()
		// Room for two records of 48+128 bytes each.
		s := newStore(t, clk, func(o *dht.StoreOptions) { o.MaxTotalSize = 2 * (48 + 128) })
		a, b, c := key("a"), key("b"), key("c")
		for _, k := range []dht.Key{a, b} {
			if err := s.Put(peer(1), k, record(k, 1, epoch.Add(time.Minute), "")); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Put(peer(1), c, record(c, 1, epoch.Add(time.Hour), "")); !errors.Is(err, dht.ErrFull) {
			t.Fatalf("third record: %v, want ErrFull", err)
		}
		// Replacing a held record with one of the same size fits.
		if err := s.Put(peer(1), a, record(a, 2, epoch.Add(time.Minute), "")); err != nil {
			t.Fatalf("replace: %v", err)
		}
		// Once the others expire, a full store sweeps to make room.
		clk.Advance(time.Minute)
		if err := s.Put(peer(1), c, record(c, 1, epoch.Add(time.Hour), "")); err != nil {
			t.Fatalf("after expiry: %v", err)
		}
		if st := s.Stats(); st.Records != 1 || st.Bytes != 48+128 || st.Full != 1 {
			t.Errorf("stats = %+v", st)
		}
	})
}

func TestStoreDeleteAndClose(t *testing.T) {
	s := newStore(t, newClock(), nil)
	k := key("a")
	if err := s.Put(peer(1), k, record(k, 1, epoch.Add(time.Hour), "")); err != nil {
		t.Fatal(err)
	}
	if !s.Delete(k) || s.Delete(k) {
		t.Error("Delete reported wrongly")
	}
	if st := s.Stats(); st.Bytes != 0 || st.Records != 0 {
		t.Errorf("stats after delete = %+v", st)
	}
	if err := s.Put(peer(1), k, record(k, 1, epoch.Add(time.Hour), "")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if err := s.Put(peer(1), k, record(k, 2, epoch.Add(time.Hour), "")); !errors.Is(err, dht.ErrClosed) {
		t.Errorf("Put after Close: %v", err)
	}
	if _, ok := s.Get(k); !ok {
		t.Error("Get after Close lost the record")
	}
}

func TestNewStoreOptions(t *testing.T) {
	tests := []struct {
		name string
		opts dht.StoreOptions
	}{
		{"no validator", dht.StoreOptions{}},
		{"record too large", dht.StoreOptions{Validator: testValidator, MaxRecordSize: dht.MaxValueSize + 1}},
		{"negative total", dht.StoreOptions{Validator: testValidator, MaxTotalSize: -1}},
		{"negative burst", dht.StoreOptions{Validator: testValidator, StoreBurst: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if s, err := dht.NewStore(tt.opts); err == nil {
				s.Close()
				t.Error("NewStore succeeded")
			}
		})
	}
}

func TestStoreConcurrent(t *testing.T) {
	s := newStore(t, newClock(), nil)
	k := key("a")
	var wg sync.WaitGroup
	for p := range 8 {
		wg.Go(func() {
			for seq := range uint64(50) {
				s.Put(peer(p), k, record(k, seq, epoch.Add(time.Hour), fmt.Sprint(p)))
				s.Get(k)
			}
		})
	}
	wg.Wait()
	if rec, ok := s.Get(k); !ok || rec.Seq != 49 {
		t.Errorf("final seq = %d, %v; want 49", rec.Seq, ok)
	}
	if st := s.Stats(); st.Bytes != len(record(k, 0, epoch, "0"))+128 {
		t.Errorf("byte accounting off: %+v", st)
	}
}
